r"""Class-dependent compression: channels scored per class, the important class protected, per-class FN tracked.

The paper's setting: some class matters more (a detection in medical imaging), so the compressed network must
keep that class's false negatives close to the original's, at the price of more false positives if need be.

**Per-class channel importance.** On a labelled calibration split (``calibration`` examples of each class
drawn from the training split), the first-order effect of removing channel ``c`` of a group on example
:math:`x`'s correct logit :math:`z_y` is :math:`\Delta_c(x) = \sum_b \sum_{\text{positions}} a_{b,c}(x)\,
\partial z_y / \partial a_{b,c}(x)`, over the outputs :math:`a_b` of the group's gates (the batch norms after
its producers, whose outputs are the channel; every producer of a residual group at once). Per class :math:`k`,

.. math:: I_{k,c} = \operatorname{mean}_{x : y = k} |\Delta_c(x)|,

and the class-aware score protects the important class :math:`p` (``protect``) with weight :math:`\lambda`
(``weight``): :math:`S_c = \frac{1}{K + \lambda}\big(\sum_k I_{k,c} + \lambda I_{p,c}\big)`.

**Class-aware loss.** The fine-tunes minimise the cross-entropy with the important class's examples weighted
:math:`1 + \lambda`: :math:`L = \operatorname{mean}_i (1 + \lambda [y_i = p])\,\operatorname{CE}_i`, which pulls the
compressed network's recall of class :math:`p` up (fewer false negatives) at the cost of false positives.

**Iterative pruning** (the paper's lottery-ticket-style loop), from the trained FP32 twin: ``rounds``
rounds, each scoring the current network, removing the lowest-:math:`S` channels over all groups (no group
emptied) so that after round :math:`r` the removed fraction of all channels is
:math:`1 - (1 - s)^{r/R}` (``sparsity`` :math:`s` after the last), physically
(:func:`effbench.channels.remove_channels`), and fine-tuning with the class-aware loss for
``epochs // rounds`` epochs of the task's fine-tune recipe (at least one).

**Finding.** Per-class recall and false-negative counts on the validation split, of the trained twin
(``recall_before``, ``false_negatives_before``) and of the deployed network (``..._after``), and the protected
class's recall before and after, are the run's facts, with the channel facts.

Paper: Entezari & Saukh, "Class-dependent Compression of Deep Neural Networks", 2019/2020, SenSys-ML
(https://arxiv.org/abs/1909.10364).

Deviations. The paper prunes weights by magnitude in lottery-ticket iterations (rewinding to the initial
weights) with a combined loss that keeps the important class's false negatives low; its exact form is not in
the abstract. Here channels are pruned (a physically smaller network) by the per-class Taylor importance above,
each round fine-tunes from the current weights (the protocol's trained twin and fine-tune recipe), and the
combined loss is the class-weighted cross-entropy above (assumption: weight :math:`\lambda = 1`, protected class
0 by default). ``small-faithful``: the suite's digits / mnist1d scale.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from effbench.channels import ChannelGroup, channel_groups, remove_channels
from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.pruning._channel_scores import TrainingLog, channel_facts, gates, kept_channels, lowest_channels
from suites.pruning.base import PruningMethod


@keras.utils.register_keras_serializable(package="effbench")
class ClassWeightedCrossEntropy(keras.losses.Loss):
    """Cross-entropy of logits with the ``protect`` class's examples weighted ``1 + weight``."""

    def __init__(self, protect: int = 0, weight: float = 1.0, name: str = "class_weighted_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.protect, self.weight = protect, weight

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, y_pred)
        return cross_entropy * (1.0 + self.weight * tf.cast(tf.equal(labels, self.protect), cross_entropy.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "protect": self.protect, "weight": self.weight}


def class_importance(
    model: keras.Model, groups: list[ChannelGroup], x: np.ndarray, y: np.ndarray, num_classes: int
) -> dict[int, np.ndarray]:
    """Group -> (classes, channels) :math:`I_{k,c}`: mean over class ``k``'s examples of :math:`|\\Delta_c(x)|`."""
    names = {group.index: gates(model, group) for group in groups}
    outputs = [model.get_layer(name).output for group in groups for name in names[group.index]]
    probe = keras.Model(model.inputs, [*outputs, model.output])
    with tf.GradientTape() as tape:
        *activations, logits = probe(x, training=False)
        correct = tf.reduce_sum(tf.gather(logits, tf.constant(y, tf.int32), axis=1, batch_dims=1))
    grads = tape.gradient(correct, activations)
    effects = [tf.reduce_sum(tf.reshape(a * g, [len(x), -1, a.shape[-1]]), axis=1).numpy()
               for a, g in zip(activations, grads, strict=True)]  # fmt: skip
    importance, at = {}, 0
    for group in groups:
        delta = sum(effects[at : at + len(names[group.index])])
        at += len(names[group.index])
        per_class = [np.abs(delta[y == k]).mean(0) if np.any(y == k) else np.zeros(group.channels)
                     for k in range(num_classes)]  # fmt: skip
        importance[group.index] = np.stack(per_class)
    return importance


def protected_scores(importance: dict[int, np.ndarray], protect: int, weight: float) -> dict[int, np.ndarray]:
    """:math:`S_c = (\\sum_k I_{k,c} + \\lambda I_{p,c}) / (K + \\lambda)` per group."""
    return {index: (per_class.sum(0) + weight * per_class[protect]) / (len(per_class) + weight)
            for index, per_class in importance.items()}  # fmt: skip


def per_class_counts(model: keras.Model, x: np.ndarray, y: np.ndarray, num_classes: int) -> dict[str, list]:
    """Per-class recall and false negatives (examples of the class predicted as another) of ``model``."""
    predicted = np.argmax(model.predict(x, verbose=0, batch_size=256), axis=-1)
    present = [int(np.sum(y == k)) for k in range(num_classes)]
    false_negatives = [int(np.sum((y == k) & (predicted != k))) for k in range(num_classes)]
    recall = [round(1.0 - fn / n, 6) if n else None for fn, n in zip(false_negatives, present, strict=True)]
    return {"recall": recall, "false_negatives": false_negatives}


def calibration_split(context: TrainContext, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` training examples of each class, in a seed-dependent draw."""
    y = context.splits.y_train
    rng = np.random.default_rng(context.seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(y == k))[:per_class] for k in np.unique(y)])
    return context.splits.x_train[chosen], y[chosen]


@register_method(
    "class-dependent",
    suite="pruning",
    kind="compression",
    paper=Paper("Class-dependent Compression of Deep Neural Networks", 2019, "https://arxiv.org/abs/1909.10364"),
    summary="iterative channel pruning by per-class Taylor importance with an important class protected, "
    "class-weighted fine-tunes; per-class recall and false negatives before and after recorded",
    taxonomy=Taxonomy(structured=True, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class ClassDependent(PruningMethod):
    """Options: ``sparsity`` (0.75, the fraction of all groups' channels removed), ``protect`` (0, the
    important class), ``weight`` (1.0, :math:`\\lambda`), ``rounds`` (2), ``calibration`` (32 examples per
    class), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {
        **PruningMethod.default_options, "protect": 0, "weight": 1.0, "rounds": 2, "calibration": 32,
    }  # fmt: skip

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        o = self.options
        num_classes = context.task.spec.num_classes
        if not 0 <= o["protect"] < num_classes:
            raise ValueError(f"option protect of 'class-dependent' is {o['protect']}; the task has {num_classes} "
                             "classes")  # fmt: skip
        splits = context.splits
        before = per_class_counts(model, splits.x_val, splits.y_val, num_classes)
        x_cal, y_cal = calibration_split(context, o["calibration"])
        groups = channel_groups(model)
        total = sum(group.channels for group in groups)
        alive = {group.index: np.arange(group.channels) for group in groups}
        loss = ClassWeightedCrossEntropy(o["protect"], o["weight"])
        log = TrainingLog()
        for round_ in range(1, o["rounds"] + 1):
            current = channel_groups(model)
            goal = int(round(total * (1.0 - (1.0 - o["sparsity"]) ** (round_ / o["rounds"]))))
            count = goal - sum(group.channels - len(alive[group.index]) for group in groups)
            if count > 0:
                importance = class_importance(model, current, x_cal, y_cal, num_classes)
                scores = protected_scores(importance, o["protect"], o["weight"])
                kept = kept_channels(current, lowest_channels(scores, count))
                model = remove_channels(model, kept)
                alive = {index: alive[index][kept[index]] for index in alive}
            log.fit(model, context, max(1, context.recipe.epochs // o["rounds"]), loss=loss)
        after = per_class_counts(model, splits.x_val, splits.y_val, num_classes)
        facts = {
            **channel_facts(groups, alive, o["sparsity"]),
            "protected_class": o["protect"],
            "recall_before": before["recall"],
            "recall_after": after["recall"],
            "false_negatives_before": before["false_negatives"],
            "false_negatives_after": after["false_negatives"],
            "protected_recall_before": before["recall"][o["protect"]],
            "protected_recall_after": after["recall"][o["protect"]],
        }
        return Artifact(model, log.history, log.seconds, facts=facts)
