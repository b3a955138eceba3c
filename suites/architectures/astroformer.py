r"""Astroformer, small-faithful: a CoAtNet-style C-C-T-T hybrid, MBConv stages then relative-attention stages.

Stack (CoAtNet's S0-S4, Dai et al. 2021, which Astroformer builds on), with ``w`` = option ``width``::

    S0  stem      conv3x3(w)-BN-GELU, conv3x3(w)-BN-GELU
    S1  C  (w)    `blocks` MBConv                         stride 1
    S2  C  (2w)   `blocks` MBConv, the first strided      stride 2
    S3  T  (4w)   `blocks` relative-attention blocks      stride 1
    S4  T  (8w)   `blocks` relative-attention blocks, the first strided (downsampling in the block)
    final LayerNorm, global mean pool, `logits`

MBConv (pre-norm, expansion 4, squeeze-excitation at 1/4 of the block's input channels)::

    x <- Proj(Pool(x)) + Conv1x1( SE( GELU(BN( DWConv3x3_s( GELU(BN( Conv1x1_{4C}( BN(x) ))) ))) ) )

where Pool is a 2x2 max pool and Proj a 1x1 conv, present only where the block strides or changes the width
(else the identity). Transformer block, on the map's :math:`T = HW` tokens, with ``heads = C / head_dim``::

    x <- Proj(Pool(x)) + W_o RelAttn(W_q z, W_k z, W_v z),   z = Pool(LN(x))
    x <- x + W_2 GELU(W_1 LN(x))                              (4C hidden units)

    RelAttn: S_h[i, j] = q_i . k_j / sqrt(d) + w_h[p_j - p_i],  softmax over j, times V

the relative bias :math:`w_h` a learned scalar per head and offset between token positions :math:`p`
(:class:`suites.architectures._attention2d.RelativeBiasAttentionCore`, CoAtNet's eq. 3, pre-softmax form).

Paper: Dagli, "Astroformer: More Data Might not be all you need for Classification", 2023
(https://arxiv.org/abs/2304.05350): a CoAtNet/MaxViT-inspired hybrid with its own stack design and relative
self-attention layer, trained with a chosen augmentation and regularization recipe, for low-data regimes
(Galaxy10 DECals, CIFAR-100, Tiny ImageNet).

Scaled down (small-faithful): one block per stage (option ``blocks``), widths from 16 (``width``), head
dimension 16; on 8x8 digits the T stages see 4x4 and 2x2 maps. Deviations: (1) CoAtNet's stages all halve the
map (S0-S4, 32x); for 8x8-32x32 inputs only S2 and S4 downsample, and per :class:`Geometry` an axis keeps at
least two positions (a vector's (L, 1) column is never strided across); (2) the abstract gives neither
Astroformer's stage depths nor how its relative attention differs from CoAtNet's, so CoAtNet's layout and
relative bias are used; (3) its augmentation and regularization recipe (a training matter) is not part of the
architecture: the task's recipe trains it, as every architecture here; (4) no stochastic depth, no dropout.
TFLite converts it with builtins only (tested): the bias table's gather is folded into a constant.
"""

from __future__ import annotations

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._attention2d import RelativeBiasAttentionCore, squeeze_excite
from suites.architectures._layers import BN_MOMENTUM, Geometry, logits_model, model_name

L = keras.layers
EXPANSION = 4
SE_RATIO = 0.25
# (kind, width multiple of `width`, downsample in the stage's first block) of S1-S4.
STAGES = (("conv", 1, False), ("conv", 2, True), ("attention", 4, False), ("attention", 8, True))


def batch_norm(x: tf.Tensor, name: str) -> tf.Tensor:
    return L.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)


def shortcut(x: tf.Tensor, channels: int, pool: tuple[int, int], name: str) -> tf.Tensor:
    """``Proj(Pool(x))``: a 2x2 max pool where the block strides, a 1x1 conv where the width changes."""
    if pool != (1, 1):
        x = L.MaxPooling2D(pool, strides=pool, name=f"{name}_pool")(x)
    if x.shape[-1] != channels:
        x = L.Conv2D(channels, 1, name=f"{name}_proj")(x)
    return x


