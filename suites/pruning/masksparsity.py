r"""MaskSparsity: L1 only on the BN scales of the channels chosen for pruning, then their removal and a fine-tune.

Network slimming's sparse training puts :math:`\lambda \sum |\gamma|` on every BN scale, which also shrinks
the channels that stay and under-fits; MaskSparsity regularises only the channels a pruning mask selects:

.. math:: L = L_{\text{task}} + \lambda \textstyle\sum_{(b, c) \in M} |\gamma_{b,c}|.

From the trained FP32 twin, with the task's fine-tune recipe:

1. mask :math:`M`: the ``sparsity`` fraction of all groups' channels with the lowest BN scale
   (:math:`\max_b |\gamma_{b,c}|` over a residual group's gates; :mod:`suites.pruning._channel_scores`),
   every gate of a chosen channel;
2. regularised fine-tune (the first ``regularize`` fraction of the epochs, at least one): after every
   optimizer step the masked scales take the L1 term's proximal step (soft-thresholding)

   .. math:: \gamma_{b,c} \leftarrow \operatorname{sign}(\gamma_{b,c}) \max(|\gamma_{b,c}| - \eta_k, 0),
             \quad (b, c) \in M,

   :math:`\eta_k` at optimizer step :math:`k` proportional to the recipe's learning rate and summing to
   ``strength`` over the phase (an SGD step of the penalty is the learning rate times its gradient:
   :func:`~suites.pruning._channel_scores.step_sizes`), while the unmasked channels train freely;
3. the masked channels are removed (:func:`effbench.channels.remove_channels`, a physically smaller model);
4. fine-tune of the smaller model for the remaining epochs (at least one).

Facts: the channel facts, the largest masked :math:`|\gamma|` at the removal (0 when the regulariser has driven
them all to zero), and validation top-1 before and right after the removal.

Paper: Jiang, Zhao, Zhao, An, Tang & Wang, "Pruning-aware Sparse Regularization for Network Pruning", 2022
(https://arxiv.org/abs/2201.06776); code github.com/CASIA-IVA-Lab/MaskSparsity (``netslim/sparse.py``
``update_bn_by_names_dict``: ``s * sign(gamma)`` added to the masked scales' gradients; ``mask_sparsity.sh``,
``prune.sh`` threshold 0.01, ``finetune.sh``).

Deviations. The mask comes from the trained twin's BN scales directly (the paper allows any mask; its code runs
global sparse training first to get one). The L1 step is decoupled from the optimizer and proximal (exact zeros)
instead of the subgradient ``s * sign(gamma)`` through SGD: the task's recipe is Adam, which would normalise the
penalty's gradient away (:class:`~suites.pruning._channel_scores.GateStep`); ``strength`` is the summed
shrink per scale over the phase (the paper's :math:`\text{lr} \cdot s` summed over its steps). The removal takes
the mask itself rather than re-thresholding at 0.01 (the scales of the mask are the ones that went to zero).
``small-faithful``: the suite's digits / mnist1d scale.
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
    gates,
    kept_channels,
    lowest_channels,
    removal_count,
    step_sizes,
    top1,
)
from suites.pruning.base import PruningMethod


def masked_shrink(scales: Sequence[tf.Tensor], step: float, masks: Sequence[np.ndarray]) -> list[tf.Tensor]:
    r"""Soft-threshold the masked entries by ``step``: :math:`\operatorname{sign}\gamma \max(|\gamma| - \eta, 0)`."""
    shrunk = []
    for scale, mask in zip(scales, masks, strict=True):
        scale = tf.convert_to_tensor(scale)
        soft = tf.sign(scale) * tf.maximum(tf.abs(scale) - step, 0.0)
        shrunk.append(tf.where(tf.constant(mask, tf.bool), soft, scale))
    return shrunk


@register_method(
    "masksparsity",
    suite="pruning",
    kind="compression",
    paper=Paper("Pruning-aware Sparse Regularization for Network Pruning", 2022, "https://arxiv.org/abs/2201.06776"),
    summary="mask the lowest-BN-scale channels, L1 (proximal) only on their scales during a fine-tune, then "
    "remove them (a physically smaller model) and fine-tune",
    taxonomy=Taxonomy(structured=True, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class MaskSparsity(PruningMethod):
    """Options: ``sparsity`` (0.75; the fraction of all groups' channels masked and removed), ``strength``
    (1.0, the summed L1 shrink per masked scale), ``regularize`` (0.5, the fraction of the fine-tune epochs
    with the regulariser, before the removal), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {
        **PruningMethod.default_options, "strength": 1.0, "regularize": 0.5,
    }  # fmt: skip

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        groups = channel_groups(model)
        removed = lowest_channels(bn_scale_scores(model, groups), removal_count(groups, self.options["sparsity"]))
        scales, masks = [], []
        for group in groups:
            for name in gates(model, group):
                mask = np.zeros(group.channels, bool)
                mask[removed.get(group.index, [])] = True
                scales.append(model.get_layer(name).gamma)
                masks.append(mask)
        epochs = context.recipe.epochs
        regularized = max(1, round(self.options["regularize"] * epochs))
        steps = step_sizes(context, regularized, self.options["strength"])
        log = TrainingLog()
        log.fit(model, context, regularized, callbacks=[GateStep(scales, partial(masked_shrink, masks=masks), steps)])

        masked = [np.abs(np.asarray(scale))[mask] for scale, mask in zip(scales, masks, strict=True)]
        kept = kept_channels(groups, removed)
        small = remove_channels(model, kept)
        splits = context.splits
        facts = {
            **channel_facts(groups, kept, self.options["sparsity"]),
            "masked_scale_max": round(float(max((m.max() for m in masked if m.size), default=0.0)), 6),
            "val_top1_before_removal": top1(model, splits.x_val, splits.y_val),
            "val_top1_at_removal": top1(small, splits.x_val, splits.y_val),
        }
        log.fit(small, context, max(1, epochs - regularized))
        return Artifact(small, log.history, log.seconds, facts=facts)
