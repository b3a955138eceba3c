"""NASNet-A, CIFAR configuration: the searched normal and reduction cells, stacked N per stage.

Architecture (Zoph et al., Figure 2 left, the CIFAR-10 stack, and Figure 4, the NASNet-A cells), with
``filters`` = F and ``cells`` = N, written "NASNet-A (N @ 24F)" in the paper (NASNet-A 6 @ 768 has F = 32):

    stem: conv3x3(3F) + BN
    N normal cells (F) - reduction cell (2F) - N normal cells (2F) - reduction cell (4F) - N normal cells (4F)
    ReLU - GAP - logits

A cell reads the two previous cells' outputs, h (the last) and p (the one before; the stem's output where
there is none); a normal cell after a reduction cell reads the reduction cell's input as p, as the paper's
CIFAR configuration does (``skip_reduction_layer_input=0`` in its released code). p is first made like h:
where it has twice h's resolution (after a reduction cell), the factorised reduction, ReLU then two
1x1-strided average-pool paths, the second shifted by one pixel, each a 1x1 conv to F/2, concatenated and
batch-normed; where only its width differs, ReLU-conv1x1(F)-BN. h becomes ReLU-conv1x1(F)-BN. A "sep k" is
ReLU-sepconv(k)-BN-ReLU-sepconv(k)-BN (the separable conv applied twice, as in the paper's code), the first
sepconv carrying the stride. Pools are 3x3. The five blocks of each cell add two operations:

    normal:     x1 = sep5(h) + sep3(p)         reduction:  x1 = sep5/2(h) + sep7/2(p)
                x2 = sep5(p) + sep3(p)                     x2 = max/2(h)  + sep7/2(p)
                x3 = avg(h)  + p                           x3 = avg/2(h)  + sep5/2(p)
                x4 = avg(p)  + avg(p)                      x4 = avg(x1)   + x2
                x5 = sep3(h) + h                           x5 = sep3(x1)  + max/2(h)
                out = concat(p, x1, ..., x5): 6F           out = concat(x2, x3, x4, x5): 4F

the wiring of ``keras.applications.NASNetMobile`` (``_normal_a_cell``, ``_reduction_a_cell``, ``_adjust_block``),
which ports the paper's released cells.

Paper: Zoph, Vasudevan, Shlens & Le, "Learning Transferable Architectures for Scalable Image Recognition", CVPR
2018 (https://arxiv.org/abs/1707.07012). Scale: small-faithful (the NASNet-A cells, the cell-input adjustment
and the CIFAR stack are the paper's; N and F are scaled down, defaults N = 2, F = 16, where the paper's CIFAR
models have N = 4-7). Deviations: no auxiliary head and no ScheduledDropPath (a regularizer that drops cell
paths with a probability rising over training: it belongs to the recipe, which the suite fixes); strided
sepconvs and the reduction cell's pools use "same" padding instead of the reference's explicit padding then
"valid"; on vector inputs (``_layers.Geometry``) the factorised reduction shifts only along the strided axis,
so the unit axis is never emptied; BN momentum 0.9 (``_layers.BN_MOMENTUM``) instead of 0.9997. Strides that
would leave fewer than 2 positions along an axis are skipped (``_layers``).
"""

from __future__ import annotations

from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import Geometry, bn_act, conv_bn_act, logits_model, model_name

STEM_MULTIPLIER = 3
STAGES = 3


@register_method(
    "nasnet",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Learning Transferable Architectures for Scalable Image Recognition", 2018, "https://arxiv.org/abs/1707.07012"
    ),
    summary="NASNet-A (small-faithful): the searched normal and reduction cells, N per stage, CIFAR stack",
    taxonomy=Taxonomy(applied="architecture"),
)
class NASNet(ArchitectureMethod):
    default_options = {"cells": 2, "filters": 16}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["cells"] < 1 or self.options["filters"] < 2:
            raise ValueError(f"nasnet needs cells >= 1 and filters >= 2 (F/2 per reduction path); got {self.options}")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        filters = self.options["filters"]
        x = conv_bn_act(x, STEM_MULTIPLIER * filters, geometry.kernel(3), activation=None)
        previous = x
        for stage in range(STAGES):
            if stage > 0:
                x, previous = reduction_cell(x, previous, filters * 2**stage, geometry), x
            for _ in range(self.options["cells"]):
                x, previous = normal_cell(x, previous, filters * 2**stage, geometry), x
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))


