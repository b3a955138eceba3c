r"""Sparse recurrent networks: magnitude-pruned LSTM kernels, or a random graph as the recurrent connectivity.

Darji's thesis studies sparsity in RNN-Tanh, RNN-ReLU, GRU and LSTM two ways; both run here on the ``lstm``
backbone (:mod:`suites.pruning._recurrent`: kernels :math:`W \in \mathbb{R}^{F \times 4H}`, input to gates,
and :math:`U \in \mathbb{R}^{H \times 4H}`, hidden to gates), option ``mode``:

- ``magnitude`` (the thesis's first experiment): train the dense LSTM, clip the weights of smallest
  magnitude from both kernels, then retrain and count the epochs that regain the accuracy. Each kernel
  keeps its largest :math:`(1 - s)|K|` weights, :math:`M_K = 1[|K| \ge \tau_K]` (``_masks.magnitude_masks``,
  per-kernel rate :math:`s`, option ``sparsity``), and fine-tunes with :math:`K \leftarrow M_K \odot K`
  after every step (``MaskKeeper``). It starts from the trained backbone (the FP32 twin, trained once) with
  the task's fine-tune recipe. Facts: the validation top-1 of the dense model, right after pruning, and
  ``recovery_epoch``, the first fine-tune epoch whose validation top-1 is back at the dense one's (null if
  none is).
- ``random-graph`` (the second): the connectivity is a random graph instead of a learned one, fixed before
  training. The hidden units are the nodes of a Watts-Strogatz graph :math:`G` of :math:`H` nodes and even
  degree :math:`k` (the even number nearest :math:`(1 - s) H`): a ring lattice, each node joined to its
  :math:`k/2` nearest neighbours on either side, each lattice edge rewired to a uniformly drawn free node
  with probability :math:`p = 1` (the thesis's ``connected_watts_strogatz_graph(n, n // 5, 1)``); its
  adjacency :math:`A \in \{0,1\}^{H \times H}` masks the recurrent kernel of all four gates,
  :math:`M_U = [A\,A\,A\,A]`, so unit :math:`j` feeds unit :math:`i` iff :math:`(i, j) \in G`; the recurrent
  sparsity is :math:`1 - k/H`. The input kernel stays dense, as the thesis's input reaches the graph's
  nodes densely. A fresh backbone trains from scratch with the mask held (the task's recipe).

The sparsity of each kernel is recorded (``sparsity_by_layer``); the deployed model is the masked LSTM
(zeros in place), so its nonzero MACs fall with the kernels' zeros.

Paper: Darji, "Investigating Sparsity in Recurrent Neural Networks", master's thesis, University of Passau,
2021, arXiv 2024 (https://arxiv.org/abs/2407.20601); code: github.com/harshildarji/thesis
(``Implementations/experiments/pruning.py``, ``arbitrary_structure.py``). Run it as ``rnn-sparsity`` over
``mnist1d-seq``, 40 steps of one value (or ``digits``, 8 rows of 8 pixels, as the tests do).

Scale ``small-faithful``, and deviations: one LSTM layer of 32 units instead of the thesis's three stacked
layers of 50 (and its RNN-Tanh, RNN-ReLU and GRU variants); the thesis's Sparse-RNN turns a random graph
(Watts-Strogatz or Barabási-Albert) into a layered architecture of its own, one recurrent layer per graph
layer with masked connections between them and skip layers, while here the graph masks the unit-to-unit
recurrence of the fixed backbone, so every method of the suite prunes the same model; magnitudes are
thresholded per kernel at the target rate rather than at one threshold for all; the fine-tune recipe
replaces the thesis's 10 retraining epochs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext, fit
from suites.architectures.lstm import GATES, INPUT_KERNEL, RECURRENT_KERNEL
from suites.pruning._masks import MaskKeeper, Masks, apply_masks, magnitude_masks, prunable_layers, sparsity_facts
from suites.pruning.base import INIT, TRAINED, PruningMethod

MODES = ("magnitude", "random-graph")
# The thesis rewires every lattice edge (p = 1 in its connected_watts_strogatz_graph calls).
REWIRE = 1.0


def watts_strogatz(nodes: int, degree: int, rewire: float, rng: np.random.Generator) -> np.ndarray:
    """The symmetric 0/1 adjacency (no self-loops) of a Watts-Strogatz graph of ``nodes`` and even ``degree``.

    A ring lattice joins each node to its ``degree // 2`` nearest neighbours on either side; then each lattice
    edge :math:`(i, i + j)` is, with probability ``rewire``, moved to :math:`(i, w)`, :math:`w` drawn uniformly
    among the nodes not yet joined to :math:`i`. The edge count stays ``nodes * degree / 2``.
    """
    if degree % 2 or not 2 <= degree < nodes:
        raise ValueError(f"a Watts-Strogatz graph of {nodes} nodes needs an even degree in [2, {nodes}); got {degree}")
    adjacency = np.zeros((nodes, nodes), dtype=bool)
    offsets = range(1, degree // 2 + 1)
    for offset in offsets:
        for node in range(nodes):
            adjacency[node, (node + offset) % nodes] = adjacency[(node + offset) % nodes, node] = True
    for offset in offsets:
        for node in range(nodes):
            if rng.random() >= rewire:
                continue
            free = np.flatnonzero(~adjacency[node])
            free = free[free != node]
            if free.size == 0:
                continue
            old, new = (node + offset) % nodes, rng.choice(free)
            adjacency[node, old] = adjacency[old, node] = False
            adjacency[node, new] = adjacency[new, node] = True
    return adjacency


def graph_degree(nodes: int, sparsity: float) -> int:
    """The even degree nearest ``(1 - sparsity) * nodes``, within [2, nodes - 1]."""
    largest = nodes - 1 if (nodes - 1) % 2 == 0 else nodes - 2
    return int(min(largest, max(2, 2 * round((1.0 - sparsity) * nodes / 2))))


def recurrent_kernels(model: keras.Model) -> tuple[keras.layers.Dense, keras.layers.Dense]:
    """The LSTM's input and recurrent Dense layers; an error naming them when the backbone has none."""
    names = {layer.name for layer in model.layers}
    if not {INPUT_KERNEL, RECURRENT_KERNEL} <= names:
        raise ValueError(
            f"rnn-sparsity prunes a recurrent backbone with Dense layers '{INPUT_KERNEL}' and '{RECURRENT_KERNEL}' "
            f"(the 'lstm' backbone); model '{model.name}' has neither"
        )
    return model.get_layer(INPUT_KERNEL), model.get_layer(RECURRENT_KERNEL)


