r"""Gradual magnitude pruning (Zhu & Gupta, 2017), as TFMOT implements it: the suite's reference baseline.

Schedule (the paper's Eq. 1, TFMOT's ``PolynomialDecay`` with power 3): every ``frequency`` steps between
:math:`t_0 = 0` and :math:`t_e`, each prunable layer's mask is recomputed to drop its smallest-magnitude weights
at the sparsity

.. math:: s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{t_e - t_0}\right)^3, \qquad s_i = 0,\ s_f = \text{sparsity},

so the network is pruned fast at first and slowly at the end, while it keeps fine-tuning (masked weights get
no update: TFMOT multiplies each kernel by its mask in every training step). :math:`t_e` is two thirds of the
fine-tune recipe's steps, and ``frequency`` is computed from them so that the mask is updated about
``PRUNING_EVENTS`` times even in a short recipe (TFMOT's default of 100 steps never fires in one); :math:`t_e`
is a multiple of it, so the last update is at :math:`s_f` exactly. The last third fine-tunes the final mask.

It is TFMOT's, not a copy: ``tfmot.sparsity.keras.prune_low_magnitude`` wraps the trained backbone,
``UpdatePruningStep`` advances the schedule, and ``strip_pruning`` removes the wrappers before deploying
(the kernels keep their zeros). What TFMOT prunes (its ``PruneRegistry``): the ``kernel`` of Conv1D / Conv2D /
Dense layers, each to the same sparsity (layer-wise magnitude, the paper's setting); a ``DepthwiseConv2D`` is
registered with no prunable weight, so its kernel stays dense (the 0% seen on MobileNetV2); biases and
BatchNorm are never pruned. The facts list the pruned kernels and the kernels TFMOT left dense.

Deviation: the paper starts pruning after some training and prunes over a fixed number of steps; here the
protocol hands it the trained twin, so pruning starts at step 0 of the fine-tune recipe. If the recipe has a
single step, that step prunes at :math:`s_f` at once (``ConstantSparsity``).

Paper: Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model compression",
2017 (https://arxiv.org/abs/1710.01878).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext, fit
from suites.pruning._masks import sparsity_facts
from suites.pruning.base import PruningMethod

# About how many times the mask is updated during the pruning phase.
PRUNING_EVENTS = 10
# The pruning phase covers this fraction of the fine-tune steps; the rest fine-tunes the final mask.
PRUNING_PHASE = 2 / 3


def pruning_steps(total_steps: int) -> tuple[int, int]:
    """``(end_step, frequency)`` of the schedule for a recipe of ``total_steps``: the end near two thirds of
    the steps and a multiple of the frequency, and about ``PRUNING_EVENTS`` updates before it."""
    end = int(total_steps * PRUNING_PHASE)
    frequency = max(1, end // PRUNING_EVENTS)
    return frequency * (end // frequency), frequency


def tfmot_schedule(sparsity: float, total_steps: int) -> Any:
    """TFMOT's polynomial (cubic) schedule from 0 to ``sparsity`` over the recipe's ``total_steps``."""
    import tensorflow_model_optimization as tfmot

    end, frequency = pruning_steps(total_steps)
    if end == 0:
        return tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end, power=3, frequency=frequency
    )


def tfmot_prunable_kernels(pruned: keras.Model) -> tuple[list[str], list[str]]:
    """Names of the layers of a ``prune_low_magnitude`` model whose kernel TFMOT prunes, and of those whose
    kernel it leaves dense (registered with no prunable weight: depthwise convs)."""
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

    pruned_names, dense_names = [], []
    for wrapper in pruned.layers:
        if not isinstance(wrapper, PruneLowMagnitude):
            continue
        layer = wrapper.layer
        kernels = [w for w in layer.weights if "kernel" in w.name]
        if any(w is k for w in layer.get_prunable_weights() for k in kernels):
            pruned_names.append(layer.name)
        elif kernels:
            dense_names.append(layer.name)
    return pruned_names, dense_names


@register_method(
    "gmp",
    suite="pruning",
    kind="compression",
    paper=Paper(
        "To prune, or not to prune: exploring the efficacy of pruning for model compression",
        2017,
        "https://arxiv.org/abs/1710.01878",
    ),
    summary="TFMOT prune_low_magnitude, cubic PolynomialDecay 0 -> sparsity over 2/3 of the fine-tune, "
    "layer-wise magnitude, strip_pruning",
    taxonomy=Taxonomy(structured=False, applied="post-training", data="labelled"),
)
class Gmp(PruningMethod):
    """Options: ``sparsity`` (each pruned kernel's final sparsity), ``backbone``."""

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        import tensorflow_model_optimization as tfmot

        sparsity = float(self.options["sparsity"])
        steps_per_epoch = -(-len(context.splits.x_train) // context.recipe.batch_size)
        total_steps = context.recipe.epochs * steps_per_epoch
        schedule = tfmot_schedule(sparsity, total_steps)
        pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        pruned_names, dense_names = tfmot_prunable_kernels(pruned)
        history, seconds = fit(pruned, context, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        deployed = tfmot.sparsity.keras.strip_pruning(pruned)
        masks = {name: (np.asarray(deployed.get_layer(name).kernel) != 0).astype(np.float32) for name in pruned_names}
        facts = {
            "sparsity_target": sparsity,
            "sparsity_by_layer": sparsity_facts(masks),
            "schedule": {**schedule.get_config(), "total_steps": total_steps},
            "tfmot_pruned_kernels": pruned_names,
            "tfmot_dense_kernels": dense_names,
        }
        return Artifact(deployed, history, seconds, facts=facts)
