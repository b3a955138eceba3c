r"""QFX: fixed-point fake quantization with a learned binary point, on every tensor an FPGA computes with.

A ``B``-bit fixed-point number with ``F`` fractional bits is an integer times :math:`2^{-F}`. QFX learns the
binary point: per tensor, the fractional bits are a continuous trainable :math:`f`, rounded in the forward
pass. Forward and pseudo-gradient, side by side (:class:`FixedPointQuantizer`)::

    F = round(f)                                   dF/df := 1                        (STE)
    s = 2^-F                                       ds/dF = -ln 2 * s
    q(x) = s * clip(round(x / s), q_min, q_max)    dq/dx := 1[q_min <= round(x/s) <= q_max]   (STE)
                                                   dq/ds := round(x/s) - x/s inside, q_min or q_max outside
                                                            (LSQ's step gradient, Esser et al. 2020)
    so  dL/df = g * sum_i dL/dq_i * dq_i/ds * (-ln 2 * s),   g = 1 / sqrt(N (2^(B-1) - 1))

with :math:`(q_{min}, q_{max}) = (-(2^{B-1}-1), 2^{B-1}-1)` for a signed tensor and :math:`(0, 2^B - 1)`
for an unsigned one (``_uniform.fake_quantize``), :math:`N` the tensor's elements (the batch's too, for an
activation) and :math:`g` LSQ's gradient scale (:func:`scale_gradient`), which keeps the one binary point
of a tensor from moving as fast as the sum of :math:`N` element gradients would push it.
:math:`f = f_0 + \delta`: :math:`f_0` is the calibrated start (below), :math:`\delta` the trained part,
from 0, so a recipe's weight decay pulls the binary point back toward its calibrated position rather than
toward :math:`f = 0`.

**Which tensors** (option ``bits`` = B, default 8; QFX is also run at 4): the kernel and the input of every
conv / dense layer, first and last included (the matmul operands, so the complexity track counts BOPs,
OPs and packed size at ``(B, B)``), and the output of every element-wise layer, the ones prior
quantization leaves float: BatchNorm, residual Add (Subtract, Multiply, Average), Rescaling and average
pooling (:data:`suites.quantization._tensor_quantizers.ELEMENTWISE_LAYERS`): the graph is rewritten so
that those layers carry an output quantizer. ReLU, max pooling, reshapes and concatenations are not
requantized: their outputs are already on their input's grid.

**Start.** Each binary point starts where the tensor's values on the calibration inputs (the first 128
training inputs, through the trained float model) are best represented: :math:`f_0` is the integer
:math:`F \in [F_c, F_c + 3]` of least squared quantization error, :math:`F_c = \lfloor \log_2(q_{max} /
\max|x|) \rfloor` being the finest point that clips nothing. A tensor is unsigned (``ap_ufixed``: the sign
bit buys a doubled range) when it takes no negative value there (post-ReLU inputs, pooled features),
signed otherwise; kernels are always signed. Then the model fine-tunes with the task's fine-tune recipe,
weights and binary points together.

**Deployment**: the Keras fake-quantized model (``simulated``: no LiteRT kernel runs B-bit fixed point);
its facts give the learned fractional bits of every tensor (``fraction_bits``).

Deviations (small-faithful): the paper's **multiplier-free** mode is not implemented: the abstract does not
define it and its code is not public (the paper's own text and code were not available to check; a
third-party summary says it limits the number of ones in a weight's fixed-point word so a multiplication
becomes a few shifts and adds, which is too little to implement faithfully). The signed grid is symmetric
(no :math:`-2^{B-1}`), as TFLite's int8 weights. BatchNorm's own parameters and the layer biases stay
float (the BatchNorm *output* is quantized); the gradient of :math:`f` above is this implementation's
derivation (STE on the rounding of :math:`f`, LSQ on the step), as the abstract gives none; the FPGA /
HLS export and its DSP counts are out of scope.

Paper: Dai, Zhang, Zhang, Hu, Cai, Sun & Zhang, "Trainable Fixed-Point Quantization for Deep Learning
Acceleration on FPGAs", 2024 (https://arxiv.org/abs/2401.17544).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.training import TrainContext, fit
from suites.quantization._tensor_quantizers import ELEMENTWISE_LAYERS, layer_tensors, quantize_outputs
from suites.quantization._uniform import (
    bit_width_facts,
    fake_quantize,
    integer_range,
    quantizable_layer_names,
    quantize_layers,
    round_ste,
)
from suites.quantization.base import QuantizationMethod, calibration_samples

# Candidate binary points above the finest that clips nothing, searched for the least squared error.
EXTRA_FRACTION_BITS = 3
# The tensors a larq layer quantizes (role) and the attribute holding each one's quantizer.
ROLES = (
    ("kernel", "kernel_quantizer"), ("depthwise_kernel", "depthwise_quantizer"),
    ("input", "input_quantizer"), ("output", "output_quantizer"),
)  # fmt: skip


def scale_gradient(x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``x`` forward; the incoming gradient times ``factor`` backward (LSQ's gradient scale)."""

    @tf.custom_gradient
    def scaled(x: tf.Tensor) -> tf.Tensor:
        return tf.identity(x), lambda upstream: upstream * factor

    return scaled(x)


