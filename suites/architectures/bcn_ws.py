"""Batch-Channel Normalization + Weight Standardization, as a drop-in for a backbone's convs and batch norms.

Weight Standardization (WS): every conv uses its kernel standardized per output filter, over that filter's
fan-in (the kh x kw x C_in / groups weights it sums):

    W^_f = (W_f - mean(W_f)) / (std(W_f) + eps),   std with Bessel's correction (n - 1), eps = 1e-5,

as the official code's ``Conv2d`` does; the raw W stays the trained variable, so WS smooths the loss
landscape without changing what the layer can express up to its scale. A depthwise conv is a grouped conv
with one input channel per group: each of its filters is standardized over its kh x kw window.

Batch-Channel Normalization (BCN): every batch norm becomes a batch norm (the replaced layer's momentum,
epsilon and per-channel affine) followed by a channel normalization: a group norm over each sample's
groups of channels (``groups`` = 32, lowered until it divides the channel count), with a learned affine
per group (gamma_g, beta_g, as the official ``BCNorm``), eps = 1e-5:

    z = BN(x),   y_{n,.,g} = (z_{n,.,g} - mu_{n,g}) / sqrt(s^2_{n,g} + eps) * gamma_g + beta_g,

where mu_{n,g}, s^2_{n,g} run over the positions and the channels of group g in sample n. The batch part
uses batch statistics, the channel part per-sample ones: the pair keeps BN's benefit and, through the
channel part, keeps the network away from elimination singularities (channels that are always zero).

Applied to the backbone named by ``backbone`` (default ``resnet-cifar``). A conv with a fan-in of one weight
(a 1 x 1 conv on one channel), whose standard deviation is undefined, is kept as it is.

TFLite: WS folds away at export: the standardized kernel is a function of constant variables, so the
converter folds it into the CONV_2D / DEPTHWISE_CONV_2D constant weights (no op of its own). BCN's batch part
is a per-channel affine at inference (MUL / ADD, folded into the conv before it where the converter can);
its channel part stays: per layer RESHAPE, MEAN, SUB, SQUARE, MEAN, RSQRT, MUL and the affine (the first
of the two MEAN ops in each is the only one WS or BCN adds that BN lacks, besides the variance). Builtins
only; tests/test_bcn_ws.py converts ResNet-8 (9 CONV_2D, 2 MEAN per BCN + 1 for the pooling) and checks it
against Keras.

Paper: Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with Batch-Channel Normalization and Weight
Standardization", 2019 (https://arxiv.org/abs/1903.10520); checked against the official code
(joe-siyuan-qiao/WeightStandardization, Batch-Channel-Normalization). Scale: small-faithful (the layers are
the paper's; the backbones are the suite's CIFAR-sized ones, trained with ordinary batches). Deviations:
the batch part uses each batch's statistics (plain BN, the paper's large-batch BCN); the micro-batch
variant that normalizes with moving-average estimates in training too (the official ``EstBN``) is not
implemented, nor is the paper's detection / segmentation setting.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dropin import DropInArchitecture, channel_groups, group_axes, grouped

Shape = tuple[int, ...]
WS_EPSILON = 1e-5
# Elementwise operations per element of the channel part, as the complexity track counts GroupNormalization.
CHANNEL_NORM_OPS = 5
BATCH_NORM_OPS = 2


def standardized(kernel: tf.Tensor, fan_in_axes: tuple[int, ...], epsilon: float = WS_EPSILON) -> tf.Tensor:
    """``kernel`` with zero mean and unit (n - 1) standard deviation over ``fan_in_axes``, per output filter."""
    fan_in = math.prod(kernel.shape[axis] for axis in fan_in_axes)
    centred = kernel - tf.reduce_mean(kernel, axis=fan_in_axes, keepdims=True)
    std = tf.sqrt(tf.reduce_sum(tf.square(centred), axis=fan_in_axes, keepdims=True) / (fan_in - 1))
    return centred / (std + epsilon)


@keras.utils.register_keras_serializable(package="effbench")
class WSConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` whose kernel is standardized per output filter before each convolution (module docstring)."""

    fan_in_axes = (0, 1, 2)  # kernel (kh, kw, C_in / groups, C_out)

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return super().convolution_op(inputs, standardized(kernel, self.fan_in_axes))


