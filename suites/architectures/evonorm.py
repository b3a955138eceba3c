"""EvoNorm: evolved normalization-activation layers, as a drop-in for a backbone's BN-ReLU pairs.

Mechanism, per channel c with learned gamma_c, beta_c, v_c (v initialised to 1), eps = 1e-5:

    B0:  y = x / max( sqrt(s^2_{b,h,w}(x) + eps),  v * x + sqrt(s^2_{h,w}(x) + eps) ) * gamma + beta
    S0:  y = x * sigmoid(v * x) / sqrt(s^2_{h,w,c/g}(x) + eps) * gamma + beta

where s^2_{b,h,w} is the batch variance of the channel (a moving average with decay 0.9 at inference,
as batch norm keeps one), s^2_{h,w} the instance variance of the channel in one sample, and
s^2_{h,w,c/g} the variance over one sample's group of channels (``groups`` = 32, lowered until it
divides the channel count). One layer replaces a batch norm and the rectifier after it; a batch norm
that no rectifier follows (before a residual add, a linear bottleneck) becomes the affine
``x * gamma + beta`` alone, as the official code's ``nonlinearity=False``. Unlike batch norm, neither
folds into the preceding convolution in TFLite: the edge track's latency shows the cost.

Applied to the backbone named by ``backbone`` (default ``resnet-cifar``; ``variant`` is ``b0`` or ``s0``).

Paper: Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers", NeurIPS 2020
(https://arxiv.org/abs/2004.02967); checked against the official TensorFlow code (tensorflow/tpu,
``models/official/resnet/resnet_model.py``, ``evonorm``). Deviations: the last norm of a residual branch
keeps the backbone's gamma initialisation (ones) instead of the official ``init_zero``; only the layers
themselves are reproduced, not the evolutionary search that found them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dropin import (
    DropInArchitecture,
    channel_groups,
    group_axes,
    grouped,
    inbound_layers,
    is_rectifier,
    outbound_layers,
)

VARIANTS = ("b0", "s0")
Shape = tuple[int, ...]
# Elementwise operations per output element: moments (2), the denominator's terms, the division, the affine.
ELEMENTWISE = {("b0", True): 9, ("s0", True): 10, ("b0", False): 2, ("s0", False): 2}


@keras.utils.register_keras_serializable(package="effbench")
class EvoNorm(keras.layers.Layer):
    """EvoNorm-B0 / -S0 over the last axis of a (batch, ..., channels) tensor (module docstring)."""

    def __init__(
        self,
        variant: str = "b0",
        nonlinearity: bool = True,
        groups: int = 32,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"EvoNorm '{self.name}': variant '{variant}' is not one of {', '.join(VARIANTS)}")
        self.variant, self.nonlinearity, self.groups = variant, bool(nonlinearity), int(groups)
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        if self.nonlinearity:
            self.v = self.add_weight(name="v", shape=(channels,), initializer="ones")
        if self.nonlinearity and self.variant == "b0":
            self.moving_variance = self.add_weight(
                name="moving_variance", shape=(channels,), initializer="ones", trainable=False
            )
        self.channel_groups = channel_groups(channels, self.groups)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not self.nonlinearity:
            return inputs * self.gamma + self.beta
        if self.variant == "s0":
            normalized = self._over_group_std(inputs * tf.sigmoid(self.v * inputs), inputs)
        else:
            spatial = list(range(1, inputs.shape.rank - 1))
            instance_std = tf.sqrt(tf.math.reduce_variance(inputs, axis=spatial, keepdims=True) + self.epsilon)
            normalized = inputs / tf.maximum(self._batch_std(inputs, training), self.v * inputs + instance_std)
        return normalized * self.gamma + self.beta

    def _batch_std(self, inputs: tf.Tensor, training: bool | None) -> tf.Tensor:
        if training:
            variance = tf.math.reduce_variance(inputs, axis=list(range(inputs.shape.rank - 1)))
            self.moving_variance.assign_sub((self.moving_variance - variance) * (1.0 - self.momentum))
        else:
            variance = self.moving_variance
        return tf.sqrt(variance + self.epsilon)

    def _over_group_std(self, numerator: tf.Tensor, inputs: tf.Tensor) -> tf.Tensor:
        """``numerator`` divided by ``inputs``' standard deviation over each sample's channel group."""
        variance = tf.math.reduce_variance(grouped(inputs, self.channel_groups), axis=group_axes(inputs), keepdims=True)
        quotient = grouped(numerator, self.channel_groups) / tf.sqrt(variance + self.epsilon)
        return tf.reshape(quotient, [-1, *inputs.shape[1:]])

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        return 0, ELEMENTWISE[(self.variant, self.nonlinearity)] * math.prod(output_shapes[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "variant": self.variant,
            "nonlinearity": self.nonlinearity,
            "groups": self.groups,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
        }


@register_method(
    "evonorm",
    suite="architectures",
    kind="architecture",
    paper=Paper("Evolving Normalization-Activation Layers", 2020, "https://arxiv.org/abs/2004.02967"),
    summary="a backbone whose BN-ReLU pairs are EvoNorm-B0 or -S0 layers (`variant`), other BNs affine",
    taxonomy=Taxonomy(applied="architecture"),
)
class EvoNormArchitecture(DropInArchitecture):
    default_options: ClassVar[dict[str, Any]] = {**DropInArchitecture.default_options, "variant": "b0"}

    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, keras.layers.BatchNormalization):
            rectified = any(is_rectifier(consumer) for consumer in outbound_layers(layer))
            return EvoNorm(self.options["variant"], nonlinearity=rectified, name=layer.name)
        if is_rectifier(layer) and all(isinstance(p, keras.layers.BatchNormalization) for p in inbound_layers(layer)):
            # EvoNorm is the activation too: the rectifier after it goes.
            return keras.layers.Activation("linear", name=layer.name)
        return None
