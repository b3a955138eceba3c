"""Embedding-MLP: embed each id, concatenate, then an MLP: the deep baseline of CTR and token tasks.

Why: inputs that are ids (``ctr-synth``'s categorical fields, ``listops``' tokens; ``TaskSpec.vocabulary``)
mean nothing as magnitudes, so the plain ``mlp`` cannot use them. This backbone looks every id up in one
embedding table of ``vocabulary`` rows and ``dim`` columns (one table shared by all fields, as
hashed-embedding CTR models use), flattens the (positions, dim) embeddings and runs the ``mlp``'s blocks:
``layers`` x (Dense(``units``), ReLU), then Dense(num_classes) logits. On real-valued inputs (no
vocabulary) it is the ``mlp``. ``vocabulary`` = 0 (the default) takes the task's.

Paper: Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016
(https://arxiv.org/abs/1606.07792): its deep part, embeddings of sparse features fed to an MLP, which
click-through-rate papers (DCN, xDeepFM) compare explicit cross networks with. Deviations: no wide part,
one shared table, no dropout.
"""

from __future__ import annotations

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, TaskSpec, Taxonomy, register_method
from effbench.tf import keras
from suites.architectures._layers import logits_model, model_name


@register_method(
    "embedding-mlp",
    suite="architectures",
    kind="architecture",
    paper=Paper("Wide & Deep Learning for Recommender Systems", 2016, "https://arxiv.org/abs/1606.07792"),
    summary="embedding table for id inputs (CTR fields, tokens), flatten, MLP, logits; the mlp on real inputs",
    taxonomy=Taxonomy(applied="architecture"),
)
class EmbeddingMLP(ArchitectureMethod):
    default_options = {"dim": 16, "units": 256, "layers": 2, "vocabulary": 0}

    def build_for(self, spec: TaskSpec) -> keras.Model:
        return self.build_with(spec.input_shape, spec.num_classes, self.options["vocabulary"] or spec.vocabulary)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        return self.build_with(input_shape, num_classes, self.options["vocabulary"])

    def build_with(self, input_shape: tuple[int, ...], num_classes: int, vocabulary: int) -> keras.Model:
        inputs = keras.Input(shape=input_shape)
        x = inputs
        if vocabulary:
            # Ids arrive as float32 (as every task input does); the layer casts them to int32.
            x = keras.layers.Embedding(vocabulary, self.options["dim"], name="embedding")(x)
        x = keras.layers.Flatten()(x)
        for _ in range(self.options["layers"]):
            x = keras.layers.Dense(self.options["units"], activation="relu")(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))