def magnitude_kernel_masks(model: keras.Model, sparsity: float) -> Masks:
    """Masks keeping the largest ``1 - sparsity`` of each LSTM kernel (the other layers are not pruned)."""
    kernels = {layer.name for layer in recurrent_kernels(model)}
    densities = {layer.name: 1.0 - sparsity if layer.name in kernels else 1.0 for layer in prunable_layers(model)}
    masks = magnitude_masks(model, sparsity, scope="layer", densities=densities)
    return {name: mask for name, mask in masks.items() if name in kernels}


def random_graph_masks(model: keras.Model, sparsity: float, seed: int) -> tuple[Masks, dict[str, Any]]:
    """Masks from a Watts-Strogatz graph over the hidden units (dense input kernel), and the graph's facts."""
    inputs, recurrent = recurrent_kernels(model)
    units = recurrent.kernel.shape[0]
    degree = graph_degree(units, sparsity)
    adjacency = watts_strogatz(units, degree, REWIRE, np.random.default_rng(seed))
    masks = {
        inputs.name: np.ones(inputs.kernel.shape, np.float32),
        recurrent.name: np.tile(adjacency, (1, GATES)).astype(np.float32),
    }
    graph = {"kind": "watts-strogatz", "nodes": units, "degree": degree, "rewire": REWIRE,
             "edges": int(adjacency.sum() // 2)}  # fmt: skip
    return masks, graph


def validation_top1(model: keras.Model, context: TrainContext) -> float:
    logits = model.predict(context.splits.x_val, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == context.splits.y_val))


def recovery_epoch(val_top1: list[float], dense_top1: float) -> int | None:
    """The first epoch (1-based) whose validation top-1 is at least the dense model's, or None."""
    return next((epoch for epoch, top1 in enumerate(val_top1, start=1) if top1 >= dense_top1), None)


@register_method(
    "rnn-sparsity",
    suite="pruning",
    kind="compression",
    paper=Paper("Investigating Sparsity in Recurrent Neural Networks", 2024, "https://arxiv.org/abs/2407.20601"),
    summary="sparse LSTM: magnitude-pruned input/recurrent kernels then retraining, or a random-graph recurrence",
    taxonomy=Taxonomy(structured=False, applied="post-training"),
    scale="small-faithful",
)
class RNNSparsity(PruningMethod):
    """Option ``mode``: ``magnitude`` (prune the trained LSTM, retrain) or ``random-graph`` (sparse from init)."""

    default_options = {**PruningMethod.default_options, "backbone": "lstm", "mode": "magnitude"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["mode"] not in MODES:
            raise ValueError(f"rnn-sparsity mode must be one of {', '.join(MODES)}; got {self.options['mode']!r}")
        # Magnitude pruning retrains the trained LSTM; a random-graph LSTM trains from scratch.
        self.starts_from = TRAINED if self.options["mode"] == "magnitude" else INIT

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        sparsity = self.options["sparsity"]
        facts: dict[str, Any] = {"sparsity_target": sparsity, "mode": self.options["mode"]}
        if self.options["mode"] == "magnitude":
            facts["val_top1_dense"] = validation_top1(model, context)
            masks = magnitude_kernel_masks(model, sparsity)
            apply_masks(model, masks)
            facts["val_top1_pruned"] = validation_top1(model, context)
        else:
            masks, facts["graph"] = random_graph_masks(model, sparsity, context.seed)
            apply_masks(model, masks)
        history, seconds = fit(model, context, callbacks=[MaskKeeper(masks)])
        if self.options["mode"] == "magnitude":
            facts["recovery_epoch"] = recovery_epoch(history.get("val_accuracy", []), facts["val_top1_dense"])
        facts["sparsity_by_layer"] = sparsity_facts(masks)
        return Artifact(model, history, seconds, facts=facts)
