r"""Binary and Ternary NLG (Liu et al., ACL 2023): statistics-based weights, elastic activations.

Forward and pseudo-gradient, side by side (per-layer statistics, constants to the gradient, as the
official code's ``layerwise`` quantizers; sign(0) = +1)::

    ternary weights (TWN):  Delta = 0.7 * mean|W|
                            alpha = mean of |W| over {|W| > Delta}
                            W_q = alpha * sign(W) * 1[|W| > Delta]      in {-alpha, 0, +alpha}
                            dW_q/dW := 1                                 (identity STE)
    binary weights (BWN):   alpha = mean|W|,  mu = mean(W)
                            W_q = alpha * sign(W - mu)                   in {-alpha, +alpha}
                            dW_q/dW := 1                                 (identity STE)
    activations (elastic):  learned step alpha_a (scalar) and shift beta (per channel)
                            x_q = alpha_a * q((x - beta) / alpha_a)      q: sign at 1 bit, the ternary
                                                                         grid {-1, 0, 1} at 2 bits,
                                                                         clip(round(.), Q_n, Q_p) above
                            dx_q/dx := 1[Q_n <= (x - beta)/alpha_a <= Q_p]
                            dx_q/dalpha_a := LSQ (round(u) - u inside, Q_n / Q_p outside; sign(x) at
                                             1 bit), times 1/sqrt(N Q_p)
                            dx_q/dbeta := -dx_q/dx

The activation quantizer is the shared
:class:`~suites.binarization._quantizers.ElasticQuantizer`; its step starts, as in the official code, at
2 mean|x| / sqrt(Q_p) from the first training batch (:func:`initialize_elastic_steps`), its shift at 0.

Options: ``weights`` ("ternary" | "binary"); ``activation_bits`` (``null`` = as the weights: 2 for
ternary, 1 for binary; or 4, 8 for the paper's 8-bit-activation setting). Bits reported to the complexity
track: 2 for a ternary tensor (a ternary value packs in 2 bits; 1.58 bits of information), 1 for binary.

Deviations (small-faithful): the paper quantizes BART / mBART transformers for summarisation and
translation, with distillation from the float model; here the operator runs on the BiBench backbones and
recipes, without distillation. The official weight quantizers also clip the latent weights to a fixed
range before the statistics (TernaryBERT's ``clip_val``); here the operator protocol's weight clip keeps
latent weights in [-1, 1] instead.

Paper: Liu, Oguz, Pappu, Shi & Krishnamoorthi, "Binary and Ternary Natural Language Generation", ACL 2023
(https://arxiv.org/abs/2306.01841); code: https://github.com/facebookresearch/Ternary_Binary_Transformer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from effbench.tf import keras, tf

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from effbench.training import TrainContext
from suites.binarization._quantizers import (
    ELASTIC_QUANT_URL,
    ElasticQuantizer,
    initialize_elastic_steps,
    straight_through,
)
from suites.binarization.operators import OperatorMethod

WEIGHT_MODES = ("ternary", "binary")
TWN_THRESHOLD = 0.7


@larq.utils.register_keras_custom_object
class StatisticWeight(larq.quantizers._BaseQuantizer):
    r"""TWN (ternary) or mean-centred BWN (binary) weights from per-layer statistics, identity STE."""

    def __init__(self, mode: str = "ternary", **kwargs: Any):
        if mode not in WEIGHT_MODES:
            raise ValueError(f"mode is '{mode}', expected one of {', '.join(WEIGHT_MODES)}")
        super().__init__(**kwargs)
        self.mode = mode
        self.precision = 2 if mode == "ternary" else 1

    def quantized(self, kernel: tf.Tensor) -> tf.Tensor:
        magnitude = tf.abs(kernel)
        if self.mode == "binary":
            return tf.reduce_mean(magnitude) * larq.math.sign(kernel - tf.reduce_mean(kernel))
        kept = tf.cast(magnitude > TWN_THRESHOLD * tf.reduce_mean(magnitude), kernel.dtype)
        alpha = tf.reduce_sum(kept * magnitude) / tf.maximum(tf.reduce_sum(kept), 1.0)
        return alpha * tf.sign(kernel) * kept

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return super().call(straight_through(inputs, tf.stop_gradient(self.quantized(inputs))))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@register_method(
    "ternary-nlg",
    suite="binarization",
    kind="operator",
    paper=Paper("Binary and Ternary Natural Language Generation", 2023, ELASTIC_QUANT_URL),
    summary="TWN ternary (0.7 mean|W| threshold) or mean-centred binary weights, identity STE; elastic "
    "activations with learned step and shift (LSQ gradients)",
    taxonomy=Taxonomy(weight_bits=2, activation_bits=2, applied="training", data="labelled"),
    scale="small-faithful",
)
class TernaryNLG(OperatorMethod):
    default_options: ClassVar[dict[str, Any]] = {
        **OperatorMethod.default_options,
        "weights": "ternary",
        "activation_bits": None,
    }

    def activation_bits(self) -> int:
        bits = self.options["activation_bits"]
        return int(bits) if bits is not None else (2 if self.options["weights"] == "ternary" else 1)

    def input_quantizer(self) -> ElasticQuantizer:
        return ElasticQuantizer(bits=self.activation_bits(), shift=True)

    def kernel_quantizer(self) -> StatisticWeight:
        return StatisticWeight(mode=self.options["weights"])

    def initial_model(self, context: TrainContext) -> keras.Model:
        return with_elastic_steps(super().initial_model(context), context)


def with_elastic_steps(model: keras.Model, context: TrainContext) -> keras.Model:
    """``model`` with its elastic steps set from the first training batch (the official initialisation)."""
    initialize_elastic_steps(model, context.splits.x_train[: context.recipe.batch_size])
    return model
