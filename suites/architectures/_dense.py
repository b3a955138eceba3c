"""What the dense-prediction architectures share (a private module: the registry skips it).

A :class:`DenseArchitecture` builds the network a task's kind calls for (``TaskSpec.kind``):
:meth:`~DenseArchitecture.segmenter` for per-pixel logits (H, W, classes), :meth:`~DenseArchitecture.upscaler`
for a super-resolved image (sH, sW, C), :meth:`~DenseArchitecture.enhancer` for an enhanced signal shaped like
the input, and the classification :meth:`build` (which every backbone has, so
``effbench list`` and the generic backbone tests can build it) for anything else. An architecture defines the
heads its paper has; asking for another one names the method and the kind.

The pieces more than one of them uses: :class:`DepthToSpace` and :func:`subpixel_convolution` (ESPCN's
sub-pixel convolution), and :func:`halving_step`, the downsampling step that an upsampling by the same step
exactly undoes.
"""

from __future__ import annotations

from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import TaskSpec
from effbench.tf import keras, tf
from suites.architectures._layers import Geometry


@keras.utils.register_keras_serializable(package="effbench")
class DepthToSpace(keras.layers.Layer):
    """``tf.nn.depth_to_space``: (H, W, C s^2) -> (sH, sW, C), TFLite's ``DEPTH_TO_SPACE`` op."""

    def __init__(self, block_size: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.nn.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        batch, height, width, channels = tf.TensorShape(input_shape).as_list()
        size = self.block_size
        return tf.TensorShape([batch, height * size, width * size, channels // (size * size)])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block_size": self.block_size}

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        return 0, 0  # a rearrangement: no arithmetic


def subpixel_convolution(x: tf.Tensor, channels: int, scale: int, kernel: int = 3) -> tf.Tensor:
    """ESPCN's last layer: a ``kernel`` conv to ``channels`` s^2 maps at the low resolution, then the periodic
    shuffle of each pixel's s^2 groups into an s x s block: (H, W, F) -> (sH, sW, ``channels``).

    The conv is named ``subpixel`` and the shuffle ``depth_to_space``.
    """
    x = keras.layers.Conv2D(channels * scale * scale, kernel, padding="same", name="subpixel")(x)
    return DepthToSpace(scale, name="depth_to_space")(x)


def halving_step(geometry: Geometry, x: tf.Tensor) -> tuple[int, int]:
    """Stride 2 along the axes of ``x`` that are even and keep two positions, else 1.

    An upsampling by the same step then restores the shape exactly, so a decoder can add or concatenate an
    upsampled map to the encoder's map of that level.
    """
    strides = zip(geometry.stride(2, x), x.shape[1:3], strict=True)
    return tuple(step if size % 2 == 0 else 1 for step, size in strides)


def upscale_factor(spec: TaskSpec) -> int:
    """The super-resolution scale s of ``spec``: its label is the input image s times larger on both axes."""
    (height, width, _), (high_height, high_width, _) = spec.input_shape, spec.output_shape
    scale = high_height // height
    if (high_height, high_width) != (scale * height, scale * width):
        raise ValueError(f"task '{spec.slug}': output {spec.output_shape} is not an integer upscaling of "
                         f"input {spec.input_shape}")  # fmt: skip
    return scale


class DenseArchitecture(ArchitectureMethod):
    """An architecture whose network follows the task's kind (see the module docstring)."""

    def build_for(self, spec: TaskSpec) -> keras.Model:
        """The network for ``spec``'s kind: a segmenter, an upscaler, an enhancer, or the classification
        :meth:`build`."""
        if spec.kind == "segmentation":
            return self.segmenter(spec.input_shape, spec.num_classes)
        if spec.kind == "super-resolution":
            return self.upscaler(spec.input_shape, upscale_factor(spec))
        if spec.kind == "enhancement":
            return self.enhancer(spec.input_shape)
        return self.build(spec.input_shape, spec.num_classes)

    def segmenter(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        """(H, W, C) -> (H, W, ``num_classes``) per-pixel logits."""
        raise ValueError(f"'{self.spec.slug}' has no segmentation head (its paper defines none)")

    def upscaler(self, input_shape: tuple[int, ...], scale: int) -> keras.Model:
        """(H, W, C) -> (``scale`` H, ``scale`` W, C)."""
        raise ValueError(f"'{self.spec.slug}' has no super-resolution head (its paper defines none)")

    def enhancer(self, input_shape: tuple[int, ...]) -> keras.Model:
        """A noisy input -> the clean signal, shaped like the input."""
        raise ValueError(f"'{self.spec.slug}' has no enhancement head (its paper defines none)")
