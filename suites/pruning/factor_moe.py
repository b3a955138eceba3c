r"""FactorLLM, small-faithful: a trained dense FFN factorised into routed experts, with a prior-approximate router.

Mechanism. A dense FFN :math:`y = W_2\,\phi(W_1 x + b_1)` of :math:`U` hidden units (the up-projection
:math:`W_1` and the layer reading its units, :math:`W_2`) is split, without changing a weight, into :math:`E`
experts by partitioning the hidden units into contiguous slices :math:`U_1, \dots, U_E` (the official code's
``[j * hidden_dim, (j + 1) * hidden_dim)``): expert :math:`e` is :math:`y_e = W_2[U_e]\,\phi(W_1[:, U_e]^\top x
+ b_1[U_e])` and :math:`y = \sum_e y_e`. A router :math:`g(x) = W_r x + b_r \in \mathbb{R}^E` (per token for a
transformer's FFN) activates the top-:math:`k` experts per input, :math:`k = \operatorname{round}((1 - s) E)`
(``sparsity`` :math:`s`: the fraction of hidden units idle per input), so only their units are computed:
:math:`\hat y = \sum_{e \in \operatorname{top}_k(g(x))} y_e` (a {0, 1} mask on the hidden units, a gate of
:mod:`suites.pruning._channel_masks`).

The router learns with the Prior-Approximate loss (the code's ``route_loss``): the prior marks the :math:`k`
experts whose outputs best approximate their share of the dense output,

.. math::  \epsilon_e = \operatorname{mean}\bigl(y_e - y / (E/k)\bigr)^2, \qquad
           \pi = \operatorname{top}_k(-\epsilon) \in \{0, 1\}^E, \qquad
           \mathcal{L}_{PA} = \operatorname{KL}\bigl(\operatorname{softmax}(g)\,\Vert\,\operatorname{softmax}(\pi)\bigr)

plus the code's balance term :math:`\operatorname{mean}(\operatorname{top}_k(q) \odot q)`, :math:`q =
\operatorname{softmax}(g)`; loss :math:`\mathcal{L}_{task} + 0.05\,\mathcal{L}_{PA} + 0.01\,\mathcal{L}_{bal}`
(the code's weights). The top-:math:`k` mask is a step, so the task loss trains only the experts. The FFN
layers and routers train briefly (the task's fine-tune recipe) from the trained backbone; every other layer is
frozen, as the code freezes attention, embeddings and norms.

Tasks. Every FFN the backbone has: each dense layer whose units one dense layer reads (through activations
only), so ``mlp`` on vector tasks (``mnist1d``; its two hidden layers are two FFNs), ``embedding-mlp`` on
token and categorical tasks (``listops``, ``ctr-synth``), ``tiny-transformer`` (its blocks' MLPs, routed per
token) on any task it builds on. An image backbone without dense FFNs (``resnet-cifar``, ``mobilenetv2``) is
refused with a clear error.

Recorded (facts): the active parameters per input (dense params minus the idle units' share of each FFN's
weights), the per-input MACs against the static count and the batch-64 union of the expert masks
(:func:`suites.pruning._channel_masks.dynamic_facts`). The deployed Keras model computes dense-with-masks.

Paper: Zhao et al., "FactorLLM: Factorizing Knowledge via Mixture of Experts for Large Language Models", 2024
(https://arxiv.org/abs/2408.11855); official code zhenwuweihe/FactorLLM (``new_model_KD.py``, ``loss.py``,
``train.py``). Small-faithful: classifier FFNs instead of TinyLlama's gated FFNs; :math:`E = 4`, :math:`k = 2`
as the code. Deviations: the prior is computed on the routed network's own FFN inputs (the code uses the dense
teacher's hidden states); no distillation from the dense model.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.pruning._channel_masks import (
    ChannelGate,
    GateSite,
    active_fractions,
    dynamic_facts,
    gate_masks,
    gate_sites,
    insert_gates,
    require_positive_ints,
)
from suites.pruning.base import PruningMethod

ROUTE_WEIGHT = 0.05
BALANCE_WEIGHT = 0.01
FFN_BACKBONES = "mlp (vector tasks), embedding-mlp (token / categorical tasks) or tiny-transformer"


def top_k_indicator(scores: tf.Tensor, k: int) -> tf.Tensor:
    """{0, 1} over the last axis: 1 for the ``k`` largest scores (ties to the earlier index)."""
    indices = tf.math.top_k(scores, k=k).indices
    return tf.reduce_sum(tf.one_hot(indices, scores.shape[-1], dtype=scores.dtype), axis=-2)


def expert_assignment(units: int, experts: int) -> np.ndarray:
    """(experts, units) {0, 1}: expert ``e`` owns the ``e``-th contiguous slice of the hidden units."""
    owner = np.concatenate([np.full(len(part), e) for e, part in enumerate(np.array_split(np.arange(units), experts))])
    return (owner[None, :] == np.arange(experts)[:, None]).astype(np.float32)


@keras.utils.register_keras_serializable(package="effbench")
class ExpertGate(ChannelGate):
    """A linear top-``k`` router over ``experts`` contiguous slices of an FFN's hidden units.

    Called on ``[hidden, ffn_input]``; routes every position of ``ffn_input`` (a token) on its own.
    """

    def __init__(self, experts: int = 4, top_k: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        if not 1 <= top_k <= experts:
            raise ValueError(f"ExpertGate: top_k {top_k} must be between 1 and experts {experts}")
        self.experts, self.top_k = int(experts), int(top_k)

    def build(self, input_shape: Any) -> None:
        hidden, source = (tuple(shape) for shape in input_shape)
        if hidden[-1] < self.experts:
            raise ValueError(f"ExpertGate '{self.name}': {hidden[-1]} hidden units cannot make {self.experts} experts")
        self.kernel = self.add_weight(name="kernel", shape=(source[-1], self.experts))
        self.bias = self.add_weight(name="bias", shape=(self.experts,), initializer="zeros")
        self.assignment = tf.constant(expert_assignment(hidden[-1], self.experts))
        super().build(input_shape)

    def router_logits(self, source: tf.Tensor) -> tf.Tensor:
        return tf.tensordot(source, self.kernel, axes=1) + self.bias

    def channel_mask(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        active = top_k_indicator(tf.stop_gradient(self.router_logits(inputs[1])), self.top_k)
        return tf.tensordot(active, self.assignment, axes=1)

    def prior_loss(self, hidden: tf.Tensor, source: tf.Tensor, down_kernel: tf.Tensor) -> tf.Tensor:
        """The Prior-Approximate and balance terms (module docstring) for this FFN, weighted."""
        contributions = tf.einsum("...u,eu,uo->...eo", hidden, self.assignment, down_kernel)
        share = tf.reduce_sum(contributions, axis=-2, keepdims=True) * (self.top_k / self.experts)
        errors = tf.reduce_mean(tf.square(contributions - share), axis=-1)
        prior = tf.nn.softmax(top_k_indicator(-errors, self.top_k), axis=-1)
        routed = tf.nn.softmax(self.router_logits(source), axis=-1)
        routed_clipped, prior = tf.clip_by_value(routed, 1e-7, 1 - 1e-7), tf.clip_by_value(prior, 1e-7, 1 - 1e-7)
        divergence = tf.reduce_mean(tf.reduce_sum(routed_clipped * tf.math.log(routed_clipped / prior), axis=-1))
        balance = tf.reduce_mean(top_k_indicator(routed, self.top_k) * routed)
        return ROUTE_WEIGHT * divergence + BALANCE_WEIGHT * balance

    def mask_cost(self, input_shapes: list[tuple[int, ...]]) -> tuple[int, int]:
        positions = math.prod(input_shapes[1][1:-1])
        # The router's matmul, its bias add and the top-k comparisons per position.
        return positions * input_shapes[1][-1] * self.experts, positions * 2 * self.experts

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "experts": self.experts, "top_k": self.top_k}


class PriorApproximation(keras.Model):
    """Trains a routed model with the task loss plus each gate's :meth:`ExpertGate.prior_loss`.

    A training wrapper, not a deployable: it reads each gate's inputs and the kernel of the layer reading the
    gated units (the FFN's down-projection) through a probe model sharing the routed model's layers.
    """

    def __init__(self, routed: keras.Model, gates: list[str], downs: list[str]):
        super().__init__(name=f"{routed.name}_prior_approximation")
        self.routed = routed
        self.gates = [routed.get_layer(name) for name in gates]
        self.downs = [routed.get_layer(name) for name in downs]
        self.probe = keras.Model(routed.inputs, [routed.outputs[0], *[gate.input for gate in self.gates]])

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.routed(x, training=training)

    def train_step(self, data: tuple) -> dict[str, tf.Tensor]:
        x, y = data
        with tf.GradientTape() as tape:
            logits, *gate_inputs = self.probe(x, training=True)
            loss = self.compiled_loss(y, logits, regularization_losses=self.routed.losses)
            for gate, down, (hidden, source) in zip(self.gates, self.downs, gate_inputs, strict=True):
                hidden, source, kernel = (tf.stop_gradient(t) for t in (hidden, source, down.kernel))
                loss += gate.prior_loss(hidden, source, kernel)
        variables = self.routed.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        self.compiled_metrics.update_state(y, logits)
        return {metric.name: metric.result() for metric in self.metrics}


def ffn_sites(model: keras.Model) -> list[GateSite]:
    """The gate sites that are dense FFNs: a dense producer read by one dense layer through activations only."""
    sites = []
    for site in gate_sites(model):
        readers = [model.get_layer(name) for name in site.readers]
        if type(model.get_layer(site.producer)) is keras.layers.Dense and len(readers) == 1 and not site.chain:
            if type(readers[0]) is keras.layers.Dense:
                sites.append(site)
    return sites


def active_params(model: keras.Model, sites: list[GateSite], fractions: np.ndarray) -> np.ndarray:
    """Params each input uses, (inputs,): an FFN kernel scaled by the active fraction of every site whose units it
    makes or reads, a producer's bias by its site's; every other weight in full. ``fractions``: (inputs, sites)."""
    total = np.zeros(len(fractions))
    for layer in model.layers:
        for weight in layer.weights:
            kind = weight.name.rsplit("/", 1)[-1].split(":")[0]
            related = [i for i, site in enumerate(sites) if layer.name == site.producer]
            if kind == "kernel" and type(layer) is keras.layers.Dense:
                related += [i for i, site in enumerate(sites) if layer.name in site.readers]
            elif kind != "bias" or type(layer) is not keras.layers.Dense:
                related = []
            total += int(np.prod(weight.shape)) * np.prod(fractions[:, related], axis=1)
    return total


@register_method(
    "factor-moe",
    suite="pruning",
    kind="compression",
    paper=Paper(
        "FactorLLM: Factorizing Knowledge via Mixture of Experts for Large Language Models",
        2024,
        "https://arxiv.org/abs/2408.11855",
    ),
    summary="each trained dense FFN split into E routed experts (contiguous hidden units), top-k router trained "
    "briefly with the prior-approximate loss; records active params and MACs per input",
    taxonomy=Taxonomy(structured=True, dynamic=True, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class FactorMoE(PruningMethod):
    """Options: ``experts`` (E = 4), ``sparsity`` (0.5: the fraction of experts idle per input, so top-2 of 4)."""

    default_options: ClassVar[dict[str, Any]] = {**PruningMethod.default_options, "sparsity": 0.5, "experts": 4}

    def __init__(self, **options: Any):
        super().__init__(**options)
        require_positive_ints(self, "experts")
        if self.top_k < 1:
            raise ValueError(
                f"factor-moe: sparsity {self.options['sparsity']} leaves no expert of {self.options['experts']} active"
            )

    @property
    def top_k(self) -> int:
        return int(round((1.0 - float(self.options["sparsity"])) * self.options["experts"]))

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        sites = ffn_sites(model)
        if not sites:
            raise ValueError(
                f"factor-moe splits dense FFNs into experts, and backbone '{model.name}' has none (a dense layer whose "
                f"units one dense layer reads): use {FFN_BACKBONES}"
            )
        names = [f"{site.producer}_experts" for site in sites]
        experts, top_k = self.options["experts"], self.top_k

        def gate(index: int, site: GateSite, features: Any, source: Any, inputs: list) -> Any:
            return ExpertGate(experts, top_k, name=names[index])([features, source])

        routed = insert_gates(model, sites, gate)
        trained = set(names) | {site.producer for site in sites} | {site.readers[0] for site in sites}
        for layer in routed.layers:
            layer.trainable = layer.name in trained
        trainable = sum(int(np.prod(w.shape)) for w in routed.trainable_weights)
        trainer = PriorApproximation(routed, names, [site.readers[0] for site in sites])
        history, seconds = fit(trainer, context)
        for layer in routed.layers:
            layer.trainable = True
        x_val = context.splits.x_val
        masks = gate_masks(routed, names, x_val)
        facts = dynamic_facts(routed, sites, masks, f"validation split ({len(x_val)} inputs)")
        fractions = facts["active_fraction_by_site"]
        used = active_params(routed, sites, active_fractions(masks))
        facts = {
            "sparsity_target": float(self.options["sparsity"]),
            "sparsity_by_layer": {name: round(1.0 - value, 6) for name, value in fractions.items()},
            "experts": experts,
            "top_k": top_k,
            "ffn_layers": [[site.producer, site.readers[0]] for site in sites],
            "params": int(routed.count_params()),
            "active_params_per_input_mean": round(float(used.mean()), 1),
            "trainable_fraction": round(trainable / routed.count_params(), 6),
            **facts,
        }
        return Artifact(routed, history, seconds, facts=facts)