@register_method(
    "astroformer",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Astroformer: More Data Might not be all you need for Classification", 2023, "https://arxiv.org/abs/2304.05350"
    ),
    summary="CoAtNet-style C-C-T-T hybrid (MBConv stages, then relative-attention stages) for low data; small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
)
class Astroformer(ArchitectureMethod):
    default_options = {"width": 16, "blocks": 1, "head_dim": 16}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(input_shape)
        inputs, x = geometry.inputs()
        width = self.options["width"]
        for index in range(2):
            x = L.Conv2D(width, geometry.kernel(3), padding="same", use_bias=False, name=f"stem{index}_conv")(x)
            x = L.Activation("gelu", name=f"stem{index}_gelu")(batch_norm(x, f"stem{index}_bn"))
        for stage, (kind, multiple, downsample) in enumerate(STAGES, start=1):
            for block in range(self.options["blocks"]):
                step = geometry.stride(2, x) if downsample and block == 0 else (1, 1)
                name = f"s{stage}_block{block}"
                x = (self.mbconv if kind == "conv" else self.transformer)(x, width * multiple, step, geometry, name)
        x = L.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
        x = L.GlobalAveragePooling2D(name="pool")(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))

    def mbconv(self, x: tf.Tensor, channels: int, step: tuple[int, int], geometry: Geometry, name: str) -> tf.Tensor:
        residual = batch_norm(x, f"{name}_pre_bn")
        residual = L.Conv2D(x.shape[-1] * EXPANSION, 1, use_bias=False, name=f"{name}_expand")(residual)
        residual = L.Activation("gelu", name=f"{name}_expand_gelu")(batch_norm(residual, f"{name}_expand_bn"))
        residual = L.DepthwiseConv2D(geometry.kernel(3), strides=step, padding="same", use_bias=False,
                                     name=f"{name}_depthwise")(residual)  # fmt: skip
        residual = L.Activation("gelu", name=f"{name}_depthwise_gelu")(batch_norm(residual, f"{name}_depthwise_bn"))
        residual = squeeze_excite(residual, round(x.shape[-1] * SE_RATIO), "gelu", f"{name}_se")
        residual = L.Conv2D(channels, 1, name=f"{name}_project")(residual)
        return L.Add(name=f"{name}_add")([shortcut(x, channels, step, f"{name}_shortcut"), residual])

    def transformer(
        self, x: tf.Tensor, channels: int, step: tuple[int, int], geometry: Geometry, name: str
    ) -> tf.Tensor:
        heads = max(1, channels // self.options["head_dim"])
        normed = L.LayerNormalization(epsilon=1e-5, name=f"{name}_attention_norm")(x)
        if step != (1, 1):
            normed = L.MaxPooling2D(step, strides=step, name=f"{name}_attention_pool")(normed)
        grid = (normed.shape[1], normed.shape[2])
        tokens = L.Reshape((grid[0] * grid[1], normed.shape[-1]), name=f"{name}_tokens")(normed)
        query, key, value = (L.Dense(channels, name=f"{name}_{part}")(tokens) for part in ("query", "key", "value"))
        attended = RelativeBiasAttentionCore(heads, grid, name=f"{name}_attention")([query, key, value])
        attended = L.Reshape((*grid, channels), name=f"{name}_map")(L.Dense(channels, name=f"{name}_output")(attended))
        x = L.Add(name=f"{name}_attention_add")([shortcut(x, channels, step, f"{name}_shortcut"), attended])
        normed = L.LayerNormalization(epsilon=1e-5, name=f"{name}_mlp_norm")(x)
        hidden = L.Dense(channels * EXPANSION, activation="gelu", name=f"{name}_mlp_in")(normed)
        return L.Add(name=f"{name}_mlp_add")([x, L.Dense(channels, name=f"{name}_mlp_out")(hidden)])
