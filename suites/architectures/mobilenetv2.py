"""MobileNetV2: inverted residual blocks with linear bottlenecks.

Architecture (Sandler et al., Table 2): a 3x3 stride-2 conv with 32 channels, then the (t, c, n, s)
table below: n inverted residual blocks with expansion t, c output channels, stride s on the first
block. A block is 1x1 expansion conv to t times its input channels (left out when t = 1),
BN-ReLU6, a 3x3 depthwise conv with the stride, BN-ReLU6, and a 1x1 linear projection conv + BN;
it adds its input when stride is 1 and channels match. Then a 1x1 conv to 1280 channels, BN-ReLU6,
global average pooling and the logits Dense layer. ``alpha`` multiplies every width, rounded to a
multiple of 8 exactly as ``keras.applications.MobileNetV2`` does (``_make_divisible``), and the
last conv keeps 1280 channels unless alpha > 1. With alpha=1, 224x224x3 and 1000 classes the model
has 3,538,984 parameters, the same as ``keras.applications.MobileNetV2(weights=None)``.

Paper: Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018 (https://arxiv.org/abs/1801.04381). Deviations, for small inputs: when the
larger spatial side of the input is at most 64 pixels the stem conv has stride 1 (as CIFAR ports of
MobileNetV2 do), and a stride that would leave fewer than 2 positions along an axis is skipped (see
``_layers``), so 32x32 inputs end at 2x2 instead of 1x1. Convs have no bias, as in Keras. Keras
pads stride-2 depthwise convs explicitly and symmetrically; here they use "same" padding (same
parameters, pad row/column at the bottom/right). No dropout before the classifier, as in Keras.
"""

from __future__ import annotations

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import Geometry, bn_act, conv_bn_act, logits_model, model_name

# (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper.
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# Inputs up to this many pixels per side keep full resolution in the stem.
SMALL_INPUT = 64


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never below it nor 10% below ``value`` (Keras)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@register_method(
    "mobilenetv2",
    suite="architectures",
    kind="architecture",
    paper=Paper("MobileNetV2: Inverted Residuals and Linear Bottlenecks", 2018, "https://arxiv.org/abs/1801.04381"),
    summary="MobileNetV2: inverted residuals, linear bottlenecks, width multiplier alpha",
    taxonomy=Taxonomy(applied="architecture"),
)
class MobileNetV2(ArchitectureMethod):
    default_options = {"alpha": 1.0}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        alpha = self.options["alpha"]
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        stem_step = 1 if max(geometry.spatial) <= SMALL_INPUT else 2
        x = conv_bn_act(
            x, make_divisible(STEM_CHANNELS * alpha), geometry.kernel(3), geometry.stride(stem_step, x), "relu6"
        )
        for expansion, channels, repeats, first_step in BLOCKS:
            for repeat in range(repeats):
                step = first_step if repeat == 0 else 1
                x = inverted_residual(
                    x, expansion, make_divisible(int(channels * alpha)), geometry.stride(step, x), geometry
                )
        last_channels = make_divisible(LAST_CHANNELS * alpha) if alpha > 1.0 else LAST_CHANNELS
        x = conv_bn_act(x, last_channels, geometry.kernel(1), activation="relu6")
        x = keras.layers.GlobalAveragePooling2D()(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))


def inverted_residual(
    x: tf.Tensor, expansion: int, channels: int, strides: tuple[int, int], geometry: Geometry
) -> tf.Tensor:
    inputs = x
    if expansion != 1:
        x = conv_bn_act(x, expansion * x.shape[-1], geometry.kernel(1), activation="relu6")
    x = keras.layers.DepthwiseConv2D(geometry.kernel(3), strides=strides, padding="same", use_bias=False)(x)
    x = bn_act(x, "relu6")
    # Linear bottleneck: no activation after the projection.
    x = conv_bn_act(x, channels, geometry.kernel(1), activation=None)
    if strides == (1, 1) and inputs.shape[-1] == channels:
        return keras.layers.Add()([inputs, x])
    return x
