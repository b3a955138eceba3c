r"""EcoFormer: kernelized hashing of queries and keys to binary codes, and attention linear in the tokens.

Per head, with :math:`b` code bits and :math:`m` anchors :math:`a_j` (forward; pseudo-gradients right)::

    hashing:    x <- x / ||x||                                        (x = a query or a key)
                k_j(x) = exp(-||x - a_j||^2 / (2 sigma)),  sigma = mean of ||x - a_j||^2 over the
                         example's tokens and anchors                  (a Gaussian kernel)
                h(x)  = sign(A^T (k(x) - mean_tokens k))  in {-1,+1}^b  dh/dz := 1[|z| <= 1]  (A detached)
    attention:  s(i, j) = h(q_i).h(k_j) + b + 1  (= 2b + 1 - 2 Hamming distance: >= 1)
                O_i = sum_j s(i,j) v_j / sum_j s(i,j)
                    = (h(q_i) (H_k^T V) + (b+1) sum_j v_j) / (h(q_i) . sum_j h(k_j) + (b+1) T)

The last line is the same attention computed in the associative order: :math:`H_k^\top V` (b x d)
once, then one product per query, so the cost is :math:`O(T b d)` instead of :math:`O(T^2 d)`:
**linear in the number of tokens**. The products have one binary operand (the codes) and one float
one (V), so the core declares ``effbench_bits = (1, 32)``: the multiplications by :math:`\pm 1` are
additions and subtractions, EcoFormer's accumulations in place of multiply-accumulates. The hash
itself is float work (distances to the anchors, the kernel, the projection A) and is a layer of its
own, :class:`KernelHash`, counted at 32 bits: :math:`2 T m (d_h + b)` MACs per head for queries and
keys, also linear in T. The two layers replace each float attention core
(``suites.binarization._attention.rewire_attention``).

Learning the hash (KSH, self-supervised from the attention map): during training, the relaxed codes
:math:`\tilde h = \tanh(z/2)` (= 2 sigmoid(z) - 1) of queries and keys fit the target similarity
:math:`S_{ij}` = +1 for each query's ``topk`` most similar keys, -1 for its ``topk`` least similar
(by the float, normalised :math:`q_i \cdot k_j`), 0 elsewhere::

    L_hash = - mean_{batch, heads} sum_bits  h~_q^T S h~_k / (T b)

added to the task loss (``add_loss``, training only). It reaches only A: the kernel features and S
are detached, as in the authors' code, where A is fitted by its own optimiser on detached inputs.

What came from where. The abstract: kernelized hashing to binary codes, learned to match ground-truth
similarities from the attention map, Hamming-space inner products, linear attention. The Gaussian
kernel to anchors with sigma = the mean squared distance, the centring, the tanh relaxation, the
top-k / bottom-k target and the loss, ``A`` detached in the forward pass, the clipped-STE sign and
the ``b + 1`` offset are from the authors' code (https://github.com/ziplab/EcoFormer,
``twins/hashing/ksh.py`` ``KernelSH``, ``twins/performer.py`` ``EcoformerFastAttention``,
``linear_attention_bias``).

Deviations: the authors fit A once, on the first batch, with 100 SGD steps per bit; here A is learned
along with the model by the hash loss. Anchors are fixed random unit vectors (not tokens sampled from
the first batch), and the kernel is centred by the example's own token mean (not a mean over the
training batch, so inference does not depend on the batch). Queries and keys come from separate
projections and share one hash (the authors share the projection, ``to_qk``). The offset term is
:math:`(b+1)\sum_j v_j`, the exact kernel form (the authors' code adds :math:`(b+1) v_i`). V stays
float, as in EcoFormer; every projection is binarized by the operator protocol (EcoFormer keeps them
float), and the first and last layers stay float. Small-faithful: tiny transformer on ``digits`` and
``mnist1d`` (16 and 20 tokens, where linear attention saves little: its point shows at long sequences).

Paper: Liu, Pan, He, Cai & Zhuang, "EcoFormer: Energy-Saving Attention with Linear Complexity",
NeurIPS 2022 (https://arxiv.org/abs/2209.09004).
"""

from __future__ import annotations

from typing import Any

from effbench.tf import keras, tf

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.architectures._transformer import AttentionCore
from suites.binarization._attention import rewire_attention
from suites.binarization._quantizers import ChannelScaledSign, clipped_ste_sign
from suites.binarization.operators import OperatorMethod


