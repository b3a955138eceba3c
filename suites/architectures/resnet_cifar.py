"""CIFAR ResNets: depth 6n+2 (8, 20, 32, 56) and the CIFAR variant of ResNet-18.

Architecture, depth 6n+2 (He et al., section 4.2): a 3x3 conv with 16 channels, then three stages
of n basic blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 strides by 2),
global average pooling and the logits Dense layer. A basic block is conv3x3-BN-ReLU-conv3x3-BN,
plus the shortcut, then ReLU. Depth 18 is the ResNet-18 variant for CIFAR used by most compression
papers: a 3x3 stride-1 stem with 64 channels and no max pool, then four stages of [2, 2, 2, 2]
basic blocks with 64, 128, 256 and 512 channels (stages 2-4 stride by 2). ``width`` multiplies
the channels: the first stage has ``round(16 * width)`` (or ``round(64 * width)``) channels and
every later stage doubles it.

``shortcut`` picks what a block adds when its shape changes (identity otherwise), in the paper's
terms: "B" (default) is a 1x1 conv projection + BN; "A" is parameter-free, subsampling by the stride
(a 1x1 average pool) and padding the new channels with zeros (a zero-scaled copy concatenated),
as He et al. use for CIFAR.

Parameters on 32x32x3 with 10 classes (Keras also counts the BN moving statistics; "trainable" is
what PyTorch reports): depth 20 B 274,042 (272,474 trainable); depth 20 A 269,722 trainable, He et
al.'s 0.27M; depth 56 B 860,026 (855,770 trainable); depth 56 A 853,018 trainable, He et al.'s
0.85M; depth 18 11,183,562 (11,173,962 trainable, the usual 11.17M).

Against BiBench's ResNet-20 (htqin/BiBench: ``bibench/models/backbones/resnet.py`` ``BasicBlock`` and
``ResLayer``, ``resnet_cifar.py`` ``ResNet_CIFAR``, ``configs/_base_/models/resnet20.py``), the binarization
suite's default image backbone:

- block: the same. BiBench's ``BasicBlock`` is conv3x3 (stride s, no bias) - BN - act - conv3x3 (no bias)
  - BN, plus the shortcut, then act; the shortcut is the identity, or, where the stride or the width
  changes (``stride != 1 or in_channels != out_channels``), ``downsample`` = 1x1 conv (stride s, no bias)
  + BN and no activation: shortcut "B" here, the default. Binarized, its ``act`` is hard tanh, and only
  the two 3x3 convs take the operator (``conv_cfg``); ``downsample_conv_cfg=None`` keeps the 1x1
  projection float, which the operator protocol does too (``suites.binarization.operators``).
- stem and head: the same kinds (conv3x3 stride 1, no bias - BN - act, no max pool; global average pool
  - a float linear classifier), with one difference: BiBench's ``resnet20.py`` sets ``base_channels=16``
  but leaves ``stem_channels`` at its default 64, so its stem is 3 -> 64 channels and the first block of
  stage 1 (64 -> 16) has a float 1x1 projection. Here the stem has He et al.'s 16 channels and stage 1 has
  identity shortcuts only (the usual ResNet-20, 0.27M parameters).
- padding: BiBench pads 3x3 convs by 1 on every side; Keras "same" gives the same for stride 1 and, for
  stride 2 on an even size, pads bottom/right only (below).
- BN momentum 0.1 in PyTorch's convention, as here (``BN_MOMENTUM``).

Paper: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(https://arxiv.org/abs/1512.03385). Deviations: convs have no bias (BN follows each); Keras "same"
padding puts the extra pad row/column of a stride-2 3x3 conv at the bottom/right; strides that
would leave fewer than 2 positions along an axis are skipped (see ``_layers``), which changes
nothing on CIFAR.
"""

from __future__ import annotations

from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import (
    Geometry,
    basic_block,
    conv_bn_act,
    logits_model,
    model_name,
    projection_shortcut,
    scaled,
)

CIFAR_DEPTHS = (8, 20, 32, 56)
RESNET18_DEPTH = 18
SHORTCUTS = ("A", "B")


@register_method(
    "resnet-cifar",
    suite="architectures",
    kind="architecture",
    paper=Paper("Deep Residual Learning for Image Recognition", 2016, "https://arxiv.org/abs/1512.03385"),
    summary="CIFAR ResNet (depth 6n+2: 8/20/32/56) and a ResNet-18 variant",
    taxonomy=Taxonomy(applied="architecture"),
)
class ResNetCifar(ArchitectureMethod):
    default_options = {"depth": 20, "width": 1.0, "shortcut": "B"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        allowed = sorted((*CIFAR_DEPTHS, RESNET18_DEPTH))
        if self.options["depth"] not in allowed:
            raise ValueError(
                f"resnet-cifar depth must be one of {', '.join(map(str, allowed))} (6n+2 CIFAR ResNets, "
                f"or 18 for the ResNet-18 variant); got {self.options['depth']}"
            )
        if self.options["shortcut"] not in SHORTCUTS:
            raise ValueError(
                f"resnet-cifar shortcut must be one of {', '.join(SHORTCUTS)}; got {self.options['shortcut']}"
            )

    def stages(self) -> list[tuple[int, int]]:
        """(channels, blocks) per stage."""
        if self.options["depth"] == RESNET18_DEPTH:
            base, blocks = scaled(64, self.options["width"]), [2, 2, 2, 2]
        else:
            base, blocks = scaled(16, self.options["width"]), [(self.options["depth"] - 2) // 6] * 3
        return [(base * 2**index, count) for index, count in enumerate(blocks)]

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        stages = self.stages()
        x = conv_bn_act(x, stages[0][0], geometry.kernel(3))
        for index, (channels, blocks) in enumerate(stages):
            for block in range(blocks):
                step = 2 if index > 0 and block == 0 else 1
                x = basic_block(x, channels, geometry.stride(step, x), geometry, self.shortcut)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))

    def shortcut(self, x: tf.Tensor, channels: int, strides: tuple[int, int]) -> tf.Tensor:
        if self.options["shortcut"] == "B" or (strides == (1, 1) and x.shape[-1] == channels):
            return projection_shortcut(x, channels, strides)
        if strides != (1, 1):
            x = keras.layers.AveragePooling2D(pool_size=1, strides=strides)(x)
        # Stages double their channels, so the new half is a zero-scaled copy of the old one.
        zeros = keras.layers.Rescaling(0.0)(x)
        return keras.layers.Concatenate()([x, zeros])
