r"""BiPFT: low-rank estimators of the binarization residual polynomials of self-attention.

With :math:`Q = Q_b + R_q`, :math:`K = K_b + R_k`, :math:`V = V_b + R_v` (binary part plus residual), the
float attention's products expand into polynomials of the residuals,

.. math::  QK^\top = Q_bK_b^\top + Q_bR_k^\top + R_qK_b^\top + R_qR_k^\top, \qquad PV = PV_b + PR_v,

and BiPFT estimates each residual term by a rank-1 product of learned linear estimators instead of
computing it. Forward and pseudo-gradient, per head (sign(0) = +1; weights as the operator protocol)::

    projections:  y = (alpha_c sign(W)) . sign(x) + b      d/dx := 1[|x| <= 1], d/dW := 1[|W| <= 1]
    estimators:   [q_p, q_m] = Q u_q + c_q,  [k_p, k_m] = K u_k + c_k,  v_p = V u_v + c_v   (float, rank 1)
    scores:       S = (Q_b K_b^T + q_m k_p^T + q_p k_m^T + q_p k_p^T) / sqrt(d)
                      (Q_b R_k^T ~ q_m k_p^T, R_q K_b^T ~ q_p k_m^T, R_q R_k^T ~ q_p k_p^T; shared by heads)
    weights:      P   = softmax(S)
                  P_b = alpha * 1[P / alpha >= 1/2]  (alpha learned)   dP_b/dP := 1[0 < P < alpha]
                                                                       dP_b/dalpha := round(P/alpha) - P/alpha
                                                                         inside, 1 above (LSQ, scaled)
    output:       O = P_b V_b + P_b v_p                 (P R_v ~ P_b v_p, broadcast over the head's dims)

Every piece is a layer of its own in place of the float attention core
(``suites.binarization._attention.rewire_attention``), so each is counted at its own bit widths: the
estimators and the score residual, :class:`ResidualEstimators` (float, 32/32, :math:`5Td + 3T^2`
MACs); the core :class:`ResidualBinaryAttention` (Q_b K_b^T and P_b V_b,
1/1 bits: P_b is one bit times the scale alpha, :math:`2T^2 d` MACs); and :class:`ResidualValueMix`
(P_b v_p: binary times float, 1/32 bits, :math:`H T^2` MACs).

What came from where. The abstract: binarization error of self-attention written as residual
polynomials, modelled by low-rank estimators. The three score terms, the rank-1 estimators with biases
(``nn.Linear(hidden, 1)``) shared by the heads, the value term added to the context, and the learned
step-size (LSQ) binarizer of the attention probabilities (``ElasticQuantBinarizerUnsigned``, scale
initialised to 4 mean(P) = 4/T, gradient scale 1/sqrt(numel)) are from the authors' code
(https://github.com/Xingrun-Xing/BiPFT, ``binary_pretraining/bipft.py`` ``BertSelfAttention``).

Deviations: **no pre-training** (BiPFT's point is a binary foundation model pre-trained on large
corpora; here the binary model starts from the trained float twin of the task, like every operator, and
is fine-tuned without distillation);
the estimators read the float projections Q, K, V, the inputs of the attention core, instead of the
block's hidden states (the core does not see those); Q, K, V are binarized by the plain sign (the
authors' elastic binarizer also learns a scale); weights are binarized by the operator protocol's XNOR
kernel quantizer. Small-faithful: tiny transformer on ``digits`` and ``mnist1d``.

Paper: Xing, Du, Wang, Zeng, Wang, Zhang & Zhang, "BiPFT: Binary Pre-trained Foundation
Transformer with Low-rank Estimation of Binarization Residual Polynomials", AAAI 2024
(https://arxiv.org/abs/2312.08937).
"""

from __future__ import annotations

import math
from typing import Any

