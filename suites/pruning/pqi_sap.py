r"""PQI-SAP: the PQ Index of the channel magnitudes decides how many channels each prune-retrain iteration removes.

**PQ Index** of a vector :math:`w \in \mathbb R^d` (:math:`0 < p < q`; :math:`p = 0.5, q = 1` in the paper):

.. math:: I_{p,q}(w) = 1 - d^{\frac1q - \frac1p} \frac{\|w\|_p}{\|w\|_q} \in [0, 1 - d^{\frac1q - \frac1p}],

0 for a constant vector, larger the sparser (more compressible) :math:`w` is.

**Sparsity-informed Adaptive Pruning** (the paper's Algorithm 1, the code's ``make_bound_si`` and
``Compression.compress``): with compression hyper-parameter :math:`\eta_r`, scaling :math:`\gamma` and
largest pruning ratio :math:`\beta`, an iteration on the :math:`d` live units keeps at least

.. math:: r = \left\lceil d\,(1 + \eta_r)^{-\frac{q}{q-p}}\,(1 - I_{p,q}(w))^{\frac{qp}{q-p}} \right\rceil

and prunes :math:`c = \lfloor d \cdot \min(\gamma (1 - r/d), \beta) \rfloor` of them (:func:`sap_prune_count`),
the smallest in magnitude; then the network retrains and the next iteration measures again.

**Structured, here.** The units are the channels of every :func:`effbench.channels.channel_groups` group,
over all groups together (the paper's ``global`` scope), and :math:`w` is the vector of their magnitudes: the
L2 norm of each channel's filters with the batch norm after its producer folded in,
:math:`\|W_{\cdot,c}\,\gamma_c / \sqrt{\sigma_c^2 + \epsilon}\|_2` (the filter the deployed, BN-folded
network really applies; the root mean square over the producers of a residual group: :func:`folded_norms`),
compared across all groups as the paper's global scope compares raw weight magnitudes across layers (so a
group whose folded filters are small overall narrows most: on a trained ResNet-20 some fall to one channel).
From the trained FP32 twin, each of up to ``iterations`` iterations removes the :math:`c` lowest-magnitude
channels (no group emptied) physically (:func:`effbench.channels.remove_channels`) and fine-tunes the smaller model for
``epochs // iterations`` epochs of the task's fine-tune recipe (at least one). The iterations stop when
``sparsity`` (the fraction of all groups' channels) is reached (the last iteration prunes only up to it), when
the bound prunes nothing, or after ``iterations``. Facts: the channel facts, and per iteration the live
channels, their PQ Index and the number pruned (the PQI trace is the paper's diagnostic), and why it stopped.

Paper: Diao, Wang, Zhang, Yang, Ding & Tarokh, "Pruning Deep Neural Networks from a Sparsity Perspective",
ICLR 2023 (https://arxiv.org/abs/2302.05601); code github.com/diaoenmao/Pruning-Deep-Neural-Networks-from-a-
Sparsity-Perspective (``src/modules/compression.py``, ``src/modules/sparsity_index.py``; ``prune_mode``
``si-0.5-1-0-1`` = p, q, :math:`\eta_r`, :math:`\gamma`; ``cfg['beta'] = 0.9``; 30 iterations).

Deviations. The paper prunes weights (unstructured) and rewinds to the initial weights after each iteration
(lottery-ticket style, 200 epochs each); here channels are pruned, and each iteration fine-tunes from the
current weights (the protocol starts from the trained twin with the fine-tune recipe). The default
:math:`\gamma = 5` (the paper sweeps 1-9, ``si-gamma``) and ``iterations`` 5 fit the suite's budget: at
:math:`\gamma = 1` a trained network's channel magnitudes give a few percent per iteration, which takes the
paper's 30 iterations. ``small-faithful``: the suite's digits / mnist1d scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from effbench.channels import ChannelGroup, channel_groups, remove_channels
from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext
from suites.pruning._channel_scores import (
    TrainingLog,
    channel_facts,
    gates,
    kept_channels,
    lowest_channels,
    producer_of,
    removal_count,
)
from suites.pruning.base import PruningMethod


def pq_index(values: np.ndarray, p: float = 0.5, q: float = 1.0) -> float:
    """:math:`I_{p,q}(w) = 1 - d^{1/q - 1/p} \\|w\\|_p / \\|w\\|_q` (module docstring)."""
    if not 0 < p < q:
        raise ValueError(f"the PQ Index needs 0 < p < q; got p={p}, q={q}")
    w = np.abs(np.asarray(values, np.float64).ravel())
    norm_p, norm_q = np.sum(w**p) ** (1 / p), np.sum(w**q) ** (1 / q)
    return float(1.0 - w.size ** (1 / q - 1 / p) * norm_p / norm_q)


def sap_prune_count(d: int, index: float, p: float, q: float, eta: float, gamma: float, beta: float) -> int:
    """SAP's count of the ``d`` units to prune at PQ Index ``index``: :math:`c` of the module docstring."""
    retained = math.ceil(d * (1 + eta) ** (-q / (q - p)) * (1 - index) ** (q * p / (q - p)) - 1e-9)
    return int(math.floor(d * min(max(gamma * (1 - retained / d), 0.0), beta) + 1e-9))


