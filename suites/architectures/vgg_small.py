"""VGG-small: the CIFAR VGG used by the binarization / quantization literature.

Architecture (LQ-Nets' "VGG-Small"): six 3x3 convs 128-128-pool-256-256-pool-512-512-pool, each conv
followed by batch norm and ReLU, then a single Dense layer on the flattened features (512 x 4 x 4 on
CIFAR). The ``width`` multiplier scales every conv (``round(c * width)``, at least 1). On 32x32x3 with 10
classes: convs 4,574,592 + batch norms 7,168 (3,584 trainable; Keras counts the moving statistics too)
+ Dense 81,930 = 4,663,690 parameters (4,660,106 trainable), the ~4.6M the papers report.

Binarized by the operator protocol (the binarization suite's second image backbone,
``bnn:backbone=vgg-small``), the first conv and the Dense classifier stay full precision and the five
other convs take the operator, as in the binary VGG-small of IR-Net / ReCU / ReSTE (``vgg_small_1w1a``:
a float ``conv0`` and ``fc``) and as BiBench's VGG builds it (``bibench/models/backbones/vgg.py``: the
first stage's first conv with ``first_conv_cfg=None``, the rest with the operator's ``conv_cfg``, and a
float ``nn.Linear`` classifier). BiBench itself has no VGG-small: its ``backbones/vgg_cifar.py`` is a
five-line stub of imports and ``configs/acc_cifar10`` has no VGG config; its generic ``VGG`` builds each
conv as mmcv's ``ConvModule`` (conv with bias, BN, activation, in that order) and pools after the
activation, as here.

Paper: Zhang et al., "LQ-Nets: Learned Quantization for Highly Accurate and Compact Deep Neural
Networks", ECCV 2018 (https://arxiv.org/abs/1807.10029). Deviations: convs have no bias (the batch norm after
each has one; BiBench's ``ConvModule`` keeps one, LQ-Nets' and IR-Net's code has none), and pooling
comes after batch norm + ReLU, as in BiBench's ``VGG``, rather than between the conv and its batch norm
as in IR-Net / ReCU's ``vgg_small_1w1a`` (the parameter count is the same). Pools that would leave fewer
than 2 positions along an axis are skipped (see ``_layers``), which changes nothing on CIFAR; on 8x8
``digits`` the third pool is skipped and the classifier sees 512 x 2 x 2 features.
"""

from __future__ import annotations

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from suites.architectures._layers import Geometry, conv_bn_act, logits_model, model_name, scaled

# Conv widths per stage; a 2x2 max pool closes each stage.
STAGES = ((128, 128), (256, 256), (512, 512))


@register_method(
    "vgg-small",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "LQ-Nets: Learned Quantization for Highly Accurate and Compact Deep Neural Networks",
        2018,
        "https://arxiv.org/abs/1807.10029",
    ),
    summary="VGG-small (LQ-Nets/BiBench): 6 convs 128-128-256-256-512-512, BN+ReLU, one Dense",
    taxonomy=Taxonomy(applied="architecture"),
)
class VGGSmall(ArchitectureMethod):
    default_options = {"width": 1.0}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        for stage in STAGES:
            for channels in stage:
                x = conv_bn_act(x, scaled(channels, self.options["width"]), geometry.kernel(3))
            x = geometry.max_pool(x)
        x = keras.layers.Flatten()(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))
