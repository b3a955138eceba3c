r"""FFNet ("fuss-free network"), small-faithful: a ResNet of basic blocks and a tiny FPN-like head for segmentation.

The paper's claim: a plain encoder-decoder, a ResNet-like backbone with basic blocks (whose effective receptive
field is much larger than a bottleneck ResNet's) and a small multi-scale convolutional head, matches HRNet,
FANet and DDRNet on Cityscapes, with no dilated convolution and no other operation that is slow on current
hardware or that acceleration tools (quantizers, compilers) handle badly: every layer is a convolution, a
batch norm, a ReLU, an addition, a nearest resize or a concatenation.

Network (the official code's mobile FFNet-S with head B, ``models/ffnet_S_mobile.py`` and
``models/ffnet_blocks.py``), with every channel count times ``width``:

- stem (``ResNetS``): conv3x3(32) stride 2, conv3x3(64) stride 2 (conv-BN-ReLU each): stride 4;
- four stages of ``blocks`` basic blocks (conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU; a 1x1 conv + BN
  shortcut where the shape changes) with 64, 128, 192, 320 channels, the first block of stages 2-4 striding
  by 2: features :math:`F_4, F_8, F_{16}, F_{32}` at strides 4, 8, 16, 32;
- head (``FFNetUpHead``, type B): adapters, a 1x1 conv-BN-ReLU per stage to :math:`A_k` with 64, 128, 128, 256
  channels; a top-down path (``UpBranch``)

  .. math::

      T_{32} = A_{32},\qquad T_k = \mathrm{up}\big(\mathrm{cbr}_{1\times1}(T_{2k})\big) + A_k \quad (k = 16, 8, 4)

  where the 1x1 conv-BN-ReLU maps :math:`T_{2k}` to :math:`A_k`'s width and up is a nearest 2x upsampling
  (the mobile head's); each :math:`T_k` then goes through a conv3x3-BN-ReLU to :math:`S_k` with 96, 96, 64, 32
  channels (k = 4, 8, 16, 32);
- the :math:`S_k` are upsampled (nearest) to stride 4 and concatenated (288 channels), and the segmentation
  head B, conv3x3(256)-BN-ReLU and conv3x3 to the classes, gives logits at stride 4, upsampled bilinearly to
  the input's resolution (where the official training and evaluation code resizes the logits).

Heads by task kind (:mod:`suites.architectures._dense`): segmentation as above (``seg-shapes``); any other kind
gets the classification :meth:`build`, the stem and the stages, global average pooling of :math:`F_{32}` and a
``logits`` Dense layer (vectors (L,) as (L, 1, 1) with k x 1 kernels). No super-resolution head.

Paper: Mehta, Skliar, Ben Yahia, Borse, Porikli, Habibian & Blankevoort, "Simple and Efficient Architectures
for Semantic Segmentation", CVPR 2022 Workshops (Efficient Deep Learning for Computer Vision)
(https://arxiv.org/abs/2206.08236); official code github.com/Qualcomm-AI-research/FFNet.

Scale ``small-faithful``: ``width`` 0.25 (stem 8, 16; stages 16, 32, 48, 80; adapters 16, 32, 32, 64; head
24, 24, 16, 8 and 64) and ``blocks`` 2 per stage (a ResNet-18-like depth; FFNet-40S has 4, 5, 6, 4): on a
64x64 input the stages run at 16x16 down to 2x2, so the deepest features see the whole image. Deviations:

- the same number of blocks in every stage (one option) rather than the paper's per-stage counts;
- the output stride 4 of the GPU models and the pre-downsampled mobile models (stage strides 1, 2, 2, 2);
  the mobile "_D" models stride stage 1 as well (output stride 8), too coarse for 64x64 scenes;
- no ImageNet pre-training (the paper initializes the backbone from it); trained from scratch by the task's
  recipe;
- an axis too short or odd to halve is not strided (nor upsampled back): nothing changes on 64x64 inputs;
- the classification head is global average pooling, not the paper's HRNet-style multi-scale head;
- the complexity track counts no arithmetic for the final bilinear resize (it lists the layer as uncounted,
  as it does ``fcn-small``'s bilinear upsampling).
"""

from __future__ import annotations

import math
from typing import Any

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dense import DenseArchitecture, halving_step
from suites.architectures._layers import Geometry, basic_block, conv_bn_act, logits_model, model_name, scaled

# Channel counts of the official mobile FFNet-S with head B, before ``width``.
STEM = (32, 64)
STAGES = (64, 128, 192, 320)
ADAPTERS = (64, 128, 128, 256)
SMOOTHED = (96, 96, 64, 32)
HEAD = 256


