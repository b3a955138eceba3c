r"""APTP, small-faithful: an input router choosing one of K pruned architecture codes of a classifier per input.

Mechanism (Adaptive Prompt-Tailored Pruning, on a classifier instead of a text-to-image U-Net). The gated
channel groups :math:`s` of the trained backbone (:func:`suites.pruning._channel_masks.gate_sites`, :math:`D`
channels in all) are masked per input by one of :math:`K` learned *architecture codes*
:math:`\theta_k \in \mathbb{R}^D`. A router reads the input :math:`x` and outputs an architecture vector
:math:`r(x) \in \mathbb{R}^D` (a two-layer MLP of the flattened input, in place of the paper's text encoder and
GRU hypernetwork). With the Gumbel-sigmoid :math:`g(z) = \sigma((z + \beta + \log u - \log(1 - u)) / T)`,
:math:`u \sim U(0, 1)`, :math:`\beta = 3`, :math:`T = 0.4` (the code's ``quantizer_base`` and
``quantizer_T``):

.. math::  a = g(r(x)), \quad v_k = g(\theta_k), \quad S_{bk} = \cos(a_b, v_k), \qquad
           k^*(b) = \arg\max_k Q_{bk} \ \text{(training)}, \quad \arg\max_k S_{bk} \ \text{(inference)}

where :math:`Q` is the Sinkhorn optimal-transport assignment of the batch to the codes with uniform marginals
(:math:`\epsilon = 0.05`, 3 iterations): every code gets a share of each batch, which stops the codes
collapsing into one (the diversity mechanism). The input's masks are :math:`m = v_{k^*}`, soft in training
and hard at inference (:math:`\mathbb{1}[\theta_k + \beta > 0]`, at least one channel per group). Trained
jointly with the backbone, with the task loss plus

.. math::  2 \left|\log \bar\rho - \log p\right| - 0.1\,\operatorname{std}_b \rho_b + 0.1 (1 - \max_b \rho_b)
           + 100\,\operatorname{BCE}\bigl(\operatorname{softmax}(\hat a \hat a^\top / 0.03),
           \operatorname{softmax}(\hat e \hat e^\top / 0.03)\bigr) + 0.25 \lVert a - \operatorname{sg}(m) \rVert^2

:math:`\rho_b` being input :math:`b`'s fraction of the gated layers' MACs (each layer's MACs times the mask
fractions of the groups it produces, filters or reads), :math:`p = 1 - s` the budget (``sparsity`` :math:`s`,
the fraction of those MACs removed on average), and the contrastive term making the router's architecture
vectors :math:`\hat a` as similar to each other as the inputs :math:`\hat e` are (the paper's prompt
embeddings; here the flattened input the router reads), and the vector-quantisation commitment
(``arch_vq_beta`` = 0.25) pulling the router's vector to the code the transport assigned, so that the
inference argmax picks what training balanced. The task loss trains the codes (through :math:`v`) and the
backbone; the router learns from the contrastive and commitment terms (the assignment is an argmax).

Deployables: the routed model (main: router, backbone and code gates, dense-with-masks in Keras, as each
input's code's channels would be computed), and each code's physically pruned backbone as ``code-<k>``
(:func:`effbench.channels.remove_channels`), a static model a batch of inputs routed to that code runs at
full batch parallelism. Facts: per-code usage and MACs on the validation split, and the routed model's
per-input MACs and batch-64 union (:func:`suites.pruning._channel_masks.dynamic_facts`).

Paper: Ganjdanesh, Shirkavand, Gao & Huang, "Not All Prompts Are Made Equal: Prompt-based Pruning of
Text-to-Image Diffusion Models", 2024 (https://arxiv.org/abs/2406.12042); official code
rezashkv/diffusion_pruning (``pdm/models/vq/quantizer.py``, ``pdm/losses/``, ``configs/pruning/``).
Small-faithful: a classifier's channel groups instead of a U-Net's widths and depths, :math:`K = 4` codes (the
config: 8), a small MLP router on the raw input. Deviations: no distillation or block losses against the
dense model; the codes' and router's logits are scaled by 100 (under Adam a 100x learning rate: the budgets
here are hundreds of steps, not 5,000), codes start orthogonal and small, so every channel starts on.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from effbench.channels import channel_groups, remove_channels
from effbench.method import MAIN, Artifact, Deployable
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.pruning._channel_masks import (
    ChannelGate,
    copy_weights,
    dynamic_facts,
    gate_masks,
    gate_sites,
    input_macs,
    insert_gates,
    keep_facts,
    mac_terms,
    require_positive_ints,
)
from suites.pruning.base import PruningMethod

TEMPERATURE = 0.4
OFFSET = 3.0
# Architecture logits (codes, router output) are these parameters times ARCH_RATE: a learning-rate multiplier.
ARCH_RATE = 100.0
SINKHORN_EPSILON = 0.05
SINKHORN_ITERATIONS = 3
SIMILARITY_TEMPERATURE = 0.03
LOSS_WEIGHTS = {"resource": 2.0, "std": 0.1, "max": 0.1, "contrastive": 100.0, "commitment": 0.25}
ROUTER_UNITS = 32


def gumbel_sigmoid(logits: tf.Tensor, training: bool) -> tf.Tensor:
    r""":math:`\sigma((z + \beta + \log u - \log(1 - u)) / T)` in training, without the noise at inference."""
    if training:
        u = tf.random.uniform(tf.shape(logits), 1e-6, 1.0 - 1e-6)
        logits = logits + tf.math.log(u) - tf.math.log(1.0 - u)
    return tf.sigmoid((logits + OFFSET) / TEMPERATURE)


def sinkhorn(scores: tf.Tensor, epsilon: float = SINKHORN_EPSILON, iterations: int = SINKHORN_ITERATIONS) -> tf.Tensor:
    """(batch, codes) assignment with uniform marginals (SwAV's Sinkhorn-Knopp, as APTP's quantizer uses it)."""
    q = tf.exp((scores - tf.reduce_max(scores)) / epsilon)
    q = q / tf.reduce_sum(q)
    batch, codes = tf.cast(tf.shape(q)[0], q.dtype), tf.cast(tf.shape(q)[1], q.dtype)
    for _ in range(iterations):
        q = q / tf.reduce_sum(q, axis=0, keepdims=True) / codes
        q = q / tf.reduce_sum(q, axis=1, keepdims=True) / batch
    return q * batch


def similarity_bce(vectors: tf.Tensor, references: tf.Tensor) -> tf.Tensor:
    """APTP's contrastive loss: BCE of the vectors' softmaxed cosine similarities against the references'."""
    a, e = tf.math.l2_normalize(vectors, axis=-1), tf.math.l2_normalize(references, axis=-1)
    predicted = tf.nn.softmax(tf.matmul(a, a, transpose_b=True) / SIMILARITY_TEMPERATURE, axis=-1)
    target = tf.nn.softmax(tf.matmul(e, e, transpose_b=True) / SIMILARITY_TEMPERATURE, axis=-1)
    predicted = tf.clip_by_value(predicted, 1e-7, 1.0 - 1e-7)
    return -tf.reduce_mean(target * tf.math.log(predicted) + (1.0 - target) * tf.math.log(1.0 - predicted))


