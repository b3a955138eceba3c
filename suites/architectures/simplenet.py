"""SimpleNet: a plain 13-layer conv net that matches much deeper ones on CIFAR.

Architecture (SimpleNet v1, 5.48M parameters on CIFAR-10): 13 convs, each followed by batch norm
and ReLU, with widths 64, 128, 128, 128 | 128, 128, 256 | 256, 256 | 512 | 2048 (1x1), 256 (1x1) |
256; all kernels are 3x3 except the two 1x1. A 2x2 max pool followed by spatial dropout
(``dropout``, default 0.1) sits at each "|", i.e. after convs 4, 7, 9, 10 and 12, as in the
authors' reference implementation. Then global max pooling, dropout and the logits Dense layer.
``width`` multiplies every conv (``round(c * width)``, at least 1). On 32x32x3 with 10 classes:
5,502,922 parameters (5,493,834 trainable, Keras also counts the BN moving statistics; the
paper reports 5.48M).

Paper: Hasanpour, Rouhani, Fayyaz & Sabokrou, "Lets keep it simple, Using simple architectures to
outperform deeper and more complex architectures", 2016 (https://arxiv.org/abs/1608.06037).
Deviations: convs have no bias (BN follows each); the paper's Xavier initialisation is replaced by
Keras' default Glorot uniform (the same family); on 32x32 inputs the last pool (2x2 -> 1x1) is
skipped because pools never leave fewer than 2 positions along an axis (see ``_layers``), so conv
13 sees 2x2 maps; the parameter count is unchanged.
"""

from __future__ import annotations

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from suites.architectures._layers import Geometry, conv_bn_act, logits_model, model_name, scaled

# (channels, kernel size) of each conv, in groups closed by max pool + dropout (the last is not).
GROUPS = (
    ((64, 3), (128, 3), (128, 3), (128, 3)),
    ((128, 3), (128, 3), (256, 3)),
    ((256, 3), (256, 3)),
    ((512, 3),),
    ((2048, 1), (256, 1)),
    ((256, 3),),
)


@register_method(
    "simplenet",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Lets keep it simple, Using simple architectures to outperform deeper and more complex architectures",
        2016,
        "https://arxiv.org/abs/1608.06037",
    ),
    summary="SimpleNet v1: 13 plain convs (3x3 and two 1x1) with BN+ReLU, max pools, dropout",
    taxonomy=Taxonomy(applied="architecture"),
)
class SimpleNet(ArchitectureMethod):
    default_options = {"width": 1.0, "dropout": 0.1}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        inputs, x = geometry.inputs()
        for index, group in enumerate(GROUPS):
            for channels, kernel in group:
                x = conv_bn_act(x, scaled(channels, self.options["width"]), geometry.kernel(kernel))
            if index < len(GROUPS) - 1:
                x = geometry.max_pool(x)
                x = keras.layers.SpatialDropout2D(self.options["dropout"])(x)
        x = keras.layers.GlobalMaxPooling2D()(x)
        x = keras.layers.Dropout(self.options["dropout"])(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))