@register_method(
    "seg-efficient",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Simple and Efficient Architectures for Semantic Segmentation", 2022, "https://arxiv.org/abs/2206.08236"
    ),
    summary="small-faithful FFNet: strided 3x3 stem, ResNet basic-block stages (strides 4-32), FPN-like head of "
    "1x1 adapters, top-down nearest upsampling + add, 3x3 smoothing, concat, conv head; no dilation",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class SegEfficient(DenseArchitecture):
    default_options = {"width": 0.25, "blocks": 2}

    def __init__(self, **options: Any):
        super().__init__(**options)
        blocks, width = self.options["blocks"], self.options["width"]
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"seg-efficient option blocks is {blocks!r}; expected a positive integer")
        if isinstance(width, bool) or not isinstance(width, int | float) or width <= 0:
            raise ValueError(f"seg-efficient option width is {width!r}; expected a positive number")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        features, _ = self.backbone(x, geometry)
        pooled = keras.layers.GlobalAveragePooling2D()(features[-1])
        return logits_model(inputs, pooled, num_classes, model_name(self.spec.slug, self.options))

    def segmenter(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs = keras.Input(shape=input_shape)
        features, steps = self.backbone(inputs, geometry)
        logits = self.head(features, steps[2:], num_classes, geometry)
        stem_step = tuple(math.prod(axis) for axis in zip(*steps[:2], strict=True))
        if stem_step != (1, 1):
            logits = keras.layers.UpSampling2D(size=stem_step, interpolation="bilinear", name="logits")(logits)
        return keras.Model(inputs, logits, name=model_name(f"{self.spec.slug}-segmentation", self.options))

    def widths(self, counts: tuple[int, ...]) -> list[int]:
        """The official channel counts ``counts`` times ``width``."""
        return [scaled(count, self.options["width"]) for count in counts]

    def backbone(self, x: tf.Tensor, geometry: Geometry) -> tuple[list[tf.Tensor], list[tuple[int, int]]]:
        """(F_4, F_8, F_16, F_32), and the step of each downsampling: the stem's two, then stages 2-4's."""
        steps = []
        for index, channels in enumerate(self.widths(STEM)):
            steps.append(halving_step(geometry, x))
            x = conv_bn_act(x, channels, geometry.kernel(3), steps[-1], name=f"stem{index + 1}")
        features = []
        for stage, channels in enumerate(self.widths(STAGES)):
            for block in range(self.options["blocks"]):
                strides = (1, 1)
                if stage > 0 and block == 0:
                    strides = halving_step(geometry, x)
                    steps.append(strides)
                x = basic_block(x, channels, strides, geometry)
            features.append(x)
        return features, steps

    def head(
        self, features: list[tf.Tensor], steps: list[tuple[int, int]], num_classes: int, geometry: Geometry
    ) -> tf.Tensor:
        """Head B on (F_4 ... F_32): logits at stride 4. ``steps``: from each level to the next coarser one."""
        adapters = self.widths(ADAPTERS)
        adapted = [conv_bn_act(feature, width, (1, 1), name=f"adapter{2 ** (level + 2)}")
                   for level, (feature, width) in enumerate(zip(features, adapters, strict=True))]  # fmt: skip
        top_down = adapted[-1]
        smoothed = [conv_bn_act(top_down, self.widths(SMOOTHED)[-1], geometry.kernel(3), name="smooth32")]
        for level in (2, 1, 0):
            stride = 2 ** (level + 2)
            lateral = conv_bn_act(top_down, adapters[level], (1, 1), name=f"lateral{stride * 2}to{stride}")
            lateral = self.upsampled(lateral, [steps[level]], f"up{stride * 2}to{stride}")
            top_down = keras.layers.Add(name=f"top_down{stride}")([lateral, adapted[level]])
            width = self.widths(SMOOTHED)[level]
            smoothed.insert(0, conv_bn_act(top_down, width, geometry.kernel(3), name=f"smooth{stride}"))
        to_stride4 = [smoothed[0]] + [
            self.upsampled(map_, steps[:level], f"smooth{2 ** (level + 2)}_to4") for level, map_ in enumerate(smoothed)
            if level > 0
        ]  # fmt: skip
        merged = keras.layers.Concatenate(name="multiscale")(to_stride4)
        x = conv_bn_act(merged, scaled(HEAD, self.options["width"]), geometry.kernel(3), name="seg_head")
        return keras.layers.Conv2D(num_classes, geometry.kernel(3), padding="same", name="stride4_logits")(x)

    @staticmethod
    def upsampled(x: tf.Tensor, steps: list[tuple[int, int]], name: str) -> tf.Tensor:
        """``x`` brought up by the product of ``steps`` (nearest), undoing those downsamplings."""
        size = tuple(math.prod(axis) for axis in zip(*steps, strict=True))
        return x if size == (1, 1) else keras.layers.UpSampling2D(size=size, name=name)(x)
