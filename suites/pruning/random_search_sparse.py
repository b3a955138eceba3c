r"""Random search over channel (node) masks at a fixed sparsity: the neutral baseline of sparse architecture search.

Mechanism. The search space is the *node* space of the freshly initialised backbone :math:`f_{\theta_0}`: the
channels (conv filters, dense units) of its channel groups (:func:`effbench.channels.channel_groups`; channels
tied by a residual sum are one node set). At sparsity :math:`s` each group :math:`g` of :math:`C_g` channels
keeps exactly :math:`n_g = \max(1, \operatorname{round}((1 - s) C_g))` of them. For :math:`k = 1 \dots K`
(option ``samples``):

.. math::  \mathcal{K}^{(k)}_g \sim \operatorname{Uniform}\{S \subseteq \{0..C_g - 1\} : |S| = n_g\}, \qquad
           \ell_k = \mathcal{L}_{val}\bigl(f_{\theta_0}|_{\mathcal{K}^{(k)}}\bigr)

the validation loss of the *initialised* sparse sub-network (no training: the paper searches for sub-networks
"positioned more advantageously in the loss landscape" at initialisation, then trains them), evaluated in
place by :class:`suites.pruning._channel_masks.ReaderMasks`. The best, :math:`k^* = \arg\min_k \ell_k`, is
removed physically (:func:`effbench.channels.remove_channels`: the deployed model has fewer channels, so its
params and MACs fall) and trained with the task's recipe. There is no gradient rule and no schedule: it is the
baseline a search method has to beat (the paper finds it does no better than one random mask).

The masks are over channels (structured); ``sparsity`` is the fraction of each group's channels removed.
Facts: the target, the kept channels per group and the per-producer channel sparsity (``sparsity_by_layer``),
every candidate's validation loss and the chosen one.

Paper: Farahani, "Random Search as a Baseline for Sparse Neural Network Architecture Search", 2024
(https://arxiv.org/abs/2403.08265). Deviations and assumptions (the abstract gives no procedure details):
candidates are scored by the validation loss at initialisation, not after a short training; nodes are channel
groups of the protocol backbone (the paper's are neurons of an over-parameterised MLP); ``samples`` = 16 is
this implementation's default.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from effbench.channels import ChannelGroup, channel_groups, remove_channels
from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext, fit, task_loss
from suites.pruning._channel_masks import ReaderMasks, compiled_logits, keep_facts, require_positive_ints
from suites.pruning.base import INIT, PruningMethod


def kept_count(channels: int, sparsity: float) -> int:
    """Channels a group of ``channels`` keeps at ``sparsity``: round((1 - s) C), at least one."""
    return max(1, int(round((1.0 - sparsity) * channels)))


def random_keep(groups: Sequence[ChannelGroup], sparsity: float, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """One uniform draw: group index -> sorted kept channels, exactly :func:`kept_count` per group."""
    return {
        index: np.sort(rng.choice(group.channels, size=kept_count(group.channels, sparsity), replace=False))
        for index, group in enumerate(groups)
    }


@register_method(
    "random-search-sparse",
    suite="pruning",
    kind="compression",
    paper=Paper(
        "Random Search as a Baseline for Sparse Neural Network Architecture Search",
        2024,
        "https://arxiv.org/abs/2403.08265",
    ),
    summary="neutral baseline: K random channel masks at the target sparsity on the initialised backbone, the "
    "lowest validation loss kept, removed physically and trained",
    taxonomy=Taxonomy(structured=True, applied="init", data="labelled"),
)
class RandomSearchSparse(PruningMethod):
    """Options: ``sparsity`` (fraction of every group's channels removed), ``samples`` (K candidates, 16)."""

    default_options: ClassVar[dict[str, Any]] = {**PruningMethod.default_options, "samples": 16}
    starts_from: ClassVar[str] = INIT

    def __init__(self, **options: Any):
        super().__init__(**options)
        require_positive_ints(self, "samples")

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        started = time.perf_counter()
        sparsity = float(self.options["sparsity"])
        groups = channel_groups(model)
        rng = np.random.default_rng(context.seed)
        candidates = [random_keep(groups, sparsity, rng) for _ in range(self.options["samples"])]
        masks, logits = ReaderMasks(model, groups), compiled_logits(model)
        loss = task_loss(context.task.spec)
        x, y = context.splits.x_val, context.splits.y_val
        losses = []
        for keep in candidates:
            with masks.applied(keep):
                losses.append(float(loss(y, logits(x))))
        best = int(np.argmin(losses))
        pruned = remove_channels(model, candidates[best])
        history, _ = fit(pruned, context)
        facts = {
            "sparsity_target": sparsity,
            **keep_facts(model, groups, candidates[best]),
            "candidate_val_losses": [round(value, 6) for value in losses],
            "chosen": best,
            "search": f"{len(candidates)} uniform channel masks of the initialised backbone, scored by validation "
            "loss before training; the best removed physically (remove_channels) and trained with the task's recipe",
        }
        return Artifact(pruned, history, time.perf_counter() - started, facts=facts)