def separable(
    x: tf.Tensor, filters: int, size: int, geometry: Geometry, strides: tuple[int, int] = (1, 1)
) -> tf.Tensor:
    """ReLU-sepconv(size, strides)-BN-ReLU-sepconv(size)-BN."""
    kernel = geometry.kernel(size)
    for step in (strides, (1, 1)):
        conv = keras.layers.SeparableConv2D(filters, kernel, strides=step, padding="same", use_bias=False)
        x = bn_act(conv(keras.layers.ReLU()(x)), activation=None)
    return x


def relu_conv_bn(x: tf.Tensor, filters: int) -> tf.Tensor:
    return conv_bn_act(keras.layers.ReLU()(x), filters, (1, 1), activation=None)


def adjusted(previous: tf.Tensor, current: tf.Tensor, filters: int) -> tf.Tensor:
    """``previous`` at ``current``'s resolution and ``filters`` channels (the module docstring's adjustment)."""
    sizes = zip(previous.shape[1:3], current.shape[1:3], strict=True)
    strides = tuple(2 if before != after else 1 for before, after in sizes)
    if strides != (1, 1):
        return factorized_reduction(previous, filters, strides)
    if previous.shape[-1] != filters:
        return relu_conv_bn(previous, filters)
    return previous


def factorized_reduction(x: tf.Tensor, filters: int, strides: tuple[int, int]) -> tf.Tensor:
    """ReLU, then two 1x1 avg-pool paths with ``strides``, the second shifted by one along the strided axes, each
    a 1x1 conv to half of ``filters``; concatenated, then BN."""
    x = keras.layers.ReLU()(x)
    shift = tuple((0, 1) if step == 2 else (0, 0) for step in strides)
    shifted = keras.layers.ZeroPadding2D(shift)(x)
    shifted = keras.layers.Cropping2D(tuple(pad[::-1] for pad in shift))(shifted)
    paths = []
    for path, width in ((x, filters // 2), (shifted, filters - filters // 2)):
        path = keras.layers.AveragePooling2D(1, strides=strides, padding="valid")(path)
        paths.append(keras.layers.Conv2D(width, 1, use_bias=False)(path))
    return bn_act(keras.layers.Concatenate()(paths), activation=None)


def pool(x: tf.Tensor, kind: str, geometry: Geometry, strides: tuple[int, int] = (1, 1)) -> tf.Tensor:
    layer = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    return layer(geometry.kernel(3), strides=strides, padding="same")(x)


def add(*tensors: tf.Tensor) -> tf.Tensor:
    return keras.layers.Add()(list(tensors))


def normal_cell(h: tf.Tensor, p: tf.Tensor, filters: int, geometry: Geometry) -> tf.Tensor:
    """The NASNet-A normal cell: 6 x ``filters`` channels at ``h``'s resolution."""
    p = adjusted(p, h, filters)
    h = relu_conv_bn(h, filters)
    x1 = add(separable(h, filters, 5, geometry), separable(p, filters, 3, geometry))
    x2 = add(separable(p, filters, 5, geometry), separable(p, filters, 3, geometry))
    x3 = add(pool(h, "avg", geometry), p)
    x4 = add(pool(p, "avg", geometry), pool(p, "avg", geometry))
    x5 = add(separable(h, filters, 3, geometry), h)
    return keras.layers.Concatenate()([p, x1, x2, x3, x4, x5])


def reduction_cell(h: tf.Tensor, p: tf.Tensor, filters: int, geometry: Geometry) -> tf.Tensor:
    """The NASNet-A reduction cell: 4 x ``filters`` channels at half ``h``'s resolution."""
    strides = geometry.stride(2, h)
    p = adjusted(p, h, filters)
    h = relu_conv_bn(h, filters)
    x1 = add(separable(h, filters, 5, geometry, strides), separable(p, filters, 7, geometry, strides))
    x2 = add(pool(h, "max", geometry, strides), separable(p, filters, 7, geometry, strides))
    x3 = add(pool(h, "avg", geometry, strides), separable(p, filters, 5, geometry, strides))
    x4 = add(pool(x1, "avg", geometry), x2)
    x5 = add(separable(x1, filters, 3, geometry), pool(h, "max", geometry, strides))
    return keras.layers.Concatenate()([x2, x3, x4, x5])
