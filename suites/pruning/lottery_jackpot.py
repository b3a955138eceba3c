r"""Lottery jackpots: a sparse mask searched on the frozen trained weights, no weight training (Zhang et al.).

The trained twin's weights are frozen (kernels, biases, BatchNorm's scale and shift: the official
``freeze_model_weights``); only a binary mask :math:`B_l` per prunable kernel is searched, through real
scores :math:`S_l` of the kernel's shape and a straight-through estimator (edge-popup style, the official
``GetMask``)::

    forward:   W~ = B * W                 B: the current binary mask (0 / 1), W frozen
    backward:  dL/dS := dL/dB = dL/dW~ * W

Magnitude initialisation (the paper's main speed-up): :math:`B^0` is the global magnitude mask at the target
sparsity (:func:`suites.pruning._masks.magnitude_masks`), which fixes each layer's number of kept weights
:math:`k_l` for the whole search; scores start at 1 where :math:`B^0 = 1` and 0.99 elsewhere, so the top-k of
the scores is the magnitude mask (the official ``set_prune_rate``). The scores train with the task's fine-tune
recipe (its optimizer and schedule).

Short restriction (the official ``final_pop_up``, after every optimiser step and per layer): with
:math:`\tau` the :math:`(|W_l| - k_l)`-th smallest score, the candidates to enter are the pruned weights with
:math:`S > \tau`, those to leave the kept ones with :math:`S \le \tau` (without ties there are as many of
each: together they are the change from :math:`B` to the top-k of :math:`S`). Only when the counts match, the
:math:`q = \lceil \rho_e\, c \rceil` best-scored entering and the :math:`q` worst-scored leaving weights swap,
where :math:`c` is the count and :math:`\rho_e = \frac{1}{2}(1 + \cos(\pi e / E))` decays over the epochs
:math:`e` of :math:`E` (the official ImageNet script's ``adjust_rate``; its CIFAR script writes
:math:`\lceil (1 - e/E)^4 \rceil`, which is 1 throughout, and would leave no restriction at all). So the mask
keeps :math:`k_l` per layer, and it changes less and less as the search goes on: the restriction of mask
changes that the paper's analysis shows can raise the loss.

Deployed: :math:`W \odot B` in the backbone's kernels, nothing else changed, except that BatchNorm's moving
statistics follow the masked network during the search (the official code searches in PyTorch's train mode,
which updates them too; they are statistics, not trained weights). The history has the mask flips per epoch
(``sad``, :mod:`suites.pruning._sparse_training`); the facts the share of the kept weights that the search
moved away from the magnitude mask.

Deviation: the official CIFAR code prunes the convolutions only (the classifier stays dense); the protocol's
sparsity counts every prunable kernel, so the classifier is in the global magnitude mask too.

Paper: Zhang, Lin, Chen, Chao & Ji, "Lottery Jackpots Exist in Pre-trained Models", TPAMI 2023
(https://arxiv.org/abs/2104.08700); code: github.com/zyxxmu/lottery-jackpots (``utils/conv_type.py``,
``cifar.py``, ``imagenet.py``).
"""

from __future__ import annotations

import math

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.pruning._masks import Masks, magnitude_masks, sparsity_facts
from suites.pruning._sparse_training import MaskedKernels, SadLogger
from suites.pruning.base import PruningMethod

# The official score initialisation: kept weights 1, pruned ones just below.
KEPT_SCORE, PRUNED_SCORE = 1.0, 0.99


