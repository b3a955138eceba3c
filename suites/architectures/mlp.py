"""MLP: the fully-connected baseline.

Architecture: flatten the input (any shape), then ``layers`` hidden blocks of
Dense(``units``) -> ReLU -> Dropout(``dropout``), then Dense(num_classes) logits. Defaults: 2 hidden
layers of 256 units, no dropout (the dropout layer is left out when the rate is 0). On 32x32x3 with
10 classes that is 3072*256+256 + 256*256+256 + 256*10+10 = 855,050 parameters.

Paper: Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors",
Nature 1986 (https://www.nature.com/articles/323533a0): the multi-layer perceptron trained by
backpropagation. Deviation: ReLU instead of the paper's logistic units, as every modern MLP uses.
"""

from __future__ import annotations

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from suites.architectures._layers import logits_model, model_name


@register_method(
    "mlp",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Learning representations by back-propagating errors",
        1986,
        "https://www.nature.com/articles/323533a0",
    ),
    summary="MLP: flatten, `layers` x (Dense(`units`), ReLU, dropout), logits",
    taxonomy=Taxonomy(applied="architecture"),
)
class MLP(ArchitectureMethod):
    default_options = {"units": 256, "layers": 2, "dropout": 0.0}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Flatten()(inputs)
        for _ in range(self.options["layers"]):
            x = keras.layers.Dense(self.options["units"], activation="relu")(x)
            if self.options["dropout"] > 0:
                x = keras.layers.Dropout(self.options["dropout"])(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))