@keras.utils.register_keras_serializable(package="effbench")
class WSDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """A ``DepthwiseConv2D`` whose kernel is standardized per filter, over its kh x kw window."""

    fan_in_axes = (0, 1)  # kernel (kh, kw, C_in, multiplier)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = keras.backend.depthwise_conv2d(
            inputs,
            standardized(self.depthwise_kernel, self.fan_in_axes),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = keras.backend.bias_add(outputs, self.bias, data_format=self.data_format)
        return self.activation(outputs)


@keras.utils.register_keras_serializable(package="effbench")
class BatchChannelNormalization(keras.layers.Layer):
    """A batch norm, then a group norm with a per-group affine over each sample (module docstring)."""

    def __init__(
        self, groups: int = 32, momentum: float = 0.99, epsilon: float = 1e-3, channel_epsilon: float = 1e-5,
        **kwargs: Any,
    ):  # fmt: skip
        super().__init__(**kwargs)
        self.groups, self.momentum = int(groups), float(momentum)
        self.epsilon, self.channel_epsilon = float(epsilon), float(channel_epsilon)
        self.batch_norm = keras.layers.BatchNormalization(momentum=self.momentum, epsilon=self.epsilon, name="bn")

    def build(self, input_shape: Any) -> None:
        self.channel_groups = channel_groups(int(input_shape[-1]), self.groups)
        # Under its own scope, so the weights are named apart (x/bn/gamma, x/gamma).
        with tf.name_scope(self.batch_norm.name):
            self.batch_norm.build(input_shape)
        # (groups, 1): broadcast over each group's channels in the grouped layout.
        self.gamma = self.add_weight(name="gamma", shape=(self.channel_groups, 1), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(self.channel_groups, 1), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        normalized = grouped(self.batch_norm(inputs, training=training), self.channel_groups)
        axes = group_axes(inputs)
        mean = tf.reduce_mean(normalized, axis=axes, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(normalized, mean), axis=axes, keepdims=True)
        channel_normalized = (normalized - mean) * tf.math.rsqrt(variance + self.channel_epsilon)
        return tf.reshape(channel_normalized * self.gamma + self.beta, [-1, *inputs.shape[1:]])

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        return 0, (BATCH_NORM_OPS + CHANNEL_NORM_OPS) * math.prod(output_shapes[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "groups": self.groups,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "channel_epsilon": self.channel_epsilon,
        }


WEIGHT_STANDARDIZED = {keras.layers.Conv2D: WSConv2D, keras.layers.DepthwiseConv2D: WSDepthwiseConv2D}


def fan_in(layer: keras.layers.Layer) -> int:
    """The number of weights one output filter of a conv or depthwise conv ``layer`` sums."""
    kernel = layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel
    return math.prod(kernel.shape[axis] for axis in WEIGHT_STANDARDIZED[type(layer)].fan_in_axes)


@register_method(
    "bcn-ws",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Micro-Batch Training with Batch-Channel Normalization and Weight Standardization",
        2019,
        "https://arxiv.org/abs/1903.10520",
    ),
    summary="every conv weight-standardized, every BN a batch-channel norm (BN then group norm); small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
)
class BCNWS(DropInArchitecture):
    default_options: ClassVar[dict[str, Any]] = {**DropInArchitecture.default_options, "groups": 32}

    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            return BatchChannelNormalization(
                self.options["groups"], config["momentum"], config["epsilon"], name=layer.name
            )
        if type(layer) not in WEIGHT_STANDARDIZED or fan_in(layer) < 2:
            return None
        return WEIGHT_STANDARDIZED[type(layer)].from_config(config)
