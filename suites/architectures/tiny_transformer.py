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
16 tokens on 8x8 digits, 20 on length-40 MNIST-1D, ~70k parameters. On a task of ids (``listops-short``:
``TaskSpec.vocabulary``) every id is one token, looked up in an embedding table of ``dim`` columns
(``patch`` is then unused): 128 tokens on ListOps. The shared pieces live in
:mod:`suites.architectures._transformer` (:class:`~suites.architectures._transformer.TransformerArchitecture`).

Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale", ICLR 2021 (https://arxiv.org/abs/2010.11929). Deviations: tiny sizes, mean pooling instead of
a class token, no dropout; padding ids are tokens like any other (no attention mask); on vectors the
same model over 1-D segments (the small-scale stand-in the transformer binarization methods of the
roster run on).
"""

from __future__ import annotations

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import tf
from suites.architectures._transformer import TransformerArchitecture, mlp, pre_norm_residual, self_attention


@register_method(
    "tiny-transformer",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
        2021,
        "https://arxiv.org/abs/2010.11929",
    ),
    summary="tiny pre-norm ViT over patches (1-D segments of vectors, one token per id); swappable attention core",
    taxonomy=Taxonomy(applied="architecture"),
)
class TinyTransformer(TransformerArchitecture):
    default_options = {"dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 2, "patch": 2}

    def block(self, x: tf.Tensor, name: str, grid: tuple[int, int]) -> tf.Tensor:
        x = pre_norm_residual(x, f"{name}_attention", self_attention(self.options["heads"], name))
        hidden = self.options["dim"] * self.options["mlp_ratio"]
        return pre_norm_residual(x, f"{name}_mlp", mlp(hidden, f"{name}_mlp"))
