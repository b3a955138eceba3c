r"""ESPCN: super-resolution computed at the low resolution, upscaled once at the end by a sub-pixel convolution.

Mechanism (Shi et al., section 2.2): for a low-resolution image :math:`I^{LR}` (H, W, C) and scale r, every
convolution runs at H x W,

.. math::

    f^1 = \tanh(W_1 * I^{LR} + b_1),\quad W_1: 5 \times 5 \times C \times n_1

    f^2 = \tanh(W_2 * f^1 + b_2),\quad W_2: 3 \times 3 \times n_1 \times n_2

    I^{SR} = \mathcal{PS}(W_3 * f^2 + b_3),\quad W_3: 3 \times 3 \times n_2 \times C r^2

with :math:`n_1 = 64, n_2 = 32` (options ``filters1``, ``filters2``) and the last layer linear. The periodic
shuffle :math:`\mathcal{PS}` rearranges each low-resolution pixel's :math:`C r^2` values into an r x r block of
the (rH, rW, C) output: TensorFlow's ``depth_to_space`` (TFLite's ``DEPTH_TO_SPACE``), which reads the
channels in the order :math:`(i r + j) C + c` for the output pixel :math:`(r h + i, r w + j)`; the paper's
order is another fixed permutation of the same channels, so the two networks are the same up to the order
of :math:`W_3`'s filters. Nothing is computed at the high resolution: per low-resolution pixel the network
costs :math:`25 C n_1 + 9 n_1 n_2 + 9 n_2 C r^2` MACs, :math:`r^2` times fewer than the same convolutions
after a bicubic upsampling of the input (SRCNN's layout).

Heads by task kind (:mod:`suites.architectures._dense`): super-resolution as above (``sr-photos-x2``,
``sr-photos-x3``); any other kind gets the classification :meth:`build`, the two tanh convolutions, global
average pooling and a ``logits`` Dense layer (a vector (L,) laid out as (L, 1, 1), kernels k x 1), so every
backbone test can build it. ESPCN has no segmentation head.

Paper: Shi, Caballero, Huszar, Totz, Aitken, Bishop, Rueckert & Wang, "Real-Time Single Image and Video
Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016
(https://arxiv.org/abs/1609.05158). Scale: the paper's network at its own size (``full``). Deviations:

- RGB: the network maps the task's three channels (C = 3) to C r^2 = 3 r^2 maps; the paper super-resolves
  the luma Y alone (C = 1) and upscales the chroma bicubically. The task scores PSNR / SSIM on Y, as the
  paper does.
- The output is not clipped to [0, 1] in the model (the paper's last layer is linear too); the accuracy
  track clips and rounds to 8 bits before scoring, as the field's protocol does.
- Training follows the task's recipe (optimizer, schedule, patches), not the paper's (SGD from 0.01 to
  0.0001 on 17 r-pixel patches); the loss is the paper's mean squared error.
- ``bilinear_residual`` (off by default, so not ESPCN) adds the bilinear upsampling of the input to the
  shuffled output, so the network learns a residual, as ``fcn-small`` does; that sum is the one layer
  computed at the high resolution besides the shuffle.
"""

from __future__ import annotations

from typing import Any

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dense import DenseArchitecture, subpixel_convolution
from suites.architectures._layers import Geometry, logits_model, model_name


@register_method(
    "espcn",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network",
        2016,
        "https://arxiv.org/abs/1609.05158",
    ),
    summary="super-resolution at the low resolution: conv5x5(64)-tanh, conv3x3(32)-tanh, conv3x3 to C r^2, "
    "then one pixel shuffle (depth-to-space) to the HR image; RGB in and out",
    taxonomy=Taxonomy(applied="architecture"),
)
class Espcn(DenseArchitecture):
    default_options = {"filters1": 64, "filters2": 32, "bilinear_residual": False}

    def __init__(self, **options: Any):
        super().__init__(**options)
        for name in ("filters1", "filters2"):
            value = self.options[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"espcn option {name} is {value!r}; expected a positive integer")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        features = keras.layers.GlobalAveragePooling2D()(self.features(x, geometry))
        return logits_model(inputs, features, num_classes, model_name(self.spec.slug, self.options))

    def upscaler(self, input_shape: tuple[int, ...], scale: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs = keras.Input(shape=input_shape)
        image = subpixel_convolution(self.features(inputs, geometry), input_shape[-1], scale)
        if self.options["bilinear_residual"]:
            smooth = keras.layers.UpSampling2D(size=scale, interpolation="bilinear", name="bilinear")(inputs)
            image = keras.layers.Add(name="image")([smooth, image])
        return keras.Model(inputs, image, name=model_name(f"{self.spec.slug}-x{scale}", self.options))

    def features(self, x: tf.Tensor, geometry: Geometry) -> tf.Tensor:
        """f^2: the two tanh convolutions, at the input's resolution."""
        x = keras.layers.Conv2D(
            self.options["filters1"], geometry.kernel(5), padding="same", activation="tanh", name="features1"
        )(x)
        return keras.layers.Conv2D(
            self.options["filters2"], geometry.kernel(3), padding="same", activation="tanh", name="features2"
        )(x)
