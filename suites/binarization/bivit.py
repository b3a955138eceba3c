r"""BiViT: softmax-aware binarization of the attention weights, plus learned channel-wise weight scales.

Forward and pseudo-gradient, side by side (sign(0) = +1; scales detached unless said otherwise)::

    projections:  y = gamma_c * (alpha_c sign(W)) . sign(x) + b     alpha_c = mean|W| of output unit c,
                                                                     gamma_c learned (init 1)
                  dsign(x)/dx := 1[|x| <= 1],   d(alpha_c sign(W))/dW := 1[|W| <= 1]
    attention:    Q_b, K_b, V_b = sign(Q), sign(K), sign(V)          d/dx := 1[|x| <= 1]
                  P   = softmax(Q_b K_b^T / sqrt(d))
                  P_b = 1[P >= tau * max_j P]   (tau = 0.25)         dP_b/dS := dP/dS  (softmax STE)
                  O   = P_b V_b

The attention weights are non-negative and long-tailed, so a sign around zero would keep every one of
them; softmax-aware binarization (SAB) keeps, per query, the keys whose probability reaches a fixed
fraction of that row's largest one, a threshold that adapts to each row's distribution. The binary
weights are {0, 1}: :math:`P_b V_b` is a 1-bit by 1-bit product (a masked popcount), so the core
declares ``effbench_bits = (1, 1)``; its cost is the float core's (:math:`2T^2 d` MACs) with, per score,
the softmax (3), the row maximum (1) and the comparison (1). A per-row scale of :math:`P_b` would not
change the next layer's result: the output projection binarizes its input by sign.

What came from where. The abstract (ICCV 2023) names SAB and learnable channel-wise weight scales. The
threshold rule (0.25 of the row maximum), the softmax straight-through estimator and the :math:`\pm 1`
Q, K, V are from the authors' code (https://github.com/ThisisBillhe/BiViT,
``binary_modules/utils_quant.py``: ``SoftmaxBinaryQuantizer``, ``BiAttention_SAB``); their learned
channel scale initialised to mean|W| is here mean|W| times a learned factor initialised to 1
(:class:`~suites.binarization._layers.ScaledQuantDense`), the same product.

Deviations: no Cross-layer Binarization (the paper's staged schedule that binarizes attention and MLP
apart, from a pre-trained float ViT): the whole model is binarized at once from the trained float twin
and fine-tuned, like every operator here; weights are not mean-centred per row before the sign; the
patch embedding and the classifier stay float (the operator protocol). Small-faithful: tiny ViT on
``digits`` patches and the 1-D transformer on ``mnist1d``.

Paper: He, Lou, Zhang, Liu, Wu, Zhou & Zhuang, "BiViT: Extremely Compressed Binary Vision Transformers",
ICCV 2023 (https://arxiv.org/abs/2211.07091).
"""

from __future__ import annotations

from typing import Any

from effbench.tf import keras, tf

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.architectures._transformer import AttentionCore
from suites.binarization._attention import SignedAttentionCore, softmax_straight_through
from suites.binarization._layers import output_scaled_layer
from suites.binarization._quantizers import ChannelScaledSign
from suites.binarization.operators import OperatorMethod


@keras.utils.register_keras_serializable(package="effbench")
class SoftmaxAwareBinaryAttention(SignedAttentionCore):
    """BiViT's attention: :math:`\\pm 1` Q, K, V and {0, 1} weights 1[P >= tau max P] (module docstring)."""

    def __init__(self, heads: int, threshold: float = 0.25, **kwargs: Any):
        super().__init__(heads, **kwargs)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold is {threshold}; expected a fraction of the row maximum in (0, 1]")
        self.threshold = threshold

    def binarize_probabilities(self, probabilities: tf.Tensor) -> tf.Tensor:
        """1 where a probability reaches ``threshold`` times its row's maximum, else 0."""
        row_max = tf.reduce_max(probabilities, axis=-1, keepdims=True)
        return tf.cast(probabilities >= self.threshold * row_max, probabilities.dtype)

    def probabilities(self, scores: tf.Tensor) -> tf.Tensor:
        return softmax_straight_through(scores, self.binarize_probabilities)

    def elementwise_per_score(self) -> int:
        return 5  # softmax (exp, sum, divide), row maximum, comparison

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


@register_method(
    "bivit",
    suite="binarization",
    kind="operator",
    paper=Paper("BiViT: Extremely Compressed Binary Vision Transformers", 2023, "https://arxiv.org/abs/2211.07091"),
    summary="softmax-aware {0,1} attention (P >= 0.25 max P, softmax STE), +-1 Q/K/V, learned channel weight scales",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
    scale="small-faithful",
)
class BiViT(OperatorMethod):
    """Options: ``threshold`` (fraction of the row maximum a weight must reach, 0.25), ``backbone``."""

    default_options = {**OperatorMethod.default_options, "backbone": "tiny-transformer", "threshold": 0.25}

    def input_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)

    def kernel_quantizer(self) -> ChannelScaledSign:
        return ChannelScaledSign()

    def binary_layer(self, larq_class: type, config: dict[str, Any]) -> keras.layers.Layer:
        return output_scaled_layer(larq_class, config, "channel")

    def replace_layer(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if type(layer) is AttentionCore:
            return SoftmaxAwareBinaryAttention(layer.heads, threshold=self.options["threshold"], name=layer.name)
        return None
