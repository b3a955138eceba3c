r"""Polarization: BN-scale gates pushed to 0 or 1 by the polarization regulariser, in one training pass.

Every channel group's gates (the batch norms right after its producers, :mod:`suites.pruning._channel_scores`)
scale its channels by :math:`\gamma \in [0, 1]`. Over all :math:`n` gates of the network, the regulariser is
(Zhuang et al., NeurIPS 2020, equation 2; the consensus paper's polarizing loss)

.. math:: R(\gamma) = t \|\gamma\|_1 - \|\gamma - \bar\gamma \mathbf 1_n\|_1,
          \qquad \bar\gamma = \tfrac1n \textstyle\sum_i \gamma_i

and its subgradient (:math:`\operatorname{sign} 0 = 0`, the mean term included)

.. math:: \partial R / \partial\gamma_j = t \operatorname{sign}\gamma_j - \operatorname{sign}(\gamma_j - \bar\gamma)
          + \tfrac1n \textstyle\sum_i \operatorname{sign}(\gamma_i - \bar\gamma).

The L1 term pulls every gate to 0; the second term pushes each gate away from the mean, so the gates split
into a cluster at 0 and one away from it (for :math:`t > 1` the pull wins below the mean). One pass from a
fresh backbone with the task's recipe:

1. gates start at 0.5 (the paper's code, after network slimming); for the first ``polarize`` fraction of the
   epochs every optimizer step :math:`k` is followed by the regulariser step
   :math:`\gamma \leftarrow \operatorname{clip}(\gamma - \eta_k\,\partial R(\gamma), 0, 1)` (the clip is the
   code's ``clamp_bn``), :math:`\eta_k` proportional to the recipe's learning rate at step :math:`k` and
   summing to ``strength`` over the phase (an SGD step of the penalty is the learning rate times its
   gradient: :func:`~suites.pruning._channel_scores.step_sizes`);
2. the ``sparsity`` fraction of all groups' channels with the lowest gate
   (:math:`\max_b \gamma_{b,c}` over a residual group's gates) is removed (:func:`effbench.channels.remove_channels`):
   the user-defined sparsity of the consensus paper;
3. the rest of the same pass (the remaining epochs) trains the smaller network; with one epoch (``smoke``)
   nothing is left to train and the removed network is deployed as it is.

Facts: the channel facts, the fraction of gates below 0.01 when they are read (the code's ``fixed`` pruning
threshold: how polarized they became), and validation top-1 before and right after the removal.

Papers: Zhi, Babbar, Liu, Sun, Silavong, Shi & Moran, "Learning a Consensus Sub-Network with Polarization
Regularization and One Pass Training", 2023 (https://arxiv.org/abs/2302.10798), the roster's entry: gates, a
polarizing loss, user-defined sparsity, pruning and training in one run; and the regulariser's source, Zhuang,
Zhang, Wang et al., "Neuron-level Structured Pruning using Polarization Regularizer", NeurIPS 2020
(github.com/polarizationpruning/PolarizationPruning, ``cifar/main.py``: ``bn_sparsity``, ``clamp_bn``,
``--bn-init-value 0.5``, ``--t``, ``--lbd 1e-4``).

Deviations. The gates are the BN scales, as in Zhuang et al. (the consensus paper's binary gating module with
a straight-through estimator is not built). A BN scale gates :math:`\gamma \hat x` but not the shift
:math:`\beta`: a channel whose scale is 0 still passes the constant :math:`\operatorname{ReLU}(\beta)`, which
the removal drops (``val_top1_at_removal`` shows what that costs; the rest of the pass recovers it).
The regulariser step is decoupled from the optimizer (:class:`~suites.pruning._channel_scores.GateStep`):
the task's recipe is Adam, which would rescale a penalty in the loss so that no gate moves more than the
learning rate per step; the paper's SGD step is :math:`\text{lr}\cdot\lambda\,\partial R`, and
``strength`` is its sum over the phase (the code's CIFAR run, lr 0.1 decayed x0.1 at 50% and 75% of 160
epochs of 782 steps, :math:`\lambda = 10^{-4}`, sums to 0.66 before momentum; the default 1.0 is that order).
The paper picks the removal threshold from the gates' histogram; here the user-defined fraction is removed.
The tail of the pass restarts the recipe's schedule over the remaining epochs (a new compile).
``small-faithful``: the digits / mnist1d scale of the suite, a few hundred steps instead of 125k.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np

from effbench.channels import channel_groups, remove_channels
from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.pruning._channel_scores import (
    GateStep,
    TrainingLog,
    bn_scale_scores,
    channel_facts,
    gate_scales,
    kept_channels,
    lowest_channels,
    removal_count,
    step_sizes,
    top1,
)
from suites.pruning.base import INIT, PruningMethod

GATE_INIT = 0.5  # the paper's --bn-init-value
POLARIZED = 0.01  # the code's fixed pruning threshold, used here to report how polarized the gates are


def polarization(scales: Sequence[tf.Tensor], t: float) -> tf.Tensor:
    r""":math:`R(\gamma) = t\|\gamma\|_1 - \|\gamma - \bar\gamma\mathbf 1\|_1` over all ``scales`` together."""
    flat = tf.concat([tf.reshape(scale, [-1]) for scale in scales], axis=0)
    return t * tf.reduce_sum(tf.abs(flat)) - tf.reduce_sum(tf.abs(flat - tf.reduce_mean(flat)))


def polarization_step(scales: Sequence[tf.Tensor], step: float, t: float) -> list[tf.Tensor]:
    r"""One regulariser step: :math:`\operatorname{clip}(\gamma - \eta\,\partial R(\gamma), 0, 1)`."""
    scales = [tf.convert_to_tensor(scale) for scale in scales]
    with tf.GradientTape() as tape:
        tape.watch(scales)
        penalty = polarization(scales, t)
    return [tf.clip_by_value(scale - step * grad, 0.0, 1.0)
            for scale, grad in zip(scales, tape.gradient(penalty, scales), strict=True)]  # fmt: skip


@register_method(
    "polarization",
    suite="pruning",
    kind="training",
    paper=Paper(
        "Learning a Consensus Sub-Network with Polarization Regularization and One Pass Training",
        2023,
        "https://arxiv.org/abs/2302.10798",
    ),
    summary="BN-scale gates polarized to 0/1 by t|g|_1 - |g - mean(g)|_1 during one training pass; the lowest "
    "fraction of channels removed (a physically smaller model) and the pass finished on it",
    taxonomy=Taxonomy(structured=True, applied="training", data="labelled"),
    scale="small-faithful",
)
class Polarization(PruningMethod):
    """Options: ``sparsity`` (0.5, the paper's "50% of connections"; the fraction of all groups' channels
    removed), ``t`` (1.2, the L1 weight; the paper's CIFAR runs take 0.6-1.4), ``strength`` (1.0, the
    regulariser's summed step), ``polarize`` (0.8, the fraction of the epochs trained with the regulariser
    before the removal), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {
        **PruningMethod.default_options, "sparsity": 0.5, "t": 1.2, "strength": 1.0, "polarize": 0.8,
    }  # fmt: skip
    starts_from: ClassVar[str] = INIT

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        groups = channel_groups(model)
        scales = gate_scales(model, groups)
        for scale in scales:
            scale.assign(tf.fill(scale.shape, GATE_INIT))
        epochs = context.recipe.epochs
        polarized_epochs = min(epochs, max(1, round(self.options["polarize"] * epochs)))
        steps = step_sizes(context, polarized_epochs, self.options["strength"])
        log = TrainingLog()
        log.fit(model, context, polarized_epochs, callbacks=[GateStep(scales, partial(polarization_step,
                                                                                       t=self.options["t"]), steps)])

        values = np.concatenate([np.asarray(scale) for scale in scales])
        removed = lowest_channels(bn_scale_scores(model, groups), removal_count(groups, self.options["sparsity"]))
        kept = kept_channels(groups, removed)
        small = remove_channels(model, kept)
        splits = context.splits
        facts = {
            **channel_facts(groups, kept, self.options["sparsity"]),
            "gates_below_0.01": round(float(np.mean(values < POLARIZED)), 6),
            "val_top1_before_removal": top1(model, splits.x_val, splits.y_val),
            "val_top1_at_removal": top1(small, splits.x_val, splits.y_val),
            "polarized_epochs": polarized_epochs,
        }
        log.fit(small, context, epochs - polarized_epochs)
        return Artifact(small, log.history, log.seconds, facts=facts)