def fixed_point(x: tf.Tensor, fraction_bits: tf.Tensor, bits: int, signed: bool) -> tf.Tensor:
    """``2^-F clip(round(x 2^F), q_min, q_max)`` with ``F = round(fraction_bits)``, STE on both roundings."""
    step = tf.pow(2.0, -round_ste(fraction_bits))
    return fake_quantize(x, step, bits, signed)


def best_fraction_bits(values: np.ndarray, bits: int, signed: bool) -> int:
    """The integer F in [F_c, F_c + 3] of least squared error on ``values`` (module docstring); ties: the lower."""
    peak = float(np.max(np.abs(values))) if np.size(values) else 0.0
    if peak == 0.0:
        return bits - 1
    cover = math.floor(math.log2(integer_range(bits, signed)[1] / peak))
    x = tf.constant(np.asarray(values, np.float32))
    errors = [
        float(tf.reduce_sum(tf.square(fixed_point(x, tf.constant(float(f)), bits, signed) - x)))
        for f in range(cover, cover + EXTRA_FRACTION_BITS + 1)
    ]
    return cover + int(np.argmin(errors))


@keras.utils.register_keras_serializable(package="effbench.quantization")
class FixedPointQuantizer(larq.quantizers._BaseQuantizer):
    r"""QFX's B-bit fixed point with a learned binary point (module docstring), one per tensor.

    Weights: ``calibrated_fraction_bits`` :math:`f_0` and ``signed`` (1 or 0), non-trainable, set by
    :meth:`initialise`; ``fraction_delta`` :math:`\delta`, trainable. ``precision`` is B, for the counts.
    """

    precision = None

    def __init__(self, bits: int = 8, **kwargs: Any):
        super().__init__(**kwargs)
        integer_range(bits, True)
        self.bits = self.precision = int(bits)

    def build(self, input_shape: Any) -> None:
        start = keras.initializers.Constant(float(self.bits - 1))
        self.calibrated_fraction_bits = self.add_weight("calibrated_fraction_bits", shape=(), initializer=start,
                                                        trainable=False)  # fmt: skip
        self.fraction_delta = self.add_weight("fraction_delta", shape=(), initializer="zeros", trainable=True)
        self.signed = self.add_weight("signed", shape=(), initializer="ones", trainable=False)
        super().build(input_shape)

    @property
    def fraction_bits(self) -> tf.Tensor:
        """:math:`f = f_0 + \\delta` (continuous; the forward pass uses its rounding)."""
        return self.calibrated_fraction_bits + self.fraction_delta

    def initialise(self, values: np.ndarray, signed: bool | None = None) -> None:
        """Start from ``values`` (what the tensor takes on calibration data): sign, best binary point, delta 0.

        ``signed`` None: signed iff a value is negative.
        """
        signed = bool(np.min(values) < 0) if signed is None else signed
        self.signed.assign(float(signed))
        self.calibrated_fraction_bits.assign(float(best_fraction_bits(values, self.bits, signed)))
        self.fraction_delta.assign(0.0)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        elements = tf.cast(tf.size(inputs), inputs.dtype)
        fraction = scale_gradient(self.fraction_bits, tf.math.rsqrt(elements * integer_range(self.bits, True)[1]))
        quantized = tf.cond(
            self.signed > 0.5,
            lambda: fixed_point(inputs, fraction, self.bits, True),
            lambda: fixed_point(inputs, fraction, self.bits, False),
        )
        return super().call(quantized)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bits": self.bits}