from effbench.tf import keras, tf

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.architectures._transformer import AttentionCore
from suites.binarization._attention import SignedAttentionCore, rewire_attention
from suites.binarization._quantizers import ChannelScaledSign, straight_through
from suites.binarization.operators import OperatorMethod


def learned_step_binary(x: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """LSQ's unsigned 1-bit quantizer, alpha * round(clip(x / alpha, 0, 1)).

    Straight-through round; the gradient of ``alpha`` is scaled by 1/sqrt(number of elements) (LSQ).
    """
    scale = tf.math.rsqrt(tf.cast(tf.size(x), x.dtype))
    alpha = tf.maximum(straight_through(alpha * scale, alpha), 1e-5)
    clipped = tf.clip_by_value(x / alpha, 0.0, 1.0)
    return straight_through(clipped, tf.round(clipped)) * alpha


@keras.utils.register_keras_serializable(package="effbench")
class ResidualEstimators(keras.layers.Layer):
    """``[Q, K, V]`` -> [C, v_p]: the rank-1 estimators and the estimated score residual (float).

    ``[q_p, q_m] = Q u_q + c_q``, ``[k_p, k_m] = K u_k + c_k``, ``v_p = V u_v + c_v``;
    ``C = q_m k_p^T + q_p k_m^T + q_p k_p^T`` (batch, tokens, tokens), shared by the heads; ``v_p``
    (batch, tokens, 1).
    """

    def build(self, input_shape: list[tf.TensorShape]) -> None:
        dim = int(input_shape[0][-1])
        for part, width in (("query", 2), ("key", 2), ("value", 1)):
            setattr(self, f"{part}_estimator", self.add_weight(name=f"{part}_estimator", shape=(dim, width)))
            setattr(self, f"{part}_offset", self.add_weight(name=f"{part}_offset", shape=(width,), initializer="zeros"))
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        query, key, value = inputs
        q = tf.matmul(query, self.query_estimator) + self.query_offset
        k = tf.matmul(key, self.key_estimator) + self.key_offset
        q_p, q_m, k_p, k_m = q[..., :1], q[..., 1:], k[..., :1], k[..., 1:]
        correction = (
            tf.matmul(q_m, k_p, transpose_b=True)
            + tf.matmul(q_p, k_m, transpose_b=True)
            + tf.matmul(q_p, k_p, transpose_b=True)
        )
        return [correction, tf.matmul(value, self.value_estimator) + self.value_offset]

    def compute_output_shape(self, input_shape: list[tf.TensorShape]) -> list[tf.TensorShape]:
        batch, tokens = input_shape[0][0], input_shape[0][1]
        return [tf.TensorShape([batch, tokens, tokens]), tf.TensorShape([batch, tokens, 1])]

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        """The five estimators (5 T d MACs, 5 T bias adds) and three rank-1 products (3 T^2 MACs, 2 T^2 adds)."""
        tokens, dim = inputs[0][1], inputs[0][2]
        return 5 * tokens * dim + 3 * tokens * tokens, 5 * tokens + 2 * tokens * tokens


@keras.utils.register_keras_serializable(package="effbench")
class ResidualBinaryAttention(SignedAttentionCore):
    """BiPFT's core: ``[Q, K, V, C]`` -> ``[P_b V_b, P_b]`` with S = (Q_b K_b^T + C) / sqrt(d) (module docstring).

    ``C`` (batch, tokens, tokens), the estimated residual of the scores, is shared by the heads. Weight:
    ``probability_scale`` alpha, initialised to 4 / tokens (= 4 mean(P), the authors' initialisation).
    """

    def build(self, input_shape: list[tf.TensorShape]) -> None:
        tokens = int(input_shape[0][1])
        self.probability_scale = self.add_weight(
            name="probability_scale", shape=(), initializer=keras.initializers.Constant(4.0 / tokens)
        )
        super().build(input_shape)

    def probabilities(self, scores: tf.Tensor) -> tf.Tensor:
        return learned_step_binary(tf.nn.softmax(scores, axis=-1), self.probability_scale)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        query, key, value = self.binarize_inputs(inputs)
        scores = tf.matmul(query, key, transpose_b=True)
        scores = (scores + inputs[3][:, tf.newaxis]) / math.sqrt(query.shape[-1])
        probabilities = self.probabilities(scores)
        return [self.merge_heads(self.mix(probabilities, value)), probabilities]

    def compute_output_shape(self, input_shape: list[tf.TensorShape]) -> list[tf.TensorShape]:
        batch, tokens = input_shape[0][0], input_shape[0][1]
        return [tf.TensorShape(input_shape[2]), tf.TensorShape([batch, self.heads, tokens, tokens])]

    def elementwise_per_score(self) -> int:
        return 6  # residual add, softmax (3), divide by alpha and round

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        macs, elementwise = super().effbench_cost(inputs, outputs)
        return macs, elementwise + self.heads * inputs[0][1] * inputs[0][1]  # the 1/sqrt(d) per score


@keras.utils.register_keras_serializable(package="effbench")
class ResidualValueMix(keras.layers.Layer):
    """``[P_b, v_p]`` -> P_b v_p per head, broadcast over the head's dims: (batch, tokens, heads * d_h)."""

    effbench_bits: tuple[int, int] = (1, 32)

    def __init__(self, heads: int, dim: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.heads, self.dim = heads, dim

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        probabilities, value = inputs
        mixed = tf.matmul(probabilities, value[:, tf.newaxis])  # (batch, heads, tokens, 1)
        tokens = mixed.shape[2]
        mixed = tf.transpose(mixed, [0, 2, 1, 3])  # (batch, tokens, heads, 1)
        mixed = tf.broadcast_to(mixed, [tf.shape(mixed)[0], tokens, self.heads, self.dim // self.heads])
        return tf.reshape(mixed, [-1, tokens, self.dim])

    def compute_output_shape(self, input_shape: list[tf.TensorShape]) -> tf.TensorShape:
        return tf.TensorShape([input_shape[0][0], input_shape[0][2], self.dim])

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        heads, tokens = inputs[0][1], inputs[0][2]
        return heads * tokens * tokens, 0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "heads": self.heads, "dim": self.dim}


@register_method(
    "bipft",
    suite="binarization",
    kind="operator",
    paper=Paper(
        "BiPFT: Binary Pre-trained Foundation Transformer with Low-rank Estimation of Binarization "
        "Residual Polynomials",
        2024,
        "https://arxiv.org/abs/2312.08937",
    ),
    summary="binary attention (+-1 Q/K/V, LSQ {0,alpha} weights) plus rank-1 float estimators of the "
    "residual polynomials Q_b R_k^T, R_q K_b^T, R_q R_k^T, P R_v; no pre-training",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
    scale="small-faithful",
)
class BiPFT(OperatorMethod):
    """Options: ``backbone``."""

    default_options = {**OperatorMethod.default_options, "backbone": "tiny-transformer"}

    def input_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)

    def kernel_quantizer(self) -> ChannelScaledSign:
        return ChannelScaledSign()

    def wire_attention(self, core: AttentionCore, inputs: list[tf.Tensor]) -> tf.Tensor:
        """Estimators, binary core (named like the float ``core``), value term, sum."""
        name, heads = core.name, core.heads
        correction, value_residual = ResidualEstimators(name=f"{name}_estimators")(inputs)
        context, probabilities = ResidualBinaryAttention(heads, name=name)([*inputs, correction])
        mix = ResidualValueMix(heads, inputs[2].shape[-1], name=f"{name}_value_term")
        return keras.layers.Add(name=f"{name}_sum")([context, mix([probabilities, value_residual])])

    def binarize_backbone(self, float_model: keras.Model) -> keras.Model:
        return rewire_attention(super().binarize_backbone(float_model), self.wire_attention)
