"""ResNet-RS, CIFAR-sized: a bottleneck ResNet-D with squeeze-and-excitation and stochastic depth.

Architecture (Bello et al., section 4.1 and their Figure/Table of ResNet-RS changes), with ``base`` = b:

    stem (ResNet-D):  conv3x3(b/2)-BN-ReLU, conv3x3(b/2)-BN-ReLU, conv3x3(b)-BN-ReLU
    3 stages of n = (depth - 2) / 9 bottleneck blocks, bottleneck widths b, 2b, 4b, outputs 4b, 8b, 16b;
    the first block of stages 2 and 3 strides by 2
    GAP - dropout (``dropout``, ResNet-RS's 0.25) - logits

    block:  r = conv1x1(w)-BN-ReLU - conv3x3(w, stride s)-BN-ReLU - conv1x1(4w)-BN - SE(0.25) - drop
            y = ReLU(r + shortcut(x))

The stride sits on the 3x3 conv (ResNet-B). The shortcut (ResNet-D) is the identity where the shape is kept;
where it strides, a 2x2 average pool with stride 2 then a 1x1 conv + BN, so no activation is skipped by a
strided 1x1; where only the width changes (the first block), a 1x1 conv + BN. SE (``se_ratio`` 0.25) gates
the 4w channels through max(1, int(4w * 0.25)) of them (``_layers.squeeze_excitation``, as the official code
and ``keras.applications.ResNetRS``). Stochastic depth drops a block's whole residual per sample during
training, scaling the kept ones by 1 / (1 - p) (a ``Dropout`` with noise shape (batch, 1, 1, 1); the identity
at inference), at rate p = ``drop_rate`` * (stage + 1) / (stages + 1) for stage 1..3, the official code's
linear rule counting the stem as the first stage (``get_survival_probability`` there, which despite its name
returns the drop rate). ``depth`` counts 9n + 2 layers as the CIFAR bottleneck ResNets do (29: n = 3).

Paper: Bello, Fedus, Du, Cubuk, Srinivas, Lin, Shlens & Zoph, "Revisiting ResNets: Improved Training and
Scaling Strategies", NeurIPS 2021 (https://arxiv.org/abs/2103.07579); checked against
``keras.applications.ResNetRS`` (tf_keras ``applications/resnet_rs.py``). Scale: small-faithful (the block,
stem, shortcut, SE and stochastic depth are the paper's; the network is CIFAR-sized). Deviations: three
stages of CIFAR widths instead of four ImageNet ones ([3, 4, 6, 3] at 64-512), and the stem keeps the
resolution (no stride-2 first conv, and no stride-2 conv in place of the max pool), as CIFAR ResNets do; the
paper's training recipe (350 epochs, RandAugment, label smoothing, EMA, weight decay 4e-5) is not part of the
architecture: the suite trains every backbone with the task's recipe. Keras "same" padding instead of the
official fixed padding of strided convs; BN momentum 0.9 (``_layers.BN_MOMENTUM``) instead of 0.99.
Strides that would leave fewer than 2 positions along an axis are skipped (``_layers``).
"""

from __future__ import annotations

from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import (
    Geometry,
    bn_act,
    conv_bn_act,
    logits_model,
    model_name,
    squeeze_excitation,
)

STAGES = 3
EXPANSION = 4
LAYERS_PER_BLOCK = 3


@register_method(
    "resnet-rs",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Revisiting ResNets: Improved Training and Scaling Strategies", 2021, "https://arxiv.org/abs/2103.07579"
    ),
    summary="ResNet-RS (small-faithful): bottleneck ResNet-D stem and avg-pool shortcuts, SE 0.25, stochastic depth",
    taxonomy=Taxonomy(applied="architecture"),
)
class ResNetRS(ArchitectureMethod):
    default_options = {"depth": 29, "base": 16, "se_ratio": 0.25, "drop_rate": 0.0, "dropout": 0.25}

    def __init__(self, **options: Any):
        super().__init__(**options)
        depth = self.options["depth"]
        if not isinstance(depth, int) or depth < 11 or (depth - 2) % (STAGES * LAYERS_PER_BLOCK):
            raise ValueError(f"resnet-rs depth must be 9n + 2 with n >= 1 (11, 20, 29, 56, ...); got {depth}")
        if self.options["base"] < 2:
            raise ValueError(f"resnet-rs base must be at least 2 (its stem has base / 2); got {self.options['base']}")

    def blocks_per_stage(self) -> int:
        return (self.options["depth"] - 2) // (STAGES * LAYERS_PER_BLOCK)

    def stage_drop_rate(self, stage: int) -> float:
        """The stochastic-depth rate of 0-based ``stage``: linear in the stage, the stem counted as the first."""
        return self.options["drop_rate"] * (stage + 2) / (STAGES + 1)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        base = self.options["base"]
        for channels in (base // 2, base // 2, base):
            x = conv_bn_act(x, channels, geometry.kernel(3))
        for stage in range(STAGES):
            for block in range(self.blocks_per_stage()):
                step = 2 if stage > 0 and block == 0 else 1
                x = self.bottleneck(x, base * 2**stage, geometry.stride(step, x), geometry, stage)
        x = keras.layers.GlobalAveragePooling2D()(x)
        if self.options["dropout"] > 0:
            x = keras.layers.Dropout(self.options["dropout"])(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))

    def bottleneck(
        self, x: tf.Tensor, width: int, strides: tuple[int, int], geometry: Geometry, stage: int
    ) -> tf.Tensor:
        shortcut = resnet_d_shortcut(x, EXPANSION * width, strides)
        residual = conv_bn_act(x, width, geometry.kernel(1))
        residual = conv_bn_act(residual, width, geometry.kernel(3), strides)
        residual = conv_bn_act(residual, EXPANSION * width, geometry.kernel(1), activation=None)
        if self.options["se_ratio"] > 0:
            residual = squeeze_excitation(residual, self.options["se_ratio"])
        residual = stochastic_depth(residual, self.stage_drop_rate(stage))
        return keras.layers.ReLU()(keras.layers.Add()([shortcut, residual]))


def resnet_d_shortcut(x: tf.Tensor, channels: int, strides: tuple[int, int]) -> tf.Tensor:
    """The identity where the shape is kept; else (a ``strides`` average pool, where it strides) a 1x1 conv + BN."""
    if strides == (1, 1) and x.shape[-1] == channels:
        return x
    if strides != (1, 1):
        x = keras.layers.AveragePooling2D(pool_size=strides, strides=strides, padding="same")(x)
    x = keras.layers.Conv2D(channels, 1, use_bias=False)(x)
    return bn_act(x, activation=None)


def stochastic_depth(residual: tf.Tensor, rate: float) -> tf.Tensor:
    """Drop the whole ``residual`` of a sample with probability ``rate`` in training (kept ones scaled up)."""
    if rate <= 0:
        return residual
    return keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1))(residual)
