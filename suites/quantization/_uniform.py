"""Uniform fake quantization, the one mechanism the quantization suite's methods share.

A ``b``-bit uniform quantizer with step ``s`` maps a tensor to the integer grid and back:

.. math::

    q(x) = s \\cdot \\operatorname{clip}(\\lfloor x / s \\rceil, q_{min}, q_{max}),\\qquad
    (q_{min}, q_{max}) = (-2^{b-1} + 1, 2^{b-1} - 1) \\text{ signed (symmetric, as TFLite's int8 weights)},\\
    (0, 2^b - 1) \\text{ unsigned}

Pseudo-gradient (the straight-through estimator of Bengio et al. 2013, as in TFMOT's fake-quant ops; the clip
sees the rounded value, so the gradient passes where :math:`|x / s| < q_{max} + 1/2`):

.. math::

    \\partial q / \\partial x = 1_{q_{min} \\le \\lfloor x / s \\rceil \\le q_{max}},\\qquad
    \\partial q / \\partial s = \\lfloor x/s \\rceil - x/s \\text{ inside the range, } q_{min} \\text{ or } q_{max}
    \\text{ outside (LSQ's step gradient, Esser et al. 2020), when } s \\text{ is a variable}

Weights take a per-output-channel step from their max-abs (``s_c = \\max |W_{\\cdot c}| / q_{max}``, TFLite's
and the whitepaper's per-channel scheme); activations a per-tensor range calibrated on data
(:class:`ActivationQuantizer`). :func:`quantize_layers` rewrites a trained float model so that chosen conv /
dense layers compute with ``(w, a)``-bit fake-quantized weights and inputs, as larq quantized layers whose
quantizers declare their ``precision``: the complexity track then counts each layer's BOPs, OPs and packed size
at those bits, and ``bit_width_facts`` gives the per-layer map a record carries. The layers keep their names,
so the trained weights transfer (:func:`effbench.graph.rewrite`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import larq

from effbench.bits import layer_bit_widths
from effbench.graph import rewrite
from effbench.tf import keras, tf
from suites.binarization.operators import LARQ_COUNTERPARTS

FLOAT_BITS = 32
# Layer name -> (weight bits, activation bits); 32 leaves that side float.
BitWidths = Mapping[str, tuple[int, int]]


def integer_range(bits: int, signed: bool) -> tuple[int, int]:
    """(q_min, q_max) of the grid: symmetric for signed tensors (no -2^{b-1}), [0, 2^b - 1] for unsigned."""
    if bits < 2 and signed:
        raise ValueError(f"a signed uniform grid needs at least 2 bits, not {bits} (1 bit is a sign: binarization)")
    return (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


@tf.custom_gradient
def round_ste(x: tf.Tensor) -> tf.Tensor:
    """Round to nearest; the gradient passes straight through."""
    return tf.round(x), lambda dy: dy


def fake_quantize(x: tf.Tensor, step: tf.Tensor, bits: int, signed: bool = True) -> tf.Tensor:
    """``s * clip(round(x / s), q_min, q_max)`` with the STE (module docstring); ``step`` broadcasts over ``x``."""
    q_min, q_max = integer_range(bits, signed)
    return step * tf.clip_by_value(round_ste(x / step), q_min, q_max)


def max_abs_step(kernel: tf.Tensor, bits: int, per_channel: bool = True) -> tf.Tensor:
    """The symmetric step of a kernel: max |W| over everything but the output channel (last axis) / q_max."""
    axes = list(range(len(kernel.shape) - 1)) if per_channel else None
    peak = tf.reduce_max(tf.abs(kernel), axis=axes)
    return tf.maximum(peak, 1e-8) / integer_range(bits, True)[1]


@keras.utils.register_keras_serializable(package="effbench.quantization")
class WeightQuantizer(larq.quantizers._BaseQuantizer):
    """Per-channel symmetric max-abs fake quantization of a kernel at ``bits`` (``precision`` for the counts).

    A depthwise kernel ``(kh, kw, c, 1)`` keeps its channel on the third axis: its step is taken per ``c``.
    """

    precision = None

    def __init__(self, bits: int, per_channel: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        integer_range(bits, True)
        self.bits, self.per_channel, self.precision = int(bits), bool(per_channel), int(bits)

    def call(self, kernel: tf.Tensor) -> tf.Tensor:
        depthwise = len(kernel.shape) == 4 and kernel.shape[-1] == 1 and kernel.shape[-2] > 1
        moved = tf.transpose(kernel, (0, 1, 3, 2)) if depthwise else kernel
        quantized = fake_quantize(moved, max_abs_step(moved, self.bits, self.per_channel), self.bits)
        return tf.transpose(quantized, (0, 1, 3, 2)) if depthwise else quantized

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bits": self.bits, "per_channel": self.per_channel}


@keras.utils.register_keras_serializable(package="effbench.quantization")
class ActivationQuantizer(larq.quantizers._BaseQuantizer):
    """Per-tensor asymmetric fake quantization of a layer's input on a calibrated range ``[low, high]``.

    ``step = (high - low) / (2^b - 1)``; the grid is shifted by ``low`` (the zero point). ``low`` and ``high``
    are non-trainable weights, set by calibration (:func:`calibrate_activation_ranges`); until then the
    quantizer passes its input through, so a model can be built, calibrated, then used.
    """

    precision = None

    def __init__(self, bits: int, **kwargs: Any):
        super().__init__(**kwargs)
        integer_range(bits, False)
        self.bits, self.precision = int(bits), int(bits)

    def build(self, input_shape: Any) -> None:
        self.low = self.add_weight("low", shape=(), initializer="zeros", trainable=False)
        self.high = self.add_weight("high", shape=(), initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        span = self.high - self.low
        step = tf.maximum(span, 1e-8) / (2**self.bits - 1)
        quantized = fake_quantize(x - self.low, step, self.bits, signed=False) + self.low
        return tf.where(span > 0, quantized, x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bits": self.bits}


def quantizable_layer_names(model: keras.Model) -> list[str]:
    """Names of the conv / depthwise / dense layers, in the model's order (the first is the input layer's)."""
    return [layer.name for layer in model.layers if type(layer) in LARQ_COUNTERPARTS]


def quantize_layers(
    model: keras.Model,
    bit_widths: BitWidths,
    weight_quantizer: Callable[[int], Any] = WeightQuantizer,
    activation_quantizer: Callable[[int], Any] = ActivationQuantizer,
) -> keras.Model:
    """A copy of ``model`` whose layers named in ``bit_widths`` compute at their ``(w, a)`` bits.

    Each such conv / depthwise / dense layer becomes its larq counterpart with ``weight_quantizer(w)`` on its
    kernel and ``activation_quantizer(a)`` on its input (either left out at 32 bits); every other layer is kept.
    Weights carry over by name. Activation ranges start unset: calibrate them before use.
    """
    unknown = sorted(set(bit_widths) - set(quantizable_layer_names(model)))
    if unknown:
        raise ValueError(f"layers {', '.join(unknown)} of model '{model.name}' are not conv / dense layers")

    def rule(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name not in bit_widths:
            return None
        w_bits, a_bits = bit_widths[layer.name]
        larq_class, quantizer_argument, _ = LARQ_COUNTERPARTS[type(layer)]
        config = layer.get_config()
        config["input_quantizer"] = activation_quantizer(a_bits) if a_bits < FLOAT_BITS else None
        config[quantizer_argument] = weight_quantizer(w_bits) if w_bits < FLOAT_BITS else None
        return larq_class(**config)

    return rewrite(model, rule)


def activation_quantizers(model: keras.Model) -> dict[str, ActivationQuantizer]:
    """Layer name -> the :class:`ActivationQuantizer` on its input, for every layer that has one."""
    return {
        layer.name: layer.input_quantizer
        for layer in model.layers
        if isinstance(getattr(layer, "input_quantizer", None), ActivationQuantizer)
    }


def calibrate_activation_ranges(model: keras.Model, samples: Any, batch_size: int = 128) -> None:
    """Set every :class:`ActivationQuantizer`'s ``[low, high]`` to the min and max its input takes on ``samples``.

    Min/max calibration, as TFLite's converter does for int8 activations. The inputs are read from a float
    view of the model (quantizers pass through while unset), layer by layer in one pass.
    """
    quantizers = activation_quantizers(model)
    if not quantizers:
        return
    for quantizer in quantizers.values():
        quantizer.low.assign(0.0)
        quantizer.high.assign(0.0)
    names = list(quantizers)
    probe = keras.Model(model.inputs, [model.get_layer(name).input for name in names])
    outputs = probe.predict(samples, batch_size=batch_size, verbose=0)
    outputs = outputs if len(names) > 1 else [outputs]
    for name, values in zip(names, outputs, strict=True):
        quantizers[name].low.assign(min(float(values.min()), 0.0))
        quantizers[name].high.assign(max(float(values.max()), 0.0))


def bit_width_facts(model: keras.Model) -> dict[str, list[int]]:
    """Layer name -> ``[w, a]`` bits for every conv / dense layer: the map a mixed-precision record carries."""
    return {
        layer.name: list(layer_bit_widths(layer))
        for layer in model.layers
        if type(layer) in LARQ_COUNTERPARTS or type(layer) in {c for c, _, _ in LARQ_COUNTERPARTS.values()}
    }
