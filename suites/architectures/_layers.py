"""Building blocks shared by the reference backbones (a private module: the registry skips it).

``Geometry`` lets one conv backbone run on every task: an image input ``(H, W, C)`` is used as it
is, a vector input ``(L,)`` is reshaped to ``(L, 1, 1)`` and every kernel ``k`` becomes ``(k, 1)``
so no weight ever looks at the zero padding of the unit-width axis. Downsampling (strides and max
pools) is decided per spatial axis: an axis is downsampled only while it keeps at least
``MIN_SPATIAL`` positions (``size // step >= 2``), otherwise that step is 1 along it. So deep
backbones build on 8x8 digits and on length-40 vectors, and the unit axis of a vector is never
strided; on the inputs a paper was designed for, nothing is skipped except where a backbone says.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from effbench.tf import keras, tf

# What a TensorFlow root scope name may not contain (its pattern is [A-Za-z0-9_.\\/>-]).
SCOPE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MIN_SPATIAL = 2
# PyTorch's BN momentum 0.1, which the papers' code uses (Keras 0.9). Keras's default 0.99 keeps ~1% of
# the initial moving variance (1.0) after the few hundred steps of a small-data run, which swamps
# activation variances of ~0.01 and leaves inference-mode accuracy at chance.
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Geometry:
    """How a conv backbone lays out a task input: see the module docstring."""

    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.input_shape) not in (1, 3):
            raise ValueError(
                f"conv backbones take (H, W, C) images or (L,) vectors; got input shape {self.input_shape}"
            )

    @property
    def is_vector(self) -> bool:
        return len(self.input_shape) == 1

    @property
    def spatial(self) -> tuple[int, int]:
        """(H, W) of the image the backbone sees: (L, 1) for vectors."""
        return (self.input_shape[0], 1) if self.is_vector else (self.input_shape[0], self.input_shape[1])

    def inputs(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The model input and the same data as a 4-D ``(batch, H, W, C)`` tensor."""
        inputs = keras.Input(shape=self.input_shape)
        if not self.is_vector:
            return inputs, inputs
        return inputs, keras.layers.Reshape((self.input_shape[0], 1, 1))(inputs)

    def kernel(self, size: int) -> tuple[int, int]:
        return (size, 1) if self.is_vector else (size, size)

    def rectangle(self, height: int, width: int) -> tuple[int, int]:
        """A ``height x width`` kernel on images; ``(height, 1)`` on vectors, whose unit axis has nothing to span:
        a factorised ``1 x k`` then ``k x 1`` pair becomes a pointwise conv then a ``k x 1`` one."""
        return (height, 1) if self.is_vector else (height, width)

    def stride(self, step: int, x: tf.Tensor) -> tuple[int, int]:
        """``step`` along each spatial axis of ``x`` that keeps ``MIN_SPATIAL`` positions, else 1."""
        return axis_strides(step, (x.shape[1], x.shape[2]))

    def max_pool(self, x: tf.Tensor) -> tf.Tensor:
        """A 2x2 max pool with stride 2, along the axes that can take it (all others: 1)."""
        pool = self.stride(2, x)
        if pool == (1, 1):
            return x
        return keras.layers.MaxPooling2D(pool_size=pool, strides=pool)(x)


def axis_strides(step: int, sizes: Sequence[int]) -> tuple[int, ...]:
    """``step`` along each axis of ``sizes`` that keeps ``MIN_SPATIAL`` positions after it, else 1."""
    return tuple(step if size // step >= MIN_SPATIAL else 1 for size in sizes)


def sequence_shape(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(items, features per item) of an input: its first axis lists the items (time steps, set elements),
    the rest is one item's features, flattened."""
    items, *rest = input_shape
    return items, math.prod(rest)


def scaled(channels: int, width: float) -> int:
    """A layer width times a multiplier, at least one channel."""
    return max(1, round(channels * width))


def bn_act(x: tf.Tensor, activation: str | None = "relu", name: str | None = None) -> tf.Tensor:
    """Batch norm then ``relu``, ``relu6`` or nothing (``None``, for linear bottlenecks).

    ``name``, where given, prefixes the layers' names (``<name>_bn``, ``<name>_relu``); else Keras numbers them.
    """
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=_named(name, "bn"))(x)
    if activation == "relu":
        return keras.layers.ReLU(name=_named(name, "relu"))(x)
    if activation == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=_named(name, "relu6"))(x)
    if activation is None:
        return x
    raise ValueError(f"unknown activation '{activation}'")


