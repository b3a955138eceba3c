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

The transformer architectures (``tiny-transformer``, ``macaron``, ``moe-switch``, ``rmt``) share
:class:`TransformerArchitecture`: tokens (:func:`patches` embedded by a Dense layer, or, on a task of
ids, one :class:`~keras.layers.Embedding` row per id), positions, ``depth`` blocks of the method's own
:meth:`TransformerArchitecture.block`, a final LayerNorm, the mean over tokens and the logits. Blocks are
made of :func:`pre_norm_residual` sublayers, :math:`x \leftarrow x + s\,f(\mathrm{LN}(x))`, with
:func:`self_attention` or :func:`mlp` as :math:`f`.
Private module (the registry skips names starting with ``_``).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import TaskSpec
from effbench.tf import keras, tf
from suites.architectures._layers import logits_model, model_name

Sublayer = Callable[[tf.Tensor], tf.Tensor]


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


def token_grid(input_shape: tuple[int, ...], patch: int, vocabulary: int) -> tuple[int, int]:
    """(rows, columns) of the tokens :func:`embedded_tokens` makes, in row-major order: (L, 1) on ids and vectors."""
    if vocabulary:
        return input_shape[0], 1
    if len(input_shape) == 1:
        return input_shape[0] // patch, 1
    return input_shape[0] // patch, input_shape[1] // patch


def embedded_tokens(inputs: tf.Tensor, dim: int, patch: int, vocabulary: int) -> tf.Tensor:
    """(batch, tokens, ``dim``): one embedding row per id when the task has a ``vocabulary``, else patches."""
    if vocabulary:
        if len(inputs.shape) != 2:
            raise ValueError(f"ids come as (L,) vectors; got input shape {tuple(inputs.shape[1:])}")
        # Ids arrive as float32 (as every task input does); the layer casts them to int32.
        return keras.layers.Embedding(vocabulary, dim, name="token_embedding")(inputs)
    return keras.layers.Dense(dim, name="patch_embedding")(patches(inputs, patch))


def pre_norm_residual(x: tf.Tensor, name: str, sublayer: Sublayer, scale: float = 1.0) -> tf.Tensor:
    r""":math:`x + s\,f(\mathrm{LN}(x))`, of layers ``{name}_norm``, ``{name}_scale`` (s != 1), ``{name}_residual``."""
    update = sublayer(keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm")(x))
    if scale != 1.0:
        update = keras.layers.Rescaling(scale, name=f"{name}_scale")(update)
    return keras.layers.Add(name=f"{name}_residual")([x, update])


def self_attention(heads: int, name: str, core: keras.layers.Layer | None = None) -> Sublayer:
    """Dense ``{name}_query``, ``_key``, ``_value``, the core (``{name}_attention``), Dense ``{name}_output``."""

    def attend(normed: tf.Tensor) -> tf.Tensor:
        dim = normed.shape[-1]
        parts = ("query", "key", "value")
        query, key, value = (keras.layers.Dense(dim, name=f"{name}_{part}")(normed) for part in parts)
        attended = (core or AttentionCore(heads, name=f"{name}_attention"))([query, key, value])
        return keras.layers.Dense(dim, name=f"{name}_output")(attended)

    return attend


def mlp(hidden: int, name: str) -> Sublayer:
    """Dense ``{name}_in`` (``hidden`` units, GELU) and Dense ``{name}_out`` back to the input width."""

    def transform(normed: tf.Tensor) -> tf.Tensor:
        inner = keras.layers.Dense(hidden, activation=gelu_tanh, name=f"{name}_in")(normed)
        return keras.layers.Dense(normed.shape[-1], name=f"{name}_out")(inner)

    return transform


class TransformerArchitecture(ArchitectureMethod):
    """Tokens, positions, ``depth`` blocks of :meth:`block`, final LayerNorm, token mean, logits.

    Options every subclass has: ``dim``, ``depth``, ``heads``, ``patch``. On a task of ids (``spec.vocabulary``)
    :meth:`build_for` embeds every id as one token; :meth:`build` (a shape only) cuts patches.
    """

    def build_for(self, spec: TaskSpec) -> keras.Model:
        return self.build_with(spec.input_shape, spec.num_classes, spec.vocabulary)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        return self.build_with(input_shape, num_classes, 0)

    def build_with(self, input_shape: tuple[int, ...], num_classes: int, vocabulary: int) -> keras.Model:
        dim, heads = self.options["dim"], self.options["heads"]
        if dim % heads:
            raise ValueError(f"{self.spec.slug}: dim {dim} is not divisible by heads {heads}")
        inputs = keras.Input(shape=input_shape)
        x = embedded_tokens(inputs, dim, self.options["patch"], vocabulary)
        x = self.positions(x)
        grid = token_grid(input_shape, self.options["patch"], vocabulary)
        for block in range(self.options["depth"]):
            x = self.block(x, f"block{block}", grid)
        x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
        x = keras.layers.GlobalAveragePooling1D(name="token_mean")(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))

    def positions(self, tokens: tf.Tensor) -> tf.Tensor:
        """Where a token is: a learned embedding per position (ViT's); a method with another scheme overrides it."""
        return PositionEmbedding(name="positions")(tokens)

    @abc.abstractmethod
    def block(self, x: tf.Tensor, name: str, grid: tuple[int, int]) -> tf.Tensor:
        """One block on (batch, tokens, dim) tokens laid out as ``grid`` (rows, columns); layer names start ``name``."""
