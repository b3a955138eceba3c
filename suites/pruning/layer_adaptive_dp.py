r"""Layer-adaptive magnitude pruning: per-layer rates from output-distortion curves, by dynamic programming.

Distortion curves (on the trained twin, before any fine-tuning): for each prunable layer :math:`l` (Conv /
Dense kernels; depthwise kernels stay dense) and each rate :math:`r_k = k / K`, :math:`k = 0..K` (option
``levels`` :math:`= K`), prune *that layer alone* by magnitude at :math:`r_k` (keep its
:math:`\operatorname{round}((1 - r_k) |W_l|)` largest :math:`|w|`), run a calibration batch :math:`X` and
measure the output distortion against the unpruned network's logits :math:`Y`:

.. math:: \delta_l(r_k) = \max_{x \in X} \tfrac{1}{C}\lVert Y(x) - \hat Y_{l,k}(x) \rVert^2 \quad
          (\text{``worst''}), \qquad \text{or the mean over } X \text{ (``mean''; option ``distortion``)}.

Allocation: the paper's additivity property (pruning several layers distorts the output by about the sum of
their single-layer distortions) turns the choice of rates into

.. math:: \min_{k_1..k_L} \sum_l \delta_l(r_{k_l}) \quad \text{s.t.} \quad
          \sum_l \operatorname{round}((1 - r_{k_l}) |W_l|) \le (1 - s) \sum_l |W_l|,

a knapsack over the kept-weight budget solved exactly by dynamic programming (:func:`allocate_rates`):
:math:`f_l(b) = \min_k \delta_l(r_k) + f_{l-1}(b - c_l(k))`, :math:`f_0 \equiv 0`, in time linear in the
layers and the budget, then a backtrack from :math:`f_L(B)`. Budgets beyond ``MAX_STATES`` weights are
counted in units of :math:`u = \lceil \sum_l |W_l| / \text{MAX\_STATES} \rceil` weights, each layer's cost
rounded up, so the budget still holds (exact when :math:`u = 1`: resnet-cifar's 0.27M and mlp's kernels). The chosen
rates become magnitude masks (:func:`suites.pruning._masks.magnitude_masks` at those densities), and the
network fine-tunes with the fine-tune recipe, masks kept (:class:`suites.pruning._masks.MaskKeeper`).

Settings of the official code (Akimoto-Cris/RD_PRUNE, ``tools/pruners.py`` ``gen_rd_curves``, ``tools/algo.py``
``dp_pruning``; its README's commands): the distortion is the worst case over the calibration samples
(``--worst_case_curve``), the grid has 101 rates (``maxsps=100``), CIFAR calibrates on 1024 training images.
Scaled down (small-faithful): ``levels=20`` (rates every 5%, which still holds 0.5, 0.75, 0.9 and 0.95, so
the uniform allocation is always a candidate) and ``calibration=256`` samples, the first of the run's training
split, by default, to keep the :math:`L (K + 1)` forward passes within the quick budget; the options restore
the official values. Deviation: the official scripts prune iteratively (20 rounds of re-allocation and
fine-tuning; one-shot is their documented variant); the protocol has one fine-tune, so this is one-shot.

Paper: Xu, Wang, Geng, Lin, Wu, Li & Lin, "Efficient Joint Optimization of Layer-Adaptive Weight Pruning in
Deep Neural Networks", ICCV 2023 (https://arxiv.org/abs/2308.10438).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.pruning._masks import (
    MaskKeeper,
    apply_masks,
    magnitude_masks,
    prunable_layers,
    sparsity_facts,
    top_fraction,
)
from suites.pruning.base import PruningMethod

DISTORTIONS = ("worst", "mean")
# The most budget states the dynamic programme tracks before it counts weights in larger units.
MAX_STATES = 2**19


def kept_weights(sizes: Sequence[int], rates: Sequence[float]) -> np.ndarray:
    """(layers, rates): how many weights each layer keeps at each rate, as the magnitude masks round it."""
    return np.array([[int(round((1.0 - rate) * size)) for rate in rates] for size in sizes])


def allocate_rates(
    distortion: np.ndarray, sizes: Sequence[int], rates: Sequence[float], sparsity: float, max_states: int = MAX_STATES
) -> list[int]:
    """Index into ``rates`` per layer minimising the summed ``distortion`` (layers x rates) while the kept
    weights stay within ``(1 - sparsity)`` of the total (module docstring); ties go to the lower rate."""
    kept = kept_weights(sizes, rates)
    total = int(sum(sizes))
    unit = max(1, math.ceil(total / max_states))
    cost = -(-kept // unit)  # rounded up: the budget holds in weights, not only in units
    capacity = (total - int(round(sparsity * total))) // unit
    best = np.zeros(capacity + 1)  # f_0(b) = 0: no layer, no distortion, whatever the budget
    choices = np.zeros((len(sizes), capacity + 1), np.int16)
    for layer in range(len(sizes)):
        current = np.full(capacity + 1, np.inf)
        for index in range(len(rates)):
            spent = int(cost[layer, index])
            if spent > capacity:
                continue
            candidate = np.full(capacity + 1, np.inf)
            candidate[spent:] = distortion[layer, index] + best[: capacity + 1 - spent]
            better = candidate < current
            current[better] = candidate[better]
            choices[layer, better] = index
        best = current
    if not np.isfinite(best[capacity]):
        raise ValueError(f"no allocation of the rates {list(rates)} reaches sparsity {sparsity}")
    picks, budget = [0] * len(sizes), capacity
    for layer in reversed(range(len(sizes))):
        picks[layer] = int(choices[layer, budget])
        budget -= int(cost[layer, picks[layer]])
    return picks


def output_distortion(reference: np.ndarray, outputs: np.ndarray, kind: str) -> float:
    """Squared error of ``outputs`` against ``reference`` (samples x outputs), averaged over the outputs of a
    sample, then the worst sample (``worst``) or the mean over them (``mean``)."""
    per_sample = np.mean(np.square(reference - outputs).reshape(len(reference), -1), axis=1)
    return float(per_sample.max() if kind == "worst" else per_sample.mean())


def distortion_curves(model: keras.Model, x: np.ndarray, rates: Sequence[float], kind: str) -> np.ndarray:
    """(prunable layers, rates): the output distortion when that layer alone is magnitude-pruned at that rate."""
    predict = tf.function(lambda inputs: model(inputs, training=False))
    reference = predict(x).numpy()
    layers = prunable_layers(model)
    curves = np.zeros((len(layers), len(rates)))
    for row, layer in enumerate(layers):
        kernel = np.asarray(layer.kernel).copy()
        for column, rate in enumerate(rates):
            if rate == 0:
                continue  # the unpruned layer: no distortion
            # The masks' own rule (ties and rounding as the final masks will have them).
            layer.kernel.assign(kernel * top_fraction(np.abs(kernel), 1.0 - rate))
            curves[row, column] = output_distortion(reference, predict(x).numpy(), kind)
        layer.kernel.assign(kernel)
    return curves


@register_method(
    "layer-adaptive-dp",
    suite="pruning",
    kind="compression",
    paper=Paper(
        "Efficient Joint Optimization of Layer-Adaptive Weight Pruning in Deep Neural Networks",
        2023,
        "https://arxiv.org/abs/2308.10438",
    ),
    summary="per-layer magnitude-pruning rates minimising the summed output distortion (single-layer "
    "curves on a calibration batch) under the sparsity budget, by dynamic programming; then fine-tune",
    taxonomy=Taxonomy(structured=False, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class LayerAdaptiveDp(PruningMethod):
    """Options: ``sparsity``, ``levels`` (rates k / levels), ``calibration`` (samples), ``distortion``
    (``worst`` or ``mean``), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {
        **PruningMethod.default_options,
        "levels": 20,
        "calibration": 256,
        "distortion": "worst",
    }

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["distortion"] not in DISTORTIONS:
            raise ValueError(f"layer-adaptive-dp distortion '{self.options['distortion']}': expected worst or mean")
        for key in ("levels", "calibration"):
            value = self.options[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"layer-adaptive-dp {key} must be a positive integer, not {value!r}")

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        sparsity = float(self.options["sparsity"])
        started = time.perf_counter()
        x = context.splits.x_train[: self.options["calibration"]].astype(np.float32)
        rates = [k / self.options["levels"] for k in range(self.options["levels"] + 1)]
        curves = distortion_curves(model, x, rates, self.options["distortion"])
        layers = prunable_layers(model)
        sizes = [int(np.prod(layer.kernel.shape)) for layer in layers]
        picks = allocate_rates(curves, sizes, rates, sparsity)
        chosen = {layer.name: rates[pick] for layer, pick in zip(layers, picks, strict=True)}
        masks = magnitude_masks(model, sparsity, scope="layer", densities={n: 1.0 - r for n, r in chosen.items()})
        allocation_seconds = time.perf_counter() - started
        apply_masks(model, masks)
        history, seconds = fit(model, context, callbacks=[MaskKeeper(masks)])
        facts = {
            "sparsity_target": sparsity,
            "sparsity_by_layer": sparsity_facts(masks),
            "rate_by_layer": chosen,
            "summed_distortion": float(sum(curves[row, pick] for row, pick in enumerate(picks))),
            "distortion": self.options["distortion"],
            "levels": self.options["levels"],
            "calibration": {"split": "train", "samples": int(len(x)), "selection": "first", "labels": False},
            "allocation_seconds": round(allocation_seconds, 3),
        }
        return Artifact(model, history, seconds + allocation_seconds, facts=facts)