@keras.utils.register_keras_serializable(package="effbench")
class KernelHash(keras.layers.Layer):
    """Maps ``[Q, K]`` (batch, tokens, dim) to ``[h(Q), h(K)]`` (batch, tokens, heads * bits) in {-1, +1}.

    See the module docstring. Weights: ``anchors`` (heads, m, d_h), fixed; ``hash_projection`` A
    (heads, m, bits), learned by the KSH loss while training.
    """

    def __init__(self, heads: int, bits: int = 16, anchors: int = 20, topk: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.heads, self.bits, self.anchor_count, self.topk = heads, bits, anchors, topk

    def build(self, input_shape: list[tf.TensorShape]) -> None:
        dim = int(input_shape[0][-1])
        if dim % self.heads:
            raise ValueError(f"dimension {dim} is not divisible by {self.heads} heads")
        self.head_dim = dim // self.heads
        self.anchors = self.add_weight(
            name="anchors", shape=(self.heads, self.anchor_count, self.head_dim),
            initializer=keras.initializers.RandomNormal(seed=0), trainable=False,
        )  # fmt: skip
        self.hash_projection = self.add_weight(
            name="hash_projection", shape=(self.heads, self.anchor_count, self.bits),
            initializer=keras.initializers.RandomNormal(seed=1),
        )  # fmt: skip
        super().build(input_shape)

    def split_heads(self, x: tf.Tensor) -> tf.Tensor:
        tokens = x.shape[1]
        return tf.transpose(tf.reshape(x, [-1, tokens, self.heads, self.head_dim]), [0, 2, 1, 3])

    def kernel_features(self, x: tf.Tensor) -> tf.Tensor:
        """Centred Gaussian kernel of the normalised tokens to the anchors: (batch, heads, tokens, m)."""
        x = tf.math.l2_normalize(self.split_heads(x), axis=-1)
        anchors = tf.math.l2_normalize(self.anchors, axis=-1)
        # ||x - a||^2 = 2 - 2 x.a for unit vectors. Written -2 x.a + 2: TFLite's converter folds the constant
        # of "2 - 2 einsum(...)" wrongly (its float32 model computed 2 x.a - 2, flipping half the hash bits).
        distances = tf.maximum(-2.0 * tf.einsum("bhtd,hmd->bhtm", x, anchors) + 2.0, 0.0)
        sigma = tf.reduce_mean(distances, axis=[2, 3], keepdims=True)
        kernel = tf.exp(-distances / (2.0 * sigma + 1e-12))
        return kernel - tf.reduce_mean(kernel, axis=2, keepdims=True)

    def code(self, features: tf.Tensor) -> tf.Tensor:
        """sign(A^T k), A detached: (batch, heads, tokens, bits)."""
        return clipped_ste_sign(tf.einsum("bhtm,hmk->bhtk", features, tf.stop_gradient(self.hash_projection)))

    def merge(self, codes: tf.Tensor) -> tf.Tensor:
        tokens = codes.shape[2]
        return tf.reshape(tf.transpose(codes, [0, 2, 1, 3]), [-1, tokens, self.heads * self.bits])

    def hash_loss(self, query: tf.Tensor, key: tf.Tensor, features: list[tf.Tensor]) -> tf.Tensor:
        """KSH's loss on the relaxed codes against the top-k / bottom-k similarity target (module docstring)."""
        q = tf.math.l2_normalize(self.split_heads(query), axis=-1)
        k = tf.math.l2_normalize(self.split_heads(key), axis=-1)
        similarity = tf.stop_gradient(tf.matmul(q, k, transpose_b=True))
        tokens = similarity.shape[-1]
        topk = min(self.topk, tokens // 2)
        top = tf.reduce_min(tf.math.top_k(similarity, topk).values, axis=-1, keepdims=True)
        bottom = -tf.reduce_min(tf.math.top_k(-similarity, topk).values, axis=-1, keepdims=True)
        target = tf.cast(similarity >= top, similarity.dtype) - tf.cast(similarity <= bottom, similarity.dtype)
        relaxed = [
            tf.tanh(0.5 * tf.einsum("bhtm,hmk->bhtk", tf.stop_gradient(f), self.hash_projection)) for f in features
        ]
        agreement = tf.einsum("bhik,bhij,bhjk->bh", relaxed[0], target, relaxed[1])
        return -tf.reduce_mean(agreement) / (tokens * self.bits)

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> list[tf.Tensor]:
        query, key = inputs
        features = [self.kernel_features(query), self.kernel_features(key)]
        if training:
            self.add_loss(self.hash_loss(query, key, features))
        return [self.merge(self.code(f)) for f in features]

    def compute_output_shape(self, input_shape: list[tf.TensorShape]) -> list[tf.TensorShape]:
        return [tf.TensorShape([*shape[:-1], self.heads * self.bits]) for shape in input_shape]

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        """Per query and key token and head: m d_h MACs (dot products with the anchors) and m b (A^T k).

        Elementwise: normalisation 2 per element, then per kernel value the distance (2), exp and
        divide (2), centring (2); the sign is not counted (as larq quantizers are not).
        """
        tokens, dim = inputs[0][1], inputs[0][2]
        macs = 2 * tokens * self.heads * self.anchor_count * (dim // self.heads + self.bits)
        elementwise = 2 * (2 * tokens * dim + 6 * tokens * self.heads * self.anchor_count)
        return macs, elementwise

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "heads": self.heads, "bits": self.bits, "anchors": self.anchor_count, "topk": self.topk,
        }  # fmt: skip


@keras.utils.register_keras_serializable(package="effbench")
class HashedLinearAttention(AttentionCore):
    """Linear attention of ``[h(Q), h(K), V]`` with the Hamming affinity h(q).h(k) + b + 1 (module docstring).

    ``scores`` / ``probabilities`` / ``mix`` give the same attention in the quadratic order (for
    checking); ``call`` computes it in the linear order.
    """

    effbench_bits: tuple[int, int] = (1, 32)

    def __init__(self, heads: int, bits: int = 16, **kwargs: Any):
        super().__init__(heads, **kwargs)
        self.bits = bits

    def scores(self, query: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        return tf.matmul(query, key, transpose_b=True) + (self.bits + 1)

    def probabilities(self, scores: tf.Tensor) -> tf.Tensor:
        return scores / tf.reduce_sum(scores, axis=-1, keepdims=True)

    def quadratic(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        query, key, value = (self.split_heads(x) for x in inputs)
        return self.merge_heads(self.mix(self.probabilities(self.scores(query, key)), value))

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        query, key, value = (self.split_heads(x) for x in inputs)
        tokens, offset = value.shape[2], float(self.bits + 1)
        context = tf.matmul(key, value, transpose_a=True)  # (batch, heads, bits, d_h)
        numerator = tf.matmul(query, context) + offset * tf.reduce_sum(value, axis=2, keepdims=True)
        key_sum = tf.reduce_sum(key, axis=2, keepdims=True)  # (batch, heads, 1, bits)
        denominator = tf.reduce_sum(query * key_sum, axis=-1, keepdims=True) + offset * tokens
        return self.merge_heads(numerator / denominator)

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        """MACs: H_k^T V and h(q) (H_k^T V), T b d each over all heads, and h(q) . sum h(k), T b per head.

        Elementwise: the sums of the keys' codes (T b per head) and of the values (T d), the offset
        terms (d + T d), the denominator's offset (T per head) and the division (T d).
        """
        tokens, code_dim, dim = inputs[0][1], inputs[0][2], inputs[2][2]
        macs = 2 * tokens * self.bits * dim + tokens * code_dim
        elementwise = tokens * code_dim + 3 * tokens * dim + dim + tokens * self.heads
        return macs, elementwise

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bits": self.bits}


@register_method(
    "ecoformer",
    suite="binarization",
    kind="operator",
    paper=Paper("EcoFormer: Energy-Saving Attention with Linear Complexity", 2022, "https://arxiv.org/abs/2209.09004"),
    summary="Q, K hashed to b-bit codes by a learned Gaussian-kernel hash (KSH loss); attention linear in "
    "tokens, h(Q)(h(K)^T V), with binary codes",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
    scale="small-faithful",
)
class EcoFormer(OperatorMethod):
    """Options: ``bits`` (code length per head, 16), ``anchors`` (m, 20), ``topk`` (similar and dissimilar
    keys per query in the hash target, 4), ``backbone``."""

    default_options = {
        **OperatorMethod.default_options, "backbone": "tiny-transformer", "bits": 16, "anchors": 20, "topk": 4,
    }  # fmt: skip

    def input_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)

    def kernel_quantizer(self) -> ChannelScaledSign:
        return ChannelScaledSign()

    def wire_attention(self, core: AttentionCore, inputs: list[tf.Tensor]) -> tf.Tensor:
        """The hash of Q and K, then the linear attention core (named like the float ``core``)."""
        bits = self.options["bits"]
        hashing = KernelHash(core.heads, bits, self.options["anchors"], self.options["topk"], name=f"{core.name}_hash")
        return HashedLinearAttention(core.heads, bits, name=core.name)([*hashing(inputs[:2]), inputs[2]])

    def binarize_backbone(self, float_model: keras.Model) -> keras.Model:
        return rewire_attention(super().binarize_backbone(float_model), self.wire_attention)
