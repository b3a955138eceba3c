r"""Fire Together Wire Together (FTWT): dynamic channel pruning with self-supervised mask predictors.

Mechanism. Every gated channel group :math:`s` (a site of :func:`suites.pruning._channel_masks.gate_sites`:
a conv / dense layer's output channels, read through a per-channel chain by the next layers) gets a small
mask predictor that reads the *input* :math:`a` of the group's producer (the previous layer's activations)
and predicts which of its :math:`C` output channels will fire:

.. math::  z = W\,\operatorname{softmax}\bigl(\operatorname{GAP}(a)\bigr) + b \in \mathbb{R}^C, \qquad
           m = \mathbb{1}[\sigma(z) > 0.5], \qquad y = x \odot m

(:math:`x` the group's activations at the end of its chain; the official code's predictor: adaptive average
pooling, a softmax over channels, a 1x1 conv). Channels with :math:`m_c = 0` are never needed for this input,
so the producer, the chain's depthwise conv and the readers skip them (dynamic pruning). Training is
self-supervised and decoupled. The target is the top-k of the channels' heatmaps,
:math:`h_c = \max_{p} |x_{p,c}|` (the code's ``get_fmap_criteria``), with :math:`k` chosen per input:

- ``criterion=mass`` (the paper's): normalise :math:`\hat h = h / \sum_c h_c`, sort descending, and keep the
  smallest prefix whose mass reaches ``mass``: :math:`t_c = 1` iff the mass of the channels ranked above
  :math:`c` is below ``mass`` (and :math:`h_c > 0`);
- ``criterion=uniform`` (the code's ``gt_type=uniform``): keep the :math:`C - \lfloor sC \rfloor` strongest
  (``sparsity`` :math:`s`), of those with :math:`h_c > 0`.

The predictor learns :math:`\mathcal{L}_{mask} = \frac{1}{S} \sum_s \frac{1}{B} \sum_{b,c}
\operatorname{BCE}(z_{b,c}, t_{b,c})` on its detached input (``mode=decoupled``), weighted 1 for the first half
of the epochs and 0 after (the code's ``cooldown=0.5``); the backbone learns the task loss with the predicted
hard masks applied (no gradient reaches the predictors from it: the mask is a step). Both train together from
the trained backbone with the task's fine-tune recipe.

Recorded (facts, :func:`suites.pruning._channel_masks.dynamic_facts`): the MACs each validation input actually
computes (exact: each conv / dense layer's MACs times the active fractions of the groups it produces, filters or
reads; the predictors' MACs included), their mean against the static count, and the batch effect: at batch 64
a dense kernel computes the union of the 64 masks, whose density is recorded with the MACs it implies. The
deployed Keras model computes dense-with-masks: its static MACs are what the complexity track counts.

Paper: Elkerdawy, Elhoushi, Zhang & Ray, "Fire Together Wire Together: A Dynamic Pruning Approach with
Self-Supervised Mask Prediction", CVPR 2022 (https://arxiv.org/abs/2110.08232); official code
selkerdawy/FTWT (``utils/layers.py``, ``utils/utils.py``, ``cifar.py``). Deviations: one gate per channel group
(a MobileNetV2 block's expansion and depthwise share one mask), and the convs whose outputs join a residual sum
stay dense (the code also masks them before the sum, which saves only their own outputs); one optimizer (the
recipe's) trains predictors and backbone, the predictors' parameters scaled by 100 in :math:`z` (under Adam a
100x learning rate; the code gives them SGD at 0.1); predictors start at :math:`W = 0`, :math:`z = 3` (every
channel on, as the code's ``--headinit ones`` option trains them to), not random;
``mass`` = 0.9 is this implementation's default (the code's script uses 1.0: only dead channels are pruned).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.schedule import EpochSchedule, EpochScheduled
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.pruning._channel_masks import (
    ChannelGate,
    broadcast_mask,
    dynamic_facts,
    gate_masks,
    gate_sites,
    insert_gates,
)
from suites.pruning.base import PruningMethod

CRITERIA = ("mass", "uniform")
# Predictor logits at the start: sigmoid(3) = 0.95, every channel predicted on.
INITIAL_LOGIT = 3.0
# The predictor's weights enter its logits times this: under Adam, a 100x learning rate for the predictors (the
# code trains them with their own optimizer, SGD at 0.1, against 1e-3 to 1e-2 for the backbone).
PREDICTOR_RATE = 100.0
# Fraction of the epochs during which the mask loss trains the predictors (the code's cooldown).
COOLDOWN = 0.5


def heatmap(features: tf.Tensor) -> tf.Tensor:
    """(batch, C): each channel's largest |activation| over its positions (FTWT's filter criterion)."""
    flat = tf.reshape(tf.abs(features), [tf.shape(features)[0], -1, features.shape[-1]])
    return tf.reduce_max(flat, axis=1)


def mass_target(strength: tf.Tensor, mass: float) -> tf.Tensor:
    """1 for the smallest set of strongest channels holding ``mass`` of the heatmap mass (and nonzero ones)."""
    share = strength / tf.maximum(tf.reduce_sum(strength, axis=-1, keepdims=True), 1e-12)
    order = tf.argsort(share, axis=-1, direction="DESCENDING", stable=True)
    above = tf.cumsum(tf.gather(share, order, batch_dims=1), axis=-1, exclusive=True)
    keep_sorted = tf.cast(above < mass, tf.float32)
    keep = tf.gather(keep_sorted, tf.argsort(order, axis=-1, stable=True), batch_dims=1)
    return keep * tf.cast(strength > 0, tf.float32)


def uniform_target(strength: tf.Tensor, sparsity: float) -> tf.Tensor:
    """1 for the C - floor(sC) strongest channels of each input (and nonzero ones)."""
    channels = strength.shape[-1]
    kept = channels - int(math.floor(sparsity * channels))
    ranks = tf.argsort(tf.argsort(strength, axis=-1, direction="DESCENDING", stable=True), axis=-1, stable=True)
    return tf.cast(ranks < kept, tf.float32) * tf.cast(strength > 0, tf.float32)


@keras.utils.register_keras_serializable(package="effbench")
class MaskPredictorGate(EpochScheduled, ChannelGate):
    """FTWT's gate: a linear predictor of the producer's pooled, softmaxed input decides the channels.

    Called on ``[features, producer_input]``. In training it adds the mask loss (module docstring) scaled by
    ``loss_scale`` (1 / the number of gates), while the epoch is in the first ``COOLDOWN`` of the recipe.
    """

    def __init__(self, criterion: str = "mass", mass: float = 0.9, sparsity: float = 0.5, loss_scale: float = 1.0,
                 **kwargs: Any):  # fmt: skip
        super().__init__(**kwargs)
        if criterion not in CRITERIA:
            raise ValueError(f"FTWT criterion '{criterion}': expected one of {', '.join(CRITERIA)}")
        self.criterion, self.mass, self.sparsity, self.loss_scale = criterion, mass, sparsity, loss_scale

    def build(self, input_shape: Any) -> None:
        features, source = (tuple(shape) for shape in input_shape)
        self.kernel = self.add_weight(name="kernel", shape=(source[-1], features[-1]), initializer="zeros")
        self.bias = self.add_weight(
            name="bias", shape=(features[-1],), initializer=keras.initializers.Constant(INITIAL_LOGIT / PREDICTOR_RATE)
        )
        self.build_schedule()
        super().build(input_shape)

    def logits(self, source: tf.Tensor) -> tf.Tensor:
        if source.shape.rank > 2:
            source = tf.reduce_mean(source, axis=list(range(1, source.shape.rank - 1)))
        return PREDICTOR_RATE * (tf.matmul(tf.nn.softmax(source, axis=-1), self.kernel) + self.bias)

    def target(self, features: tf.Tensor) -> tf.Tensor:
        strength = heatmap(features)
        if self.criterion == "mass":
            return mass_target(strength, self.mass)
        return uniform_target(strength, self.sparsity)

    def channel_mask(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        return tf.cast(self.logits(tf.stop_gradient(inputs[1])) > 0.0, inputs[0].dtype)

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        features, source = inputs
        logits = self.logits(tf.stop_gradient(source))
        if training:
            target = tf.stop_gradient(self.target(features))
            loss = tf.reduce_sum(tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(target, logits), axis=0))
            active = tf.cast(self.progress < COOLDOWN, loss.dtype)
            self.add_loss(active * self.loss_scale * loss)
        return features * broadcast_mask(tf.cast(logits > 0.0, features.dtype), features)

    def mask_cost(self, input_shapes: list[tuple[int, ...]]) -> tuple[int, int]:
        features, source = input_shapes
        channels, sources = features[-1], source[-1]
        pooling = math.prod(source[1:])
        # Pooling adds, the softmax (3 per value), the bias add and the threshold per channel.
        return sources * channels, pooling + 3 * sources + 2 * channels

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "criterion": self.criterion, "mass": self.mass, "sparsity": self.sparsity,
                "loss_scale": self.loss_scale}  # fmt: skip


@register_method(
    "ftwt",
    suite="pruning",
    kind="training",
    paper=Paper(
        "Fire Together Wire Together: A Dynamic Pruning Approach with Self-Supervised Mask Prediction",
        2022,
        "https://arxiv.org/abs/2110.08232",
    ),
    summary="dynamic channel pruning: per-group predictors, trained on the top-k heatmap channels (mass "
    "criterion), mask each input's channels; records per-input MACs and the batch-64 union",
    taxonomy=Taxonomy(structured=True, dynamic=True, applied="training", data="labelled"),
)
class FTWT(PruningMethod):
    """Options: ``criterion`` (``mass``, the paper's, or ``uniform``), ``mass`` (0.9: heatmap mass kept),
    ``sparsity`` (the per-input fraction of channels pruned by the ``uniform`` criterion; unused by ``mass``)."""

    default_options: ClassVar[dict[str, Any]] = {**PruningMethod.default_options, "criterion": "mass", "mass": 0.9}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["criterion"] not in CRITERIA:
            raise ValueError(f"ftwt: criterion '{self.options['criterion']}'; expected one of {', '.join(CRITERIA)}")
        mass = self.options["mass"]
        if isinstance(mass, bool) or not isinstance(mass, int | float) or not 0 < mass <= 1:
            raise ValueError(f"ftwt: mass {mass!r}; expected a number in (0, 1]")

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        sites = gate_sites(model)
        if not sites:
            raise ValueError(f"ftwt: model '{model.name}' has no channel group a gate can mask")
        names = [f"{site.producer}_ftwt" for site in sites]

        def gate(index: int, site: Any, features: Any, source: Any, inputs: list) -> Any:
            return MaskPredictorGate(
                self.options["criterion"], float(self.options["mass"]), float(self.options["sparsity"]),
                loss_scale=1.0 / len(sites), name=names[index],
            )([features, source])  # fmt: skip

        gated = insert_gates(model, sites, gate)
        history, seconds = fit(gated, context, callbacks=[EpochSchedule(context.recipe.epochs)])
        x_val = context.splits.x_val
        masks = gate_masks(gated, names, x_val)
        computed = dynamic_facts(gated, sites, masks, f"validation split ({len(x_val)} inputs)")
        uniform = self.options["criterion"] == "uniform"
        facts = {
            "sparsity_target": float(self.options["sparsity"]) if uniform else None,
            "criterion": self.options["criterion"],
            "mass": None if uniform else float(self.options["mass"]),
            "sparsity_by_layer": {n: round(1.0 - f, 6) for n, f in computed["active_fraction_by_site"].items()},
            **computed,
        }
        return Artifact(gated, history, seconds, facts=facts)
