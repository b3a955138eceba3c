r"""BitNet b1.58 (Reloaded): ternary absmedian / absmean weights, 8-bit absmax activations, identity STE.

Forward and pseudo-gradient, side by side (BitLinear, as in the b1.58 paper and the ``bitlinear`` library
of the Reloaded authors; the scales are constants to the gradient)::

    weights:      gamma = median|W| (Reloaded, default) or mean|W| (b1.58), over the whole kernel,
                  floored at 1e-5
                  W_q = gamma * clip(round(W / gamma), -1, 1)   in {-gamma, 0, +gamma}
                  dW_q/dW := 1                                    (W + stop_gradient(W_q - W))
    activations:  s_n = 127 / max|x_n|, per sample n (max floored at 1e-5)
                  x_q = clip(round(x * s_n), -128, 127) / s_n     on the 8-bit grid of sample n
                  dx_q/dx := 1                                    (x + stop_gradient(x_q - x))

BitLinear computes ``(x_q * s)(W_q / gamma)^T / (s * (1/gamma))``: integer activations times ternary
weights, rescaled once per output. Keeping the dequantised forms as the quantizers' outputs is the same
product. The median is the lower middle value for an even count, as ``torch.median`` returns it.

Decisions for the conv / MLP backbones of the operator protocol:

- **One activation scale per sample.** For a Dense layer on a (batch, features) input a sample is BitNet's
  token. For a convolution, one scale per spatial position (token) would break the integer convolution,
  because the window mixes positions, so the conv input gets one absmax per sample (over H, W, C).
- **The LayerNorm of BitLinear** (non-affine, before the activation quantizer) is the ``input_norm``
  option. The default, ``"none"``, leaves it out: in these backbones every binarized layer's input is
  already BN -> hard tanh, normalised and inside [-1, 1], which is the job the LayerNorm does on a
  transformer's residual stream. ``"layer"`` puts the LayerNorm back: each sample is standardised over all
  its features, (x - mean) / sqrt(var + 1e-5), before the absmax.
- **No latent weight clip** (``kernel_constraint`` is None): the identity STE has no dead zone beyond
  +-1, and BitNet trains unconstrained latent weights.

Bits: a ternary weight holds log2(3) = 1.58 bits of information but takes 2 bits when packed, so the
kernel quantizer reports ``precision = 2`` to the complexity track (BOPs = MACs x 2 x 8; packed size at
2 bits a weight). The activation quantizer reports 8.

Options: ``weight_measure`` ("absmedian" | "absmean"), ``input_norm`` ("none" | "layer").

Papers: Nielsen & Schneider-Kamp, "BitNet b1.58 Reloaded: State-of-the-art Performance Also on Smaller
Networks", 2024 (https://arxiv.org/abs/2407.09527); Ma et al., "The Era of 1-bit LLMs: All Large Language
Models are in 1.58 Bits", 2024 (https://arxiv.org/abs/2402.17764).
"""

from __future__ import annotations

from typing import Any, ClassVar

from effbench.tf import tf

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization._quantizers import straight_through
from suites.binarization.operators import OperatorMethod

WEIGHT_MEASURES = ("absmedian", "absmean")
INPUT_NORMS = ("none", "layer")
EPSILON = 1e-5


def lower_median(values: tf.Tensor) -> tf.Tensor:
    """The lower middle value of all elements (``torch.median``'s convention for an even count)."""
    flat = tf.sort(tf.reshape(values, [-1]))
    return flat[(tf.size(flat) - 1) // 2]


@larq.utils.register_keras_custom_object
class TernaryWeight(larq.quantizers._BaseQuantizer):
    r"""BitNet b1.58 kernel quantizer: gamma * clip(round(W / gamma), -1, 1), identity STE (module docstring)."""

    precision = 2  # a ternary value packed in 2 bits (1.58 bits of information)

    def __init__(self, measure: str = "absmedian", **kwargs: Any):
        if measure not in WEIGHT_MEASURES:
            raise ValueError(f"measure is '{measure}', expected one of {', '.join(WEIGHT_MEASURES)}")
        super().__init__(**kwargs)
        self.measure = measure

    def scale(self, kernel: tf.Tensor) -> tf.Tensor:
        magnitude = tf.abs(kernel)
        gamma = lower_median(magnitude) if self.measure == "absmedian" else tf.reduce_mean(magnitude)
        return tf.stop_gradient(tf.maximum(gamma, EPSILON))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        gamma = self.scale(inputs)
        quantized = gamma * tf.clip_by_value(tf.round(inputs / gamma), -1.0, 1.0)
        return super().call(straight_through(inputs, quantized))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "measure": self.measure}


@larq.utils.register_keras_custom_object
class AbsMaxActivation(larq.quantizers._BaseQuantizer):
    r"""BitNet's 8-bit absmax activation quantizer, one scale per sample, identity STE (module docstring)."""

    precision = 8
    levels: ClassVar[float] = 127.0

    def __init__(self, input_norm: str = "none", **kwargs: Any):
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm is '{input_norm}', expected one of {', '.join(INPUT_NORMS)}")
        super().__init__(**kwargs)
        self.input_norm = input_norm

    def normalized(self, inputs: tf.Tensor) -> tf.Tensor:
        if self.input_norm == "none":
            return inputs
        axes = list(range(1, len(inputs.shape)))
        mean, variance = tf.nn.moments(inputs, axes=axes, keepdims=True)
        return (inputs - mean) * tf.math.rsqrt(variance + EPSILON)

    def scale(self, inputs: tf.Tensor) -> tf.Tensor:
        axes = list(range(1, len(inputs.shape)))
        peak = tf.reduce_max(tf.abs(inputs), axis=axes, keepdims=True)
        return tf.stop_gradient(self.levels / tf.maximum(peak, EPSILON))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = self.normalized(inputs)
        s = self.scale(x)
        quantized = tf.clip_by_value(tf.round(x * s), -self.levels - 1.0, self.levels) / s
        return super().call(straight_through(x, quantized))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "input_norm": self.input_norm}


@register_method(
    "bitnet158",
    suite="binarization",
    kind="operator",
    paper=Paper(
        "BitNet b1.58 Reloaded: State-of-the-art Performance Also on Smaller Networks",
        2024,
        "https://arxiv.org/abs/2407.09527",
    ),
    summary="ternary weights gamma*clip(round(W/gamma),-1,1) with gamma = median|W| (or mean|W|), "
    "8-bit per-sample absmax activations, identity STE",
    taxonomy=Taxonomy(weight_bits=2, activation_bits=8, applied="training", data="labelled"),
)
class BitNet158(OperatorMethod):
    default_options: ClassVar[dict[str, Any]] = {
        **OperatorMethod.default_options,
        "weight_measure": "absmedian",
        "input_norm": "none",
    }

    def input_quantizer(self) -> AbsMaxActivation:
        return AbsMaxActivation(input_norm=self.options["input_norm"])

    def kernel_quantizer(self) -> TernaryWeight:
        return TernaryWeight(measure=self.options["weight_measure"])

    def kernel_constraint(self) -> None:
        return None
