r"""Layers of the tiny transformer that binarization methods swap: patching, positions, attention core.

The attention *core* is kept apart from its projections so that a method can binarize each piece:
the projections are ordinary ``Dense`` layers (the operator protocol binarizes them like any other
linear layer), and :class:`AttentionCore` holds only the parameter-free part, per head :math:`h`,

.. math::  S_h = \frac{Q_h K_h^\top}{\sqrt{d}}, \qquad P_h = \operatorname{softmax}(S_h), \qquad
           O_h = P_h V_h,

split into the overridable steps :meth:`AttentionCore.scores`, :meth:`AttentionCore.probabilities`
and :meth:`AttentionCore.mix`. BiViT, BiBERT, BiPFT and EcoFormer subclass it (their binary attention)
and put their subclass in place of the float one through ``OperatorMethod.replace_layer``.

The core counts its own operations for the complexity track (``effbench_cost``): :math:`QK^\top` and
:math:`PV` are :math:`T^2 d` MACs each over all heads, the softmax 3 ops per score and the
:math:`1/\sqrt{d}` scaling one per query element; ``effbench_bits`` gives the bit widths of those
matrix products' operands (32, 32 for the float core; a binary core declares its own).
Private module (the registry skips names starting with ``_``).
"""

from __future__ import annotations

import math
from typing import Any

from effbench.tf import keras, tf


@keras.utils.register_keras_serializable(package="effbench")
def gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    """GELU in its tanh approximation (Hendrycks & Gimpel), as GPT-2 and BERT's TF code use it.

    The exact form lowers to an ``Erfc`` op that Larq Compute Engine's interpreter cannot run, so a binary
    tiny transformer could not be measured on the edge track with it.
    """
    return tf.nn.gelu(x, approximate=True)


@keras.utils.register_keras_serializable(package="effbench")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding per token position, initialised from N(0, 0.02^2) as in ViT."""

    def build(self, input_shape: tf.TensorShape) -> None:
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=tuple(input_shape[1:]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )  # fmt: skip

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs + self.position_embedding

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        return 0, math.prod(outputs[0][1:])


@keras.utils.register_keras_serializable(package="effbench")
class AttentionCore(keras.layers.Layer):
    """Multi-head scaled dot-product attention of projected ``[Q, K, V]``, each (batch, tokens, dim)."""

    # Bit widths of the operands of QK^T and PV; a binary core overrides them.
    effbench_bits: tuple[int, int] = (32, 32)

    def __init__(self, heads: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.heads = heads

    def split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """(batch, tokens, dim) -> (batch, heads, tokens, dim / heads)."""
        tokens, dim = x.shape[1], x.shape[2]
        return tf.transpose(tf.reshape(x, [-1, tokens, self.heads, dim // self.heads]), [0, 2, 1, 3])

    def merge_heads(self, x: tf.Tensor) -> tf.Tensor:
        tokens, head_dim = x.shape[2], x.shape[3]
        return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [-1, tokens, self.heads * head_dim])

    def scores(self, query: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        """:math:`QK^T / \\sqrt{d}` per head: (batch, heads, tokens, tokens)."""
        return tf.matmul(query, key, transpose_b=True) / math.sqrt(query.shape[-1])

    def probabilities(self, scores: tf.Tensor) -> tf.Tensor:
        """The attention weights of each query over the keys."""
        return tf.nn.softmax(scores, axis=-1)

    def mix(self, probabilities: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
        """:math:`PV` per head."""
        return tf.matmul(probabilities, value)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        query, key, value = (self.split_heads(x) for x in inputs)
        return self.merge_heads(self.mix(self.probabilities(self.scores(query, key)), value))

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        tokens, dim = inputs[0][1], inputs[0][2]
        scores = self.heads * tokens * tokens
        return 2 * tokens * tokens * dim, 3 * scores + tokens * dim

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "heads": self.heads}


def patches(inputs: tf.Tensor, patch: int) -> tf.Tensor:
    """Non-overlapping patches as tokens: (H, W, C) -> (HW / p^2, p^2 C); (L,) -> (L / p, p).

    Built from Reshape and Permute layers only, so the model saves and converts without custom code.
    """
    shape = tuple(inputs.shape[1:])
    if len(shape) not in (1, 3):
        raise ValueError(f"the tiny transformer takes (H, W, C) images or (L,) vectors; got input shape {shape}")
    spatial = shape[:1] if len(shape) == 1 else shape[:2]
    if any(size % patch for size in spatial):
        raise ValueError(f"input shape {shape} does not divide into patches of {patch}")
    if len(shape) == 1:
        return keras.layers.Reshape((shape[0] // patch, patch), name="patches")(inputs)
    height, width, channels = shape
    x = keras.layers.Reshape((height // patch, patch, width // patch, patch * channels))(inputs)
    x = keras.layers.Permute((1, 3, 2, 4))(x)
    return keras.layers.Reshape(((height // patch) * (width // patch), patch * patch * channels), name="patches")(x)
