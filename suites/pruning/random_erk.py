r"""Random pruning at initialisation, then sparse training (Liu et al., 2022): the most naive baseline.

Mask: for each prunable kernel :math:`W_l` (Conv / Dense; depthwise kernels stay dense) of a *freshly
initialised* backbone, keep :math:`\operatorname{round}(d_l |W_l|)` weights drawn uniformly at random,
without replacement. Layer densities :math:`d_l` (option ``ratios``):

- ``erk`` (the paper's best, and default): Erdős–Rényi-Kernel, :math:`d_l \propto \frac{\sum_i n^l_i}{\prod_i
  n^l_i}` over the kernel's dimensions (:func:`suites.pruning._masks.erk_densities`), scaled so the network
  keeps :math:`(1 - s)` of its prunable weights; small layers (the stem, the classifier) stay denser;
- ``uniform``: :math:`d_l = 1 - s` in every layer.

The mask is fixed; the sparse network then trains from scratch with the task's recipe, pruned weights held at
zero after every step (:class:`suites.pruning._masks.MaskKeeper`). Nothing in the mask depends on data or on
the weights: it is drawn from the run's seed.

Deviation: the official code (VITA-Group/Random_Pruning, ``sparselearning/core.py``) draws each weight
independently (``torch.rand(shape) < d_l``), so a layer's density is :math:`d_l` only in expectation; here each
layer keeps exactly :math:`\operatorname{round}(d_l |W_l|)` weights, so the realised sparsity is the target.

Paper: Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang & Mocanu, "The Unreasonable
Effectiveness of Random Pruning: Return of the Most Naive Baseline for Sparse Training", ICLR 2022
(https://arxiv.org/abs/2202.02643).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext, fit
from suites.pruning._masks import MaskKeeper, Masks, apply_masks, erk_densities, prunable_layers, sparsity_facts
from suites.pruning.base import INIT, PruningMethod

RATIOS = ("erk", "uniform")


def layer_densities(model: keras.Model, sparsity: float, ratios: str) -> dict[str, float]:
    """Each prunable layer's density under ``ratios`` (``erk`` or ``uniform``) at overall ``sparsity``."""
    shapes = {layer.name: tuple(layer.kernel.shape) for layer in prunable_layers(model)}
    if ratios == "erk":
        return erk_densities(shapes, sparsity)
    return {name: 1.0 - sparsity for name in shapes}


def random_masks(model: keras.Model, densities: Mapping[str, float], rng: np.random.Generator) -> Masks:
    """Layer name -> a mask keeping ``round(density * size)`` of its kernel's weights, chosen at random."""
    masks = {}
    for layer in prunable_layers(model):
        shape = tuple(layer.kernel.shape)
        size = int(np.prod(shape))
        mask = np.zeros(size, np.float32)
        mask[rng.choice(size, int(round(densities[layer.name] * size)), replace=False)] = 1.0
        masks[layer.name] = mask.reshape(shape)
    return masks


@register_method(
    "random-erk",
    suite="pruning",
    kind="compression",
    paper=Paper(
        "The Unreasonable Effectiveness of Random Pruning: Return of the Most Naive Baseline for Sparse Training",
        2022,
        "https://arxiv.org/abs/2202.02643",
    ),
    summary="random masks at initialisation with ERK (or uniform) layer densities, then sparse training "
    "from scratch with the mask fixed",
    taxonomy=Taxonomy(structured=False, applied="init", data="labelled"),
)
class RandomErk(PruningMethod):
    """Options: ``sparsity``, ``ratios`` (``erk`` or ``uniform``), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {**PruningMethod.default_options, "ratios": "erk"}
    starts_from: ClassVar[str] = INIT

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["ratios"] not in RATIOS:
            raise ValueError(f"random-erk ratios '{self.options['ratios']}': expected one of {', '.join(RATIOS)}")

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        sparsity = float(self.options["sparsity"])
        densities = layer_densities(model, sparsity, self.options["ratios"])
        masks = random_masks(model, densities, np.random.default_rng(context.seed))
        apply_masks(model, masks)
        history, seconds = fit(model, context, callbacks=[MaskKeeper(masks)])
        facts = {
            "sparsity_target": sparsity,
            "sparsity_by_layer": sparsity_facts(masks),
            "ratios": self.options["ratios"],
            "starts_from": "init",
        }
        return Artifact(model, history, seconds, facts=facts)
