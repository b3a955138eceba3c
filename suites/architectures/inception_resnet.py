"""Inception-ResNet-v2, CIFAR-sized: residual Inception-A/B/C blocks with scaled residuals, and reduction blocks.

Architecture (Szegedy et al., Figures 15-19 and Table 1's v2 column), every width times ``width`` / 384:

    stem      conv3x3(32)-conv3x3(32)-conv3x3(64)-conv3x3(384), stride 1           grid: 384 channels
    n  x A    [1x1(32) | 1x1(32)-3x3(32) | 1x1(32)-3x3(48)-3x3(64)]               -> 1x1(384, linear)
    Red.-A    [maxpool3x3/2 | 3x3(384)/2 | 1x1(256)-3x3(256)-3x3(384)/2]          grid: 1152
    2n x B    [1x1(192) | 1x1(128)-1x7(160)-7x1(192)]                             -> 1x1(1152, linear)
    Red.-B    [maxpool3x3/2 | 1x1(256)-3x3(384)/2 | 1x1(256)-3x3(288)/2 | 1x1(256)-3x3(288)-3x3(320)/2]  2144
    n  x C    [1x1(192) | 1x1(192)-1x3(224)-3x1(256)]                             -> 1x1(2144, linear)
    GAP - dropout (``dropout``, the paper's keep probability 0.8) - logits

A residual block concatenates its branches (each conv: conv-BN-ReLU), maps them back to its input's width by a
1x1 conv with bias and no activation or BN, and adds that, scaled, to its input, then ReLU:

    y = ReLU(x + s * W_up concat(branches(x))),   s = 0.17 (A), 0.10 (B), 0.20 (C),

the paper's "scaling of the residuals" (factors between 0.1 and 0.3 stabilise training of wide residual
Inceptions; these three are the reference implementation's, ``keras.applications.InceptionResNetV2``). The
1:2:1 block counts keep the paper's 5:10:5 (Figure 15) proportion; ``blocks`` = n.

On vector inputs (``_layers.Geometry``) a 1 x k kernel becomes 1 x 1 and a k x 1 one stays, so the factorised
pair still spans k positions along the length.

Paper: Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", AAAI 2017 (https://arxiv.org/abs/1602.07261); block wiring checked against
``keras.applications.InceptionResNetV2``. Scale: small-faithful (the three residual blocks, residual
scaling and the two reduction blocks are the paper's; widths, block counts and the stem are scaled down).
Deviations: the stem's first three convs keep the resolution (stride 1, "same") and its three
concatenations that bring 299x299 to 35x35 (Figure 3) are one 3x3 conv to the grid width, so the A blocks
see the input's full resolution (32x32, 8x8); reduction blocks use "same" padding, so a 3x3/2 halves the
grid exactly (valid padding would take 8x8 to 3x3); the paper's v2 widths, not the reference code's (its
grid after the stem is 320 and after reduction-B 2080, with a final 1x1 conv to 1536 before pooling, not
in the paper); BN keeps its scale (the reference has ``scale=False``, since a ReLU follows), momentum 0.9
(``_layers.BN_MOMENTUM``). Strides that would leave fewer than 2 positions along an axis are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import Geometry, conv_bn_act, logits_model, model_name, scaled

PAPER_WIDTH = 384
# Residual scales of blocks A, B, C (the reference implementation's, within the paper's 0.1-0.3).
SCALES = {"a": 0.17, "b": 0.10, "c": 0.20}

# A branch: (kernel height, kernel width, channels) convs in order.
Branch = Sequence[tuple[int, int, int]]
BLOCK_BRANCHES: dict[str, tuple[Branch, ...]] = {
    "a": (((1, 1, 32),), ((1, 1, 32), (3, 3, 32)), ((1, 1, 32), (3, 3, 48), (3, 3, 64))),
    "b": (((1, 1, 192),), ((1, 1, 128), (1, 7, 160), (7, 1, 192))),
    "c": (((1, 1, 192),), ((1, 1, 192), (1, 3, 224), (3, 1, 256))),
}
# Reduction blocks: their conv branches, the last conv of each strided; a max pool branch besides.
REDUCTION_BRANCHES: dict[str, tuple[Branch, ...]] = {
    "a": (((3, 3, 384),), ((1, 1, 256), (3, 3, 256), (3, 3, 384))),
    "b": (((1, 1, 256), (3, 3, 384)), ((1, 1, 256), (3, 3, 288)), ((1, 1, 256), (3, 3, 288), (3, 3, 320))),
}
STEM = (32, 32, 64, PAPER_WIDTH)


@register_method(
    "inception-resnet",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
        2017,
        "https://arxiv.org/abs/1602.07261",
    ),
    summary="Inception-ResNet-v2 (small-faithful): residual Inception-A/B/C blocks scaled by 0.1-0.2, reductions",
    taxonomy=Taxonomy(applied="architecture"),
)
class InceptionResNet(ArchitectureMethod):
    default_options = {"width": 96, "blocks": 1, "dropout": 0.2}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["blocks"] < 1 or self.options["width"] < 1:
            raise ValueError(f"inception-resnet width and blocks must be at least 1; got {self.options}")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        width = self.scaler()
        for channels in STEM:
            x = conv_bn_act(x, width(channels), geometry.kernel(3))
        for block, repeats in (("a", 1), ("b", 2), ("c", 1)):
            for _ in range(repeats * self.options["blocks"]):
                x = residual_block(x, BLOCK_BRANCHES[block], SCALES[block], geometry, width)
            if block in REDUCTION_BRANCHES:
                x = reduction_block(x, REDUCTION_BRANCHES[block], geometry, width)
        x = keras.layers.GlobalAveragePooling2D()(x)
        if self.options["dropout"] > 0:
            x = keras.layers.Dropout(self.options["dropout"])(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))

    def scaler(self) -> Callable[[int], int]:
        """A paper width -> this model's: times ``width`` / 384, at least one channel."""
        return lambda channels: scaled(channels, self.options["width"] / PAPER_WIDTH)


def branch(
    x: tf.Tensor, convs: Branch, geometry: Geometry, width: Callable[[int], int], last_strides=(1, 1)
) -> tf.Tensor:
    """Conv-BN-ReLU layers in order, the last one with ``last_strides``."""
    for index, (height, kernel_width, channels) in enumerate(convs):
        strides = last_strides if index == len(convs) - 1 else (1, 1)
        x = conv_bn_act(x, width(channels), geometry.rectangle(height, kernel_width), strides)
    return x


def residual_block(
    x: tf.Tensor, branches: Sequence[Branch], scale: float, geometry: Geometry, width: Callable[[int], int]
) -> tf.Tensor:
    """ReLU(x + scale * linear 1x1(concat of the branches)), the 1x1 back to x's channels (module docstring)."""
    mixed = keras.layers.Concatenate()([branch(x, convs, geometry, width) for convs in branches])
    up = keras.layers.Conv2D(x.shape[-1], geometry.kernel(1))(mixed)
    up = keras.layers.Rescaling(scale)(up)
    return keras.layers.ReLU()(keras.layers.Add()([x, up]))


def reduction_block(
    x: tf.Tensor, branches: Sequence[Branch], geometry: Geometry, width: Callable[[int], int]
) -> tf.Tensor:
    """A 3x3 max pool with stride 2 beside conv branches whose last conv strides by 2, concatenated."""
    strides = geometry.stride(2, x)
    pooled = keras.layers.MaxPooling2D(geometry.kernel(3), strides=strides, padding="same")(x)
    convs = [branch(x, convs, geometry, width, strides) for convs in branches]
    return keras.layers.Concatenate()([pooled, *convs])