def fixed_point_model(float_model: keras.Model, bits: int) -> keras.Model:
    """``float_model`` with B-bit fixed point on every conv / dense kernel and input and every element-wise output.

    The binary points start at ``B - 1`` fractional bits, signed: :func:`initialise_binary_points` sets them.
    """
    model = quantize_layers(
        float_model,
        dict.fromkeys(quantizable_layer_names(float_model), (bits, bits)),
        weight_quantizer=lambda b: FixedPointQuantizer(b, name="kernel_fixed_point"),
        activation_quantizer=lambda b: FixedPointQuantizer(b, name="input_fixed_point"),
    )
    elementwise = [layer.name for layer in model.layers if type(layer) in ELEMENTWISE_LAYERS]
    return quantize_outputs(model, {name: FixedPointQuantizer(bits, name="output_fixed_point") for name in elementwise})


def fixed_point_tensors(model: keras.Model) -> list[tuple[keras.layers.Layer, str, FixedPointQuantizer]]:
    """``(layer, role, quantizer)`` for every fixed-point tensor of ``model``; role: a kernel's attribute name
    (``kernel``, ``depthwise_kernel``), ``input`` or ``output``."""
    return [
        (layer, role, getattr(layer, attribute))
        for layer in model.layers
        for role, attribute in ROLES
        if isinstance(getattr(layer, attribute, None), FixedPointQuantizer)
    ]


def initialise_binary_points(model: keras.Model, float_model: keras.Model, samples: np.ndarray) -> None:
    """Start every quantizer of ``model`` from its tensor: the kernel, or ``float_model``'s on ``samples``."""
    quantized = fixed_point_tensors(model)
    tensors = layer_tensors(
        float_model,
        samples,
        inputs_of=[layer.name for layer, role, _ in quantized if role == "input"],
        outputs_of=[layer.name for layer, role, _ in quantized if role == "output"],
    )
    for layer, role, quantizer in quantized:
        if role in ("input", "output"):
            quantizer.initialise(tensors[(layer.name, role)])
        else:
            quantizer.initialise(getattr(layer, role).numpy(), signed=True)


def fraction_bits_facts(model: keras.Model) -> dict[str, int]:
    """``layer/role`` -> the fractional bits the forward pass of that tensor's quantizer uses (``round(f)``)."""
    return {
        f"{layer.name}/{role}": int(np.round(quantizer.fraction_bits.numpy()))
        for layer, role, quantizer in fixed_point_tensors(model)
    }


@register_method(
    "qfx",
    suite="quantization",
    kind="training",
    paper=Paper(
        "Trainable Fixed-Point Quantization for Deep Learning Acceleration on FPGAs",
        2024,
        "https://arxiv.org/abs/2401.17544",
    ),
    summary="B-bit fixed point (default 8) with a learned binary point per tensor (round-STE on the fractional "
    "bits), on weights, activations and BatchNorm / residual-add / element-wise outputs; fine-tuned",
    taxonomy=Taxonomy(weight_bits=8, activation_bits=8, applied="training", data="labelled"),
    scale="small-faithful",
)
class QFX(QuantizationMethod):
    """Options: ``bits`` (B, total bits of every fixed-point tensor; default 8), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {**QuantizationMethod.default_options, "bits": 8}

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        bits = int(self.options["bits"])
        model = fixed_point_model(float_model, bits)
        samples, calibration = calibration_samples(context)
        initialise_binary_points(model, float_model, samples)
        history, seconds = fit(model, context)
        facts = {
            "simulated": True,
            "bit_widths": bit_width_facts(model),
            "fraction_bits": fraction_bits_facts(model),
            "calibration": {**calibration, "use": "initial binary points"},
        }
        return Artifact(model=model, history=history, train_seconds=seconds, facts=facts)
