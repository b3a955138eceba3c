"""IBN-Net (IBN-a): instance and batch normalization side by side in a backbone's shallow stages.

Mechanism: in the shallow stages, the batch norm after the first conv of each block becomes an IBN
layer. Of its C channels, the first h = int(C * ratio) (``ratio`` = 0.5) are instance-normalized, per
sample n and channel c over the positions (i, j), with a learned affine:

    IN(x)_{n,i,j,c} = (x_{n,i,j,c} - mu_{n,c}) / sqrt(s^2_{n,c} + eps) * gamma_c + beta_c,
    mu_{n,c} = mean_{i,j} x_{n,i,j,c},   s^2_{n,c} = var_{i,j} x_{n,i,j,c},   eps = 1e-5,

and the other C - h go through batch norm (the replaced layer's momentum and epsilon); the two halves
are concatenated back in order, as the official ``IBN`` module does (``half = int(planes * ratio)``, IN on
the first half). IN removes per-image appearance (contrast, colour) from those channels; BN keeps
content. Deep stages keep BN. Instance norm is written with static shapes (MEAN, SQUARED_DIFFERENCE,
RSQRT), so TFLite converts it with builtins; unlike BN it does not fold into the conv before it.

Which batch norms: a BN is "the first of a block" when it sits in a conv-BN-rectifier chain whose conv
(a plain ``Conv2D``) reads a block input, and whose rectified output feeds another conv (the block's
next one). A block input is a tensor that forks (read by two or more layers: the branch and the
shortcut), the output of an ``Add``, or a BN with no rectifier after it (the linear output of a block
that has no shortcut, MobileNetV2's bottleneck). On ``resnet-cifar`` this finds conv1's BN of every basic
block (the stem reads the model input; conv2 reads a rectifier that does not fork; the projection
shortcut's BN feeds an add). On ``mobilenetv2`` it finds the BN after the 1x1 expansion conv of each
inverted residual (the first block, expansion 1, has none; the final 1x1 conv's rectifier feeds the
pooling, not a conv). A stage is a spatial resolution: stage k is the k-th largest height x width among
the model's BN outputs, and ``stages`` (default 2) is how many of the first stages get IBN layers. On a
CIFAR ResNet these are its stages of blocks; on MobileNetV2 the expansion conv of a strided block comes
before its depthwise stride, so it counts in the stage of the resolution it reads.

Applied to the backbone named by ``backbone`` (default ``resnet-cifar``).

Paper: Pan, Luo, Shi & Tang, "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net",
ECCV 2018 (https://arxiv.org/abs/1807.09441); checked against the official code's ``IBN`` module
(XingangPan/IBN-Net). Scale: small-faithful (the IBN-a layer is the paper's; the backbones are the
suite's CIFAR-sized ones). Deviations: the paper puts IBN in stages 1-3 of ResNet-50's four; the CIFAR
ResNet has three, and the default here is the first two. The paper's backbones are bottleneck ResNets,
ResNeXt, DenseNet and SENet; here the basic-block CIFAR ResNet and MobileNetV2, with the rule above for
what "the first BN of a block" is. IBN-b (IN after the addition) is not implemented.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dropin import DropInArchitecture, inbound_layers, is_rectifier, outbound_layers

Shape = tuple[int, ...]
# Elementwise operations per element, as the complexity track counts LayerNorm / BN.
INSTANCE_NORM_OPS = 5
BATCH_NORM_OPS = 2


@keras.utils.register_keras_serializable(package="effbench")
class InstanceNormalization(keras.layers.Layer):
    """Instance norm of a (batch, height, width, channels) tensor, with a per-channel affine (module docstring)."""

    def __init__(self, epsilon: float = 1e-5, **kwargs: Any):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        spatial = list(range(1, inputs.shape.rank - 1))
        mean = tf.reduce_mean(inputs, axis=spatial, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(inputs, mean), axis=spatial, keepdims=True)
        return (inputs - mean) * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        return 0, INSTANCE_NORM_OPS * math.prod(output_shapes[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.utils.register_keras_serializable(package="effbench")
class IBN(keras.layers.Layer):
    """Instance norm on the first ``int(channels * ratio)`` channels, batch norm on the rest, concatenated."""

    def __init__(self, ratio: float = 0.5, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs: Any):
        super().__init__(**kwargs)
        self.ratio, self.momentum, self.epsilon = float(ratio), float(momentum), float(epsilon)
        self.instance_norm = InstanceNormalization(name="instance_norm")
        self.batch_norm = keras.layers.BatchNormalization(momentum=self.momentum, epsilon=self.epsilon, name="bn")

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        self.half = int(channels * self.ratio)
        if not 0 < self.half < channels:
            raise ValueError(f"IBN '{self.name}': ratio {self.ratio} of {channels} channels leaves a half empty")
        # Under their own scopes, so the weights are named apart (x/instance_norm/gamma, x/bn/gamma).
        for layer, width in ((self.instance_norm, self.half), (self.batch_norm, channels - self.half)):
            with tf.name_scope(layer.name):
                layer.build((*input_shape[:-1], width))
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        first, second = tf.split(inputs, [self.half, inputs.shape[-1] - self.half], axis=-1)
        return tf.concat([self.instance_norm(first), self.batch_norm(second, training=training)], axis=-1)

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        positions = math.prod(output_shapes[0][1:-1])
        channels = output_shapes[0][-1]
        return 0, positions * (INSTANCE_NORM_OPS * self.half + BATCH_NORM_OPS * (channels - self.half))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ratio": self.ratio, "momentum": self.momentum, "epsilon": self.epsilon}


def is_block_input(layer: keras.layers.Layer) -> bool:
    """Whether ``layer``'s output starts a block: it forks, it is an add, or a BN left linear (module docstring)."""
    if len(outbound_layers(layer)) > 1 or isinstance(layer, keras.layers.Add):
        return True
    return isinstance(layer, keras.layers.BatchNormalization) and not any(map(is_rectifier, outbound_layers(layer)))


