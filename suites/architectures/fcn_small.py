"""FCN-small: a small fully-convolutional network whose head follows the task's kind.

Why: segmentation and super-resolution tasks need a backbone whose output is an image, and every other
reference backbone ends in one logits vector. This is the smallest network that makes the dense-prediction
tasks (``seg-shapes``, ``sr-photos-x2``/``-x3``, ``noisy-signals``) runnable and measurable, and a reference
the methods of those fields must beat; it is not a published architecture.

Body (``width`` w, default 16): conv3x3(w) at full resolution; conv3x3(2w) with stride 2 and conv3x3(2w) at
half resolution; the half-resolution features upsampled (nearest) and concatenated with the full-resolution
ones, then conv3x3(w): a one-level U-Net. Every conv is conv (no bias) + batch norm + ReLU. The head, by the
task's kind (``TaskSpec.kind``):

- segmentation: a 1x1 conv to ``num_classes`` per-pixel logits, named ``logits``: output (H, W, classes);
- super-resolution (scale s, from the task's input and output shapes): a 3x3 conv to C s^2 channels and a
  depth-to-space rearrangement (ESPCN's sub-pixel convolution), added to the bilinear upsampling of the
  input, so the body learns the residual over a smooth upsampling: output (sH, sW, C);
- enhancement (``noisy-signals``; the label is the clean input): a 1x1 conv to the input's channels, named
  ``noise``, subtracted from the input (``enhanced`` = input - noise), so the body estimates the noise and an
  all-zero head passes the input through; vectors (L,) are laid out as (L, 1, 1) with k x 1 kernels;
- classification (and :meth:`build`, which every backbone has): the half-resolution features, global
  average pooling and a ``logits`` Dense layer; vectors (L,) are laid out as (L, 1, 1) (see ``_layers``).

Paper: Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015
(https://arxiv.org/abs/1411.4038), with Ronneberger et al.'s U-Net skip (2015) and Shi et al.'s sub-pixel
convolution (ESPCN, 2016) for the super-resolution head. Deviations: tiny, one scale level, and no
pretrained encoder.
"""

from __future__ import annotations

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dense import DenseArchitecture, halving_step, subpixel_convolution
from suites.architectures._layers import Geometry, conv_bn_act, logits_model, model_name


@register_method(
    "fcn-small",
    suite="architectures",
    kind="architecture",
    paper=Paper("Fully Convolutional Networks for Semantic Segmentation", 2015, "https://arxiv.org/abs/1411.4038"),
    summary="small fully-convolutional U-Net-like net; head by task kind: pixel logits, sub-pixel SR, noise estimate "
    "subtracted from the input (enhancement), or logits",
    taxonomy=Taxonomy(applied="architecture"),
)
class FcnSmall(DenseArchitecture):
    default_options = {"width": 16}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        _, half = self.encoder(x, geometry)
        features = keras.layers.GlobalAveragePooling2D()(half)
        return logits_model(inputs, features, num_classes, model_name(self.spec.slug, self.options))

    def segmenter(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        inputs = keras.Input(shape=input_shape)
        logits = keras.layers.Conv2D(num_classes, 1, name="logits")(self.body(inputs, Geometry(tuple(input_shape))))
        return keras.Model(inputs, logits, name=model_name(f"{self.spec.slug}-segmentation", self.options))

    def upscaler(self, input_shape: tuple[int, ...], scale: int) -> keras.Model:
        inputs = keras.Input(shape=input_shape)
        channels = input_shape[-1]
        residual = subpixel_convolution(self.body(inputs, Geometry(tuple(input_shape))), channels, scale)
        smooth = keras.layers.UpSampling2D(size=scale, interpolation="bilinear", name="bilinear")(inputs)
        image = keras.layers.Add(name="image")([smooth, residual])
        return keras.Model(inputs, image, name=model_name(f"{self.spec.slug}-x{scale}", self.options))

    def enhancer(self, input_shape: tuple[int, ...]) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        noise = keras.layers.Conv2D(x.shape[-1], 1, name="noise")(self.body(x, geometry))
        noise = keras.layers.Reshape(tuple(input_shape))(noise)
        enhanced = keras.layers.Subtract(name="enhanced")([inputs, noise])
        return keras.Model(inputs, enhanced, name=model_name(f"{self.spec.slug}-enhancement", self.options))

    def encoder(self, x: tf.Tensor, geometry: Geometry) -> tuple[tf.Tensor, tf.Tensor]:
        """(full-resolution features, half-resolution features)."""
        width = self.options["width"]
        full = conv_bn_act(x, width, geometry.kernel(3))
        half = conv_bn_act(full, 2 * width, geometry.kernel(3), halving_step(geometry, full))
        return full, conv_bn_act(half, 2 * width, geometry.kernel(3))

    def body(self, x: tf.Tensor, geometry: Geometry) -> tf.Tensor:
        """Encoder, then the half-resolution features brought back up beside the full-resolution ones; ``x`` is
        the 4-D tensor ``geometry`` lays the input out as."""
        full, half = self.encoder(x, geometry)
        up = halving_step(geometry, full)
        if up != (1, 1):
            half = keras.layers.UpSampling2D(size=up)(half)
        merged = keras.layers.Concatenate()([full, half])
        return conv_bn_act(merged, self.options["width"], geometry.kernel(3))