def folded_norms(model: keras.Model, groups: Sequence[ChannelGroup]) -> dict[int, np.ndarray]:
    """Group -> each channel's BN-folded filter norm over its producers (module docstring)."""
    norms = {}
    for group in groups:
        folded = {}
        for name in gates(model, group):
            bn = model.get_layer(name)
            scale = np.ones(group.channels) if bn.gamma is None else np.asarray(bn.gamma)
            folded[producer_of(bn)] = scale / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
        squares = np.zeros(group.channels)
        for name in group.producers:
            layer = model.get_layer(name)
            kernel = np.asarray(layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel)
            squares += (kernel.reshape(-1, group.channels) ** 2).sum(0) * folded.get(name, 1.0) ** 2
        norms[group.index] = np.sqrt(squares / len(group.producers))
    return norms


@register_method(
    "pqi-sap",
    suite="pruning",
    kind="compression",
    paper=Paper("Pruning Deep Neural Networks from a Sparsity Perspective", 2023, "https://arxiv.org/abs/2302.05601"),
    summary="prune-retrain iterations whose channel count comes from the PQ Index of the BN-folded channel norms "
    "(SAP's bound); channels removed physically; the PQI trace recorded",
    taxonomy=Taxonomy(structured=True, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class PqiSap(PruningMethod):
    """Options: ``sparsity`` (0.75, the most of all groups' channels removed), ``p`` (0.5), ``q`` (1.0),
    ``eta`` (:math:`\\eta_r`, 0), ``gamma`` (5), ``beta`` (0.9), ``iterations`` (5), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {
        **PruningMethod.default_options, "p": 0.5, "q": 1.0, "eta": 0.0, "gamma": 5.0, "beta": 0.9, "iterations": 5,
    }  # fmt: skip

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        o = self.options
        groups = channel_groups(model)
        budget = removal_count(groups, o["sparsity"])
        alive = {group.index: np.arange(group.channels) for group in groups}
        epochs = max(1, context.recipe.epochs // o["iterations"])
        log, trace, stopped = TrainingLog(), [], "iterations"
        for iteration in range(o["iterations"]):
            current = channel_groups(model)
            norms = folded_norms(model, current)
            flat = np.concatenate([norms[group.index] for group in current])
            index = pq_index(flat, o["p"], o["q"])
            count = sap_prune_count(flat.size, index, o["p"], o["q"], o["eta"], o["gamma"], o["beta"])
            removed_so_far = sum(group.channels - len(alive[group.index]) for group in groups)
            count = min(count, budget - removed_so_far, flat.size - len(current))
            trace.append({"iteration": iteration, "channels": int(flat.size), "pqi": round(index, 6),
                          "pruned": max(count, 0)})  # fmt: skip
            if count <= 0:
                stopped = "target" if removed_so_far >= budget else "bound"
                break
            kept = kept_channels(current, lowest_channels(norms, count))
            model = remove_channels(model, kept)
            alive = {index: alive[index][kept[index]] for index in alive}
            log.fit(model, context, epochs)
        else:
            if sum(group.channels - len(alive[group.index]) for group in groups) >= budget:
                stopped = "target"
        facts = {**channel_facts(groups, alive, o["sparsity"]), "pqi_trace": trace, "stopped": stopped}
        return Artifact(model, log.history, log.seconds, facts=facts)
