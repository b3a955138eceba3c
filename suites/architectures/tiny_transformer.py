r"""Tiny transformer: a ViT over image patches, or a 1-D transformer over a vector's segments.

Architecture (pre-norm, as ViT): the input is cut into non-overlapping patches (``patch`` x ``patch``
pixels of an image, or ``patch`` consecutive values of a vector), each patch is embedded by a Dense
layer to ``dim`` and a learned position embedding is added; then ``depth`` blocks of

.. math::  x \leftarrow x + W_o\,\mathrm{Attn}(W_q \mathrm{LN}(x), W_k \mathrm{LN}(x), W_v \mathrm{LN}(x)),
           \qquad x \leftarrow x + W_2\,\mathrm{GELU}(W_1 \mathrm{LN}(x))

with ``heads`` heads and an MLP of ``mlp_ratio * dim`` units (GELU in its tanh approximation, which both
TFLite and Larq Compute Engine run); a final LayerNorm, the mean over tokens
(no class token) and the ``logits`` Dense layer. The attention core is a separate parameter-free layer
(:class:`suites.architectures._transformer.AttentionCore`) so binary attention methods can replace it,
and every projection is a plain Dense layer, so the operator protocol binarizes them; the patch
embedding (first) and the classifier (last) stay float. Defaults (dim 64, depth 2, 4 heads, patch 2):
16 tokens on 8x8 digits, 20 on length-40 MNIST-1D, ~70k parameters.

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale", ICLR 2021 (https://arxiv.org/abs/2010.11929). Deviations: tiny sizes, mean pooling instead of
a class token, no dropout; on vectors the same model over 1-D segments (the small-scale stand-in the
transformer binarization methods of the roster run on).
"""

from __future__ import annotations

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import logits_model, model_name
from suites.architectures._transformer import AttentionCore, PositionEmbedding, gelu_tanh, patches


@register_method(
    "tiny-transformer",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
        2021,
        "https://arxiv.org/abs/2010.11929",
    ),
    summary="tiny pre-norm ViT over image patches (1-D segments for vectors); attention core swappable",
    taxonomy=Taxonomy(applied="architecture"),
)
class TinyTransformer(ArchitectureMethod):
    default_options = {"dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 2, "patch": 2}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        dim, heads = self.options["dim"], self.options["heads"]
        if dim % heads:
            raise ValueError(f"tiny-transformer: dim {dim} is not divisible by heads {heads}")
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Dense(dim, name="patch_embedding")(patches(inputs, self.options["patch"]))
        x = PositionEmbedding(name="positions")(x)
        for block in range(self.options["depth"]):
            x = self._block(x, f"block{block}")
        x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
        x = keras.layers.GlobalAveragePooling1D(name="token_mean")(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))

    def _block(self, x: tf.Tensor, name: str) -> tf.Tensor:
        dim, layers = self.options["dim"], keras.layers
        normed = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_attention_norm")(x)
        query, key, value = (layers.Dense(dim, name=f"{name}_{part}")(normed) for part in ("query", "key", "value"))
        attended = AttentionCore(self.options["heads"], name=f"{name}_attention")([query, key, value])
        x = layers.Add(name=f"{name}_attention_residual")([x, layers.Dense(dim, name=f"{name}_output")(attended)])
        normed = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_mlp_norm")(x)
        hidden = layers.Dense(dim * self.options["mlp_ratio"], activation=gelu_tanh, name=f"{name}_mlp_in")(normed)
        return layers.Add(name=f"{name}_mlp_residual")([x, layers.Dense(dim, name=f"{name}_mlp_out")(hidden)])