@keras.utils.register_keras_serializable(package="effbench")
class CodeRouter(keras.layers.Layer):
    """The router and the K codes: maps an input batch to each input's code mask over all gated channels.

    ``widths``: channels per gated group (the mask's slices, in order); ``terms``: ``[macs, [groups]]`` of every
    gated layer (the resource loss); ``budget``: the MACs fraction :math:`p` kept on average.
    """

    def __init__(self, widths: list[int], codes: int, terms: list, budget: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.widths, self.codes, self.terms, self.budget = list(widths), int(codes), [list(t) for t in terms], budget
        self.starts = [sum(self.widths[:index]) for index in range(len(self.widths))]

    def build(self, input_shape: tf.TensorShape) -> None:
        features, total = math.prod(input_shape[1:]), sum(self.widths)
        self.hidden_kernel = self.add_weight(name="hidden_kernel", shape=(features, ROUTER_UNITS))
        self.hidden_bias = self.add_weight(name="hidden_bias", shape=(ROUTER_UNITS,), initializer="zeros")
        self.output_kernel = self.add_weight(name="output_kernel", shape=(ROUTER_UNITS, total))
        self.output_bias = self.add_weight(name="output_bias", shape=(total,), initializer="zeros")
        self.code_logits = self.add_weight(
            name="code_logits", shape=(self.codes, total), initializer=keras.initializers.Orthogonal(1.0 / ARCH_RATE)
        )
        super().build(input_shape)

    def flat(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(x, [-1, math.prod(x.shape[1:])])

    def architecture(self, flat: tf.Tensor) -> tf.Tensor:
        """The router's architecture logits r(x), (batch, D)."""
        hidden = tf.nn.relu(tf.matmul(flat, self.hidden_kernel) + self.hidden_bias)
        return ARCH_RATE * (tf.matmul(hidden, self.output_kernel) + self.output_bias)

    def hard_codes(self) -> tf.Tensor:
        """(K, D) {0, 1} code masks: logit + offset > 0, and each group's strongest channel where none is."""
        logits = ARCH_RATE * self.code_logits
        slices = []
        for start, width in zip(self.starts, self.widths, strict=True):
            part = logits[:, start : start + width]
            on = tf.cast(part + OFFSET > 0, part.dtype)
            empty = tf.cast(tf.reduce_sum(on, axis=1, keepdims=True) == 0, part.dtype)
            slices.append(tf.maximum(on, empty * tf.one_hot(tf.argmax(part, axis=1), width, dtype=part.dtype)))
        return tf.concat(slices, axis=1)

    def scores(self, x: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(cosine similarities (batch, K), the codes' masks (K, D), the router's vectors (batch, D))."""
        vectors = gumbel_sigmoid(self.architecture(self.flat(x)), training)
        masks = gumbel_sigmoid(ARCH_RATE * self.code_logits, True) if training else self.hard_codes()
        unit_vectors, unit_masks = tf.math.l2_normalize(vectors, axis=-1), tf.math.l2_normalize(masks, axis=-1)
        return tf.matmul(unit_vectors, unit_masks, transpose_b=True), masks, vectors

    def assignments(self, x: tf.Tensor) -> tf.Tensor:
        """Each input's code at inference."""
        return tf.argmax(self.scores(x, training=False)[0], axis=-1)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        training = bool(training)
        similarity, masks, vectors = self.scores(x, training)
        chosen = tf.argmax(tf.stop_gradient(sinkhorn(similarity)) if training else similarity, axis=-1)
        route = tf.gather(masks, chosen)
        if training:
            commitment = tf.reduce_mean(tf.reduce_sum(tf.square(vectors - tf.stop_gradient(route)), axis=-1))
            self.add_loss(self.pruning_loss(route, vectors, self.flat(x)) + LOSS_WEIGHTS["commitment"] * commitment)
        return route

    def mac_fractions(self, route: tf.Tensor) -> tf.Tensor:
        """(batch,): each input's fraction of the gated layers' MACs under its masks."""
        fractions = [tf.reduce_mean(route[:, s : s + w], axis=1) for s, w in zip(self.starts, self.widths, strict=True)]
        kept = [macs * tf.reduce_prod(tf.stack([fractions[s] for s in sites]), axis=0) for macs, sites in self.terms]
        return tf.add_n(kept) / sum(macs for macs, _ in self.terms)

    def pruning_loss(self, route: tf.Tensor, vectors: tf.Tensor, flat: tf.Tensor) -> tf.Tensor:
        ratio = self.mac_fractions(route)
        resource = tf.abs(tf.math.log(tf.reduce_mean(ratio)) - math.log(self.budget))
        spread = tf.math.reduce_std(ratio)
        return (
            LOSS_WEIGHTS["resource"] * resource - LOSS_WEIGHTS["std"] * spread
            + LOSS_WEIGHTS["max"] * (1.0 - tf.reduce_max(ratio))
            + LOSS_WEIGHTS["contrastive"] * similarity_bce(vectors, flat)
        )  # fmt: skip

    def effbench_cost(self, input_shapes: list[tuple[int, ...]], output_shapes: list[tuple[int, ...]]):
        features, total = math.prod(input_shapes[0][1:]), sum(self.widths)
        macs = features * ROUTER_UNITS + ROUTER_UNITS * total + total * self.codes
        # Biases, ReLU, sigmoid, the norms and the argmax over the codes.
        return macs, 2 * ROUTER_UNITS + 3 * total + 2 * self.codes

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape([input_shape[0], sum(self.widths)])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "widths": self.widths, "codes": self.codes, "terms": self.terms,
                "budget": self.budget}  # fmt: skip


@keras.utils.register_keras_serializable(package="effbench")
class CodeGate(ChannelGate):
    """Masks one gated group with its slice ``[start, start + channels)`` of the router's route."""

    def __init__(self, start: int, channels: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.start, self.channels = int(start), int(channels)

    def channel_mask(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        return inputs[1][:, self.start : self.start + self.channels]

    def mask_cost(self, input_shapes: list[tuple[int, ...]]) -> tuple[int, int]:
        return 0, 0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "channels": self.channels}


@register_method(
    "aptp-router",
    suite="pruning",
    kind="compression",
    paper=Paper(
        "Not All Prompts Are Made Equal: Prompt-based Pruning of Text-to-Image Diffusion Models",
        2024,
        "https://arxiv.org/abs/2406.12042",
    ),
    summary="input router over K channel-mask codes of the trained backbone, trained jointly with a MACs budget, "
    "optimal-transport balance and a contrastive term; the routed model and each code's pruned model",
    taxonomy=Taxonomy(structured=True, dynamic=True, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class APTPRouter(PruningMethod):
    """Options: ``sparsity`` (0.4: the fraction of the gated layers' MACs removed on average; the paper's config
    keeps 0.6), ``codes`` (K = 4). Deployables: the routed model, then ``code-0`` ... ``code-<K-1>``."""

    default_options: ClassVar[dict[str, Any]] = {**PruningMethod.default_options, "sparsity": 0.4, "codes": 4}

    def __init__(self, **options: Any):
        super().__init__(**options)
        require_positive_ints(self, "codes")
        if self.options["sparsity"] == 0:
            raise ValueError("aptp-router: sparsity must be above 0 (its budget is a fraction of MACs kept)")

    def deployable_names(self) -> tuple[str, ...]:
        return (MAIN, *(f"code-{k}" for k in range(self.options["codes"])))

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        sites = gate_sites(model)
        if not sites:
            raise ValueError(f"aptp-router: model '{model.name}' has no channel group a code can mask")
        terms = [[term.macs, list(term.sites)] for term in mac_terms(model, sites) if term.sites]
        budget = 1.0 - float(self.options["sparsity"])
        router = CodeRouter([site.channels for site in sites], self.options["codes"], terms, budget, name="aptp_router")
        routes: dict[str, Any] = {}
        names = [f"{site.producer}_code" for site in sites]

        def gate(index: int, site: Any, features: Any, source: Any, inputs: list) -> Any:
            if "route" not in routes:
                routes["route"] = router(inputs[0])
            return CodeGate(router.starts[index], site.channels, name=names[index])([features, routes["route"]])

        routed = insert_gates(model, sites, gate)
        history, seconds = fit(routed, context)
        return self.artifact(model, routed, router, sites, names, context, history, seconds)

    def artifact(
        self, model: keras.Model, routed: keras.Model, router: CodeRouter, sites: list, names: list[str],
        context: TrainContext, history: dict, seconds: float,
    ) -> Artifact:  # fmt: skip
        """The routed model with its usage and MACs facts, and each code's physically pruned backbone."""
        x_val = context.splits.x_val
        chosen = np.concatenate([router.assignments(tf.constant(x_val[i : i + 256])).numpy()
                                 for i in range(0, len(x_val), 256)])  # fmt: skip
        usage = np.bincount(chosen, minlength=router.codes) / len(chosen)
        hard = router.hard_codes().numpy()
        slices = [slice(start, start + width) for start, width in zip(router.starts, router.widths, strict=True)]
        code_fractions = np.array([[hard[k, part].mean() for part in slices] for k in range(router.codes)])
        code_macs = input_macs(mac_terms(routed, sites), code_fractions)
        masks = gate_masks(routed, names, x_val)
        facts = dynamic_facts(routed, sites, masks, f"validation split ({len(x_val)} inputs)")
        target = float(self.options["sparsity"])
        plain = copy_weights(routed, keras.models.clone_model(model))
        groups = channel_groups(plain)
        deployables = {}
        for k in range(router.codes):
            keep = {site.group: np.flatnonzero(hard[k, part]) for site, part in zip(sites, slices, strict=True)}
            code_facts = {"code": k, "usage": round(float(usage[k]), 6), "sparsity_target": target,
                          **keep_facts(plain, groups, keep)}  # fmt: skip
            deployables[f"code-{k}"] = Deployable(remove_channels(plain, keep), facts=code_facts)
        main_facts = {
            "sparsity_target": target,
            "sparsity_by_layer": {n: round(1.0 - f, 6) for n, f in facts["active_fraction_by_site"].items()},
            "code_usage": [round(float(u), 6) for u in usage],
            "code_macs_routed": [round(float(m), 1) for m in code_macs],
            **facts,
        }
        return Artifact(routed, history, seconds, deployables=deployables, facts=main_facts)