def conv_bn_act(
    x: tf.Tensor,
    filters: int,
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    activation: str | None = "relu",
    name: str | None = None,
) -> tf.Tensor:
    """Conv (no bias: the batch norm after it has one) + batch norm + activation; ``name`` as in :func:`bn_act`."""
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=_named(name, "conv")
    )(x)
    return bn_act(x, activation, name)


def _named(prefix: str | None, role: str) -> str | None:
    return None if prefix is None else f"{prefix}_{role}"


def projection_shortcut(x: tf.Tensor, channels: int, strides: tuple[int, int]) -> tf.Tensor:
    """The identity where the shape is kept, else a 1x1 conv (stride ``strides``) + batch norm, no activation.

    He et al.'s option B, torchvision's and BiBench's ``downsample``.
    """
    if strides == (1, 1) and x.shape[-1] == channels:
        return x
    x = keras.layers.Conv2D(channels, 1, strides=strides, use_bias=False)(x)
    return bn_act(x, activation=None)


def basic_block(
    x: tf.Tensor,
    channels: int,
    strides: tuple[int, int],
    geometry: Geometry,
    shortcut: Callable[[tf.Tensor, int, tuple[int, int]], tf.Tensor] = projection_shortcut,
) -> tf.Tensor:
    """A ResNet basic block: conv3x3 (stride ``strides``)-BN-ReLU-conv3x3-BN, plus ``shortcut``, then ReLU."""
    residual = conv_bn_act(x, channels, geometry.kernel(3), strides)
    residual = conv_bn_act(residual, channels, geometry.kernel(3), activation=None)
    x = keras.layers.Add()([shortcut(x, channels, strides), residual])
    return keras.layers.ReLU()(x)


def squeeze_excitation(x: tf.Tensor, ratio: float = 0.25) -> tf.Tensor:
    """Squeeze-and-excitation (Hu et al. 2018): each channel of ``x`` times a gate computed from all channels' means,

        s = mean_{i,j} x,   g = sigmoid(W2 relu(W1 s + b1) + b2),   y_{i,j,c} = x_{i,j,c} g_c,

    W1 reducing the C channels to ``max(1, int(C * ratio))``. 1x1 convs on the kept (1, 1, C) mean, as the
    official ResNet-RS and EfficientNet code write it.
    """
    channels = x.shape[-1]
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    squeezed = keras.layers.Conv2D(max(1, int(channels * ratio)), 1, activation="relu")(squeezed)
    gates = keras.layers.Conv2D(channels, 1, activation="sigmoid")(squeezed)
    return keras.layers.Multiply()([x, gates])


def model_name(slug: str, options: Mapping[str, Any]) -> str:
    """``slug`` followed by every option, e.g. ``resnet-cifar-depth20-shortcutB-width1``.

    Characters a TensorFlow root scope name refuses (a nested method reference's ``: , = ( )``) become
    ``_``: ``selu-snn-backbonemobilenetv2_alpha_0.35``.
    """
    parts = [slug] + [f"{key}{_format(value)}" for key, value in sorted(options.items())]
    return SCOPE_UNSAFE.sub("_", "-".join(parts))


def _format(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def logits_model(inputs: tf.Tensor, features: tf.Tensor, num_classes: int, name: str) -> keras.Model:
    """Close a backbone with the ``logits`` Dense layer (no softmax)."""
    logits = keras.layers.Dense(num_classes, name="logits")(features)
    return keras.Model(inputs, logits, name=name)