def restricted_swap(scores: tf.Tensor, mask: tf.Tensor, rate: tf.Tensor | float) -> tf.Tensor:
    """One short-restriction update of ``mask`` from ``scores`` (module docstring): the ``ceil(rate * c)``
    best-scored pruned weights above the threshold swap with as many worst-scored kept ones below it."""
    s, b = tf.reshape(scores, [-1]), tf.reshape(mask, [-1])
    pruned = tf.size(b) - tf.cast(tf.reduce_sum(b), tf.int32)
    threshold = tf.gather(tf.sort(s), tf.maximum(pruned - 1, 0))
    enter = (b == 0) & (s > threshold)
    leave = (b == 1) & (s <= threshold)
    count_in = tf.reduce_sum(tf.cast(enter, tf.float32))
    count_out = tf.reduce_sum(tf.cast(leave, tf.float32))
    swaps = tf.where(count_in == count_out, tf.math.ceil(tf.cast(rate, tf.float32) * count_in), 0.0)
    infinity = tf.constant(np.inf, s.dtype)
    # The rank of each candidate among its kind (best first), others last.
    rank_in = tf.math.invert_permutation(tf.argsort(tf.where(enter, -s, infinity), stable=True))
    rank_out = tf.math.invert_permutation(tf.argsort(tf.where(leave, s, infinity), stable=True))
    swaps = tf.cast(swaps, rank_in.dtype)
    entering = tf.cast(enter & (rank_in < swaps), b.dtype)
    leaving = tf.cast(leave & (rank_out < swaps), b.dtype)
    return tf.reshape(b + entering - leaving, tf.shape(mask))


def search_rate(epoch: tf.Tensor, epochs: int) -> tf.Tensor:
    """:math:`\\rho_e = (1 + \\cos(\\pi e / E)) / 2`, the share of the candidate swaps allowed in epoch ``e``."""
    return 0.5 * (1.0 + tf.cos(math.pi * tf.cast(epoch, tf.float32) / float(epochs)))


class JackpotSearch(MaskedKernels):
    """The frozen backbone seen through searched binary masks; only the scores train."""

    def __init__(self, base: keras.Model, masks: Masks, steps_per_epoch: int, epochs: int):
        super().__init__(base, list(masks))
        self.binary = [tf.Variable(mask, trainable=False, dtype=tf.float32) for mask in masks.values()]
        self.scores = [
            tf.Variable(np.where(mask > 0, KEPT_SCORE, PRUNED_SCORE).astype(np.float32), name=f"{name}_score")
            for name, mask in masks.items()
        ]
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs

    def forward_kernel(self, index: int, kernel: tf.Variable) -> tf.Tensor:
        scores = self.scores[index]
        # Forward: the binary mask; backward: straight through to the scores.
        mask = self.binary[index] + scores - tf.stop_gradient(scores)
        return tf.stop_gradient(kernel) * mask

    def masks(self) -> list[tf.Tensor]:
        return [tf.convert_to_tensor(mask) for mask in self.binary]

    def update(self, data: tuple) -> dict[str, tf.Tensor]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.scores), self.scores, strict=True))
        epoch = (self.optimizer.iterations - 1) // self.steps_per_epoch
        rate = search_rate(epoch, self.epochs)
        for scores, mask in zip(self.scores, self.binary, strict=True):
            mask.assign(restricted_swap(scores, mask, rate))
        return self.compute_metrics(x, y, y_pred, sample_weight)


@register_method(
    "lottery-jackpot",
    suite="pruning",
    kind="compression",
    paper=Paper("Lottery Jackpots Exist in Pre-trained Models", 2023, "https://arxiv.org/abs/2104.08700"),
    summary="mask search on the frozen trained weights (scores, straight-through), magnitude-initialised, "
    "short restriction of mask swaps; no weight training",
    taxonomy=Taxonomy(structured=False, applied="post-training", data="labelled"),
)
class LotteryJackpot(PruningMethod):
    """Options: ``sparsity`` (global, over every prunable kernel), ``backbone``."""

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        sparsity = float(self.options["sparsity"])
        initial = magnitude_masks(model, sparsity)
        steps_per_epoch = -(-len(context.splits.x_train) // context.recipe.batch_size)
        search = JackpotSearch(model, initial, steps_per_epoch, context.recipe.epochs)
        history, seconds = fit(search, context, callbacks=[SadLogger(search)])
        found = {name: np.asarray(mask) for name, mask in zip(search.layer_names, search.masks(), strict=True)}
        deployed = search.deploy()
        kept = sum(float(mask.sum()) for mask in found.values())
        moved = sum(float((found[name] * (1 - initial[name])).sum()) for name in found)
        facts = {
            "sparsity_target": sparsity,
            "sparsity_by_layer": sparsity_facts(found),
            "mask_init": "global magnitude",
            "moved_from_magnitude_mask": round(moved / kept, 6) if kept else 0.0,
            "trained_weights": 0,
        }
        return Artifact(deployed, history, seconds, facts=facts)
