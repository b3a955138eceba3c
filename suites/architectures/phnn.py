r"""PHNN: a backbone's convs and hidden dense layers as parameterized hypercomplex (PHM) layers, 1/n parameters.

Mechanism: a layer from C_in to C_out channels, with n (``n``) dividing both, builds its weight as a sum of n
Kronecker products of a learned n x n "algebra" matrix A_i and a learned filter block F_i,

    W = sum_{i=1..n} A_i (x) F_i,     A_i in R^{n x n},   F_i in R^{k x k x C_in/n x C_out/n},

the product taken over the channel axes at every kernel position: W[h, w, a C_in/n + p, b C_out/n + q] =
sum_i A_i[a, b] F_i[h, w, p, q]. The A_i learn the multiplication rule of an n-dimensional algebra (with the
Hamilton products' matrices for n = 4 it is a quaternion conv), the F_i the filters; the layer has
n^3 + k^2 C_in C_out / n weights instead of k^2 C_in C_out (plus the bias, if any): about 1/n of them.
The weight is assembled before each call and the layer then runs as the ordinary conv (or matmul), so its
multiply-accumulates are the replaced layer's: PHNN saves parameters and model size, not compute.
``PHConv2D`` replaces each plain, ungrouped, undilated ``Conv2D`` and ``PHDense`` each hidden ``Dense`` whose
channels n divides; the others (the stem, whose input has 1 or 3 channels; depthwise convs, already one
weight per channel and position; the logits) stay as they are.

Initialisation: the A_i Glorot-uniform over (n, n, n) (variance 1 / n^2) and each F_i the replaced layer's
kernel initializer over its own shape (variance n times the full kernel's, its fans being 1/n of them), so
W starts with the replaced layer's variance.

Applied to the backbone named by ``backbone`` (default ``resnet-cifar``). TFLite: the Kronecker sum is a
function of constant variables only, so the converter folds it into the constant kernel of a plain CONV_2D /
FULLY_CONNECTED: the flatbuffer is the backbone's, with the full (not 1/n) kernels.

Paper: Grassucci, Zhang & Comminiello, "PHNNs: Lightweight Neural Networks via Parameterized Hypercomplex
Convolutions", 2021 (https://arxiv.org/abs/2110.04176); checked against the official code
(eleGAN23/HyperNets, ``PHConv``: ``weight = sum(kron(a, F))`` with a of shape (n, n, n)). Scale:
small-faithful (the PH layers are the paper's; the backbones the suite's CIFAR-sized ResNet and MobileNetV2).
Deviations: a layer whose channels n does not divide is kept real-valued rather than padded with channels
(the paper picks n = 3 for RGB stems or adds a channel); the F_i initializer is the replaced layer's, not the
official Xavier on the 5-D tensor.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dropin import DropInArchitecture, is_hidden_dense

Shape = tuple[int, ...]


def kronecker_sum(algebra: tf.Tensor, filters: tf.Tensor) -> tf.Tensor:
    """sum_i A_i (x) F_i over the last two axes: (n, n, n) and (n, ..., p, q) -> (..., n p, n q)."""
    n, *positions, inputs, outputs = filters.shape
    # One matmul over i, (a b, i) x (i, x p q), x the kernel positions. Not tf.einsum: its gradient with an
    # ellipsis over size-1 axes (the k x 1 kernels of vector inputs) crashes TensorFlow 2.21 on CPU; nor the
    # official broadcast product, which needs 6 axes where TensorFlow broadcasts at most 5.
    flat = tf.matmul(tf.reshape(algebra, [n, n * n]), tf.reshape(filters, [n, -1]), transpose_a=True)
    products = tf.transpose(tf.reshape(flat, [n, n, math.prod(positions), inputs, outputs]), [2, 0, 3, 1, 4])
    return tf.reshape(products, [*positions, n * inputs, n * outputs])


def ph_parameters(n: int, kernel_shape: Shape) -> int:
    """The weights of a PH layer whose full kernel has ``kernel_shape`` (..., C_in, C_out): n^3 + |kernel| / n."""
    return n**3 + math.prod(kernel_shape) // n


class _Hypercomplex(keras.layers.Layer):
    """The algebra A (n, n, n) and the filter blocks F (n, ..., C_in / n, C_out / n) of a PH layer, and its bias."""

    def __init__(
        self, n: int, use_bias: bool = True, activation: Any = None, kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ):  # fmt: skip
        super().__init__(**kwargs)
        self.n, self.use_bias = int(n), bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.serialize(keras.initializers.get(kernel_initializer))

    def build_hypercomplex(self, positions: Shape, inputs: int, outputs: int) -> None:
        if inputs % self.n or outputs % self.n:
            raise ValueError(f"{type(self).__name__} '{self.name}': n={self.n} divides neither {inputs} nor "
                             f"{outputs} channels exactly")  # fmt: skip
        self.algebra = self.add_weight(name="algebra", shape=(self.n,) * 3, initializer="glorot_uniform")
        block = (*positions, inputs // self.n, outputs // self.n)
        self.blocks = self.add_weight(
            name="blocks",
            shape=(self.n, *block),
            initializer=lambda shape, dtype=None: self._fresh_blocks(block, dtype),
        )
        self.bias = self.add_weight(name="bias", shape=(outputs,), initializer="zeros") if self.use_bias else None

    def _fresh_blocks(self, block: Shape, dtype: Any) -> tf.Tensor:
        # One initializer instance per block: an unseeded instance called twice repeats its values.
        return tf.stack([keras.initializers.get(self.kernel_initializer)(block, dtype) for _ in range(self.n)])

    def kernel(self) -> tf.Tensor:
        """The full weight, sum_i A_i (x) F_i."""
        return kronecker_sum(self.algebra, self.blocks)

    def finished(self, outputs: tf.Tensor) -> tf.Tensor:
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs)

    def elementwise(self, output_shape: Shape) -> int:
        return (self.use_bias + (self.activation is not keras.activations.linear)) * math.prod(output_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n": self.n,
            "use_bias": self.use_bias,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": self.kernel_initializer,
        }


@keras.utils.register_keras_serializable(package="effbench")
class PHConv2D(_Hypercomplex):
    """A 2-D conv whose kernel is a sum of n Kronecker products (module docstring)."""

    def __init__(
        self, n: int, filters: int, kernel_size: tuple[int, int], strides: tuple[int, int] = (1, 1),
        padding: str = "same", **kwargs: Any,
    ):  # fmt: skip
        super().__init__(n, **kwargs)
        self.filters_count, self.kernel_size = int(filters), tuple(kernel_size)
        self.strides, self.padding = tuple(strides), padding.lower()

    def build(self, input_shape: Any) -> None:
        self.build_hypercomplex(self.kernel_size, int(input_shape[-1]), self.filters_count)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = tf.nn.conv2d(inputs, self.kernel(), strides=[1, *self.strides, 1], padding=self.padding.upper())
        return self.finished(outputs)

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        channels, positions = input_shapes[0][-1], math.prod(output_shapes[0][1:-1])
        macs = math.prod(self.kernel_size) * channels * self.filters_count * positions  # the full conv's
        return macs, self.elementwise(output_shapes[0])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters_count,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
        }


@keras.utils.register_keras_serializable(package="effbench")
class PHDense(_Hypercomplex):
    """A dense layer whose kernel is a sum of n Kronecker products (PHM)."""

    def __init__(self, n: int, units: int, **kwargs: Any):
        super().__init__(n, **kwargs)
        self.units = int(units)

    def build(self, input_shape: Any) -> None:
        self.build_hypercomplex((), int(input_shape[-1]), self.units)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.finished(tf.matmul(inputs, self.kernel()))

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        return math.prod(output_shapes[0][1:-1]) * input_shapes[0][-1] * self.units, self.elementwise(output_shapes[0])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


def is_plain_conv(layer: keras.layers.Layer) -> bool:
    """A ``Conv2D`` (not a subclass), ungrouped and undilated, channels last."""
    if type(layer) is not keras.layers.Conv2D:
        return False
    config = layer.get_config()
    return (
        tuple(config["dilation_rate"]) == (1, 1)
        and config.get("groups", 1) == 1
        and config["data_format"] in (None, "channels_last")
    )


@register_method(
    "phnn",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "PHNNs: Lightweight Neural Networks via Parameterized Hypercomplex Convolutions",
        2021,
        "https://arxiv.org/abs/2110.04176",
    ),
    summary="each conv and hidden Dense a PH layer: kernel = sum of `n` Kronecker products A_i (x) F_i, ~1/n "
    "params, same MACs; small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
)
class PHNN(DropInArchitecture):
    default_options: ClassVar[dict[str, Any]] = {**DropInArchitecture.default_options, "n": 4}

    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        n = self.options["n"]
        if not (is_plain_conv(layer) or is_hidden_dense(layer)):
            return None
        inputs, outputs = layer.input_shape[-1], layer.output_shape[-1]
        if inputs % n or outputs % n:
            return None
        config = layer.get_config()
        shared = {
            "use_bias": config["use_bias"],
            "activation": config["activation"],
            "kernel_initializer": config["kernel_initializer"],
            "name": layer.name,
        }
        if isinstance(layer, keras.layers.Dense):
            return PHDense(n, config["units"], **shared)
        return PHConv2D(n, config["filters"], layer.kernel_size, layer.strides, config["padding"], **shared)