def is_first_block_norm(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is the BN of a conv-BN-rectifier chain that reads a block input and feeds another conv."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    producers = inbound_layers(layer)
    conv = producers[0]
    if len(producers) != 1 or type(conv) is not keras.layers.Conv2D:
        return False
    if not any(map(is_block_input, inbound_layers(conv))):
        return False
    rectifiers = [consumer for consumer in outbound_layers(layer) if is_rectifier(consumer)]
    convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    return any(isinstance(after, convs) for rectifier in rectifiers for after in outbound_layers(rectifier))


def stage_of(layer: keras.layers.Layer, resolutions: list[int]) -> int:
    """The 1-based stage of ``layer``: the rank of its output's height x width among ``resolutions`` (descending)."""
    return resolutions.index(math.prod(layer.output_shape[1:-1])) + 1


@register_method(
    "ibn-net",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net",
        2018,
        "https://arxiv.org/abs/1807.09441",
    ),
    summary="IBN-a: the first BN of each block in the shallow `stages` half instance norm, half batch norm",
    taxonomy=Taxonomy(applied="architecture"),
)
class IBNNet(DropInArchitecture):
    default_options: ClassVar[dict[str, Any]] = {**DropInArchitecture.default_options, "stages": 2, "ratio": 0.5}

    def rebuilt(self, backbone: keras.Model) -> keras.Model:
        norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
        self._resolutions = sorted({math.prod(norm.output_shape[1:-1]) for norm in norms}, reverse=True)
        return super().rebuilt(backbone)

    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if not is_first_block_norm(layer) or stage_of(layer, self._resolutions) > self.options["stages"]:
            return None
        config = layer.get_config()
        return IBN(self.options["ratio"], config["momentum"], config["epsilon"], name=layer.name)
