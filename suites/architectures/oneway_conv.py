"""One-way convolutions: each k x k conv of a backbone trained, from scratch, as two 1-D convs.

Mechanism: a conv with a kh x kw kernel (kh, kw > 1) from C_in to C_out channels becomes a kh x 1 conv
from C_in to C_mid channels followed by a 1 x kw conv from C_mid to C_out, with no bias or activation
between them (the original's bias and activation come after the second). The pair is the kh x kw conv
whose kernel is constrained to the one-way format

    W[i, j, a, c] = sum_m V[i, a, m] * H[j, m, c],    V: kh x C_in x C_mid,  H: kw x C_mid x C_out,

(exactly, padding and strides included: each 1-D conv pads and strides only its own axis, the vertical
one by the stride's height, the horizontal one by its width). With C_mid = round(``mid`` * C_out)
(``mid`` = 1.0), the parameters are kh C_in C_mid + kw C_mid C_out instead of kh kw C_in C_out and the
multiply-accumulates kh C_in C_mid H_out W_in + kw C_mid C_out H_out W_out instead of
kh kw C_in C_out H_out W_out: for a square k x k kernel and C_in = C_out at stride 1, a factor k / 2 fewer
(1.5x for 3x3). 1 x 1 convs, depthwise convs, dilated or grouped convs, and kernels already 1-D are kept.
``OneWayConv2D`` holds both kernels in one layer (the rewrite puts one layer in each layer's place), runs
two TFLite ``CONV_2D`` builtins, and declares its exact MACs to the complexity track.

Applied to the backbone named by ``backbone`` (default ``resnet-cifar``).

Paper: Boukraichi, Akkari, Casenave & Ryckelynck, "A priori compression of convolutional neural networks
for wave simulators", 2023 (https://arxiv.org/abs/2304.04964): convolution kernels are replaced, before
training, by a compressed format built from one-way filters, and trained from scratch. Scale:
small-faithful for the idea (a priori, trained from scratch, 1-D filters). Deviations: the paper's
setting is finite-element wave-field regression, here image classification backbones; only the abstract
was available, so the format is the two-stage vertical-then-horizontal factorisation above with a
chosen intermediate width (``mid``), which may differ from the paper's exact tensor format and rank;
the original conv's kernel regularizer and constraint are not carried over (the suite's backbones set
none).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dropin import DropInArchitecture
from suites.architectures._layers import scaled

Shape = tuple[int, ...]


@keras.utils.register_keras_serializable(package="effbench")
class OneWayConv2D(keras.layers.Layer):
    """A kh x 1 conv to ``mid_filters`` channels then a 1 x kw conv to ``filters`` (module docstring)."""

    def __init__(
        self,
        filters: int,
        kernel_size: tuple[int, int],
        mid_filters: int,
        strides: tuple[int, int] = (1, 1),
        padding: str = "same",
        use_bias: bool = True,
        activation: Any = None,
        kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.filters, self.mid_filters = int(filters), int(mid_filters)
        self.kernel_size, self.strides = tuple(kernel_size), tuple(strides)
        self.padding, self.use_bias = padding.lower(), bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.serialize(keras.initializers.get(kernel_initializer))

    def build(self, input_shape: Any) -> None:
        height, width = self.kernel_size
        channels = int(input_shape[-1])
        self.vertical = self.add_weight(
            name="vertical_kernel", shape=(height, 1, channels, self.mid_filters), initializer=self._fresh_initializer()
        )
        self.horizontal = self.add_weight(
            name="horizontal_kernel",
            shape=(1, width, self.mid_filters, self.filters),
            initializer=self._fresh_initializer(),
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None
        super().build(input_shape)

    def _fresh_initializer(self) -> keras.initializers.Initializer:
        # One instance per kernel: an unseeded instance called twice repeats its values.
        return keras.initializers.get(self.kernel_initializer)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        padding = self.padding.upper()
        x = tf.nn.conv2d(inputs, self.vertical, strides=[1, self.strides[0], 1, 1], padding=padding)
        x = tf.nn.conv2d(x, self.horizontal, strides=[1, 1, self.strides[1], 1], padding=padding)
        if self.bias is not None:
            x = tf.nn.bias_add(x, self.bias)
        return self.activation(x)

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        (_, _, width_in, channels), (_, height_out, width_out, _) = input_shapes[0], output_shapes[0]
        height, width = self.kernel_size
        vertical = height * channels * self.mid_filters * height_out * width_in
        horizontal = width * self.mid_filters * self.filters * height_out * width_out
        per_element = self.use_bias + (self.activation is not keras.activations.linear)
        return vertical + horizontal, per_element * math.prod(output_shapes[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "mid_filters": self.mid_filters,
            "strides": self.strides,
            "padding": self.padding,
            "use_bias": self.use_bias,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": self.kernel_initializer,
        }


def is_two_way(layer: keras.layers.Layer) -> bool:
    """A plain 2-D conv with a kernel wider than 1 along both axes, undilated and ungrouped."""
    if type(layer) is not keras.layers.Conv2D:
        return False
    config = layer.get_config()
    return (
        min(layer.kernel_size) > 1
        and tuple(config["dilation_rate"]) == (1, 1)
        and config.get("groups", 1) == 1
        and config["data_format"] in (None, "channels_last")
    )


@register_method(
    "oneway-conv",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "A priori compression of convolutional neural networks for wave simulators",
        2023,
        "https://arxiv.org/abs/2304.04964",
    ),
    summary="each k x k conv a k x 1 then a 1 x k conv (one-way filters), trained from scratch",
    taxonomy=Taxonomy(applied="architecture"),
)
class OneWayConv(DropInArchitecture):
    default_options: ClassVar[dict[str, Any]] = {**DropInArchitecture.default_options, "mid": 1.0}

    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if not is_two_way(layer):
            return None
        config = layer.get_config()
        return OneWayConv2D(
            config["filters"],
            layer.kernel_size,
            scaled(config["filters"], self.options["mid"]),
            strides=layer.strides,
            padding=config["padding"],
            use_bias=config["use_bias"],
            activation=config["activation"],
            kernel_initializer=config["kernel_initializer"],
            name=layer.name,
        )
