r"""EMO-PMS: evolutionary multi-objective channel pruning, block by block, merged into sub-networks on a front.

Mechanism. The trained network's channel groups (:func:`effbench.channels.channel_groups`, in graph order) are
split into ``blocks`` consecutive sub-networks :math:`b` (divide and conquer: each search space is one block's
channels). For each block, NSGA-II evolves channel masks :math:`z \in \{0, 1\}^{\sum_{g \in b} C_g}` (at least
one channel kept per group) on two objectives, both minimised:

.. math::  F(z) = \bigl(-\operatorname{acc}_{val}(f|_{z}),\ P(z)\bigr)

the accuracy on a validation batch of the whole network with only this block pruned (the rest of the trained
network acts as the paper's feature selector), and the params :math:`P` the network keeps (counted exactly, as
:func:`effbench.channels.remove_channels` would leave them). One generation: binary tournaments on (front rank,
crowding distance), uniform crossover, bit-flip mutation at rate :math:`1/n`, then the parents and children
are sorted into non-dominated fronts (:func:`non_dominated_sort`, Deb et al.'s fast sort) and the best
``population`` kept by rank, then crowding distance. The population starts with the full mask and masks
drawn at keep rates uniform in [0.1, 1].

Merging (the paper's global performance impairment ranking). Each block's final first front, ordered from the
most params to the fewest, gives steps :math:`j \to j + 1` with impairment :math:`\Delta I` (accuracy lost)
and params saved :math:`\Delta P`. Starting from every block at its largest member, the step of least
:math:`\Delta I / \Delta P` over all blocks is taken again and again: a path of global schemes from (nearly)
dense to every block at its smallest member. The main deployable is the scheme whose removed fraction of the
network's params is closest to ``sparsity``; ``pareto-0`` ... ``pareto-<K-1>`` (``points`` = K) are the
schemes closest to :math:`\tfrac{i + 1}{K}` of the path's largest removed fraction. Each is removed
physically (:func:`effbench.channels.remove_channels`) and fine-tuned with the task's fine-tune recipe.

Facts: the target and achieved params removed, kept channels per group, the accuracy on the validation batch
before fine-tuning, and (main) the search's size and each block's front size.

Paper: Shang, Zhu, Wu, Zhang, Jiao & Xu, "An EMO Joint Pruning with Multiple Sub-networks: Fast and Effect",
2023 (https://arxiv.org/abs/2303.16212; its later version is titled EMO-DIR). Deviations: the paper trains
each sub-network with a cross-network feature constraint and scores candidates with a pre-trained feature
selector; here blocks are not retrained and candidates are scored by the trained network's own accuracy;
blocks are consecutive chunks of channel groups, not of layers; the merge ranks steps by impairment per
parameter saved (this implementation's reading of "global performance impairment ranking"); ``population``
16, ``generations`` 10, ``blocks`` 3 are this implementation's defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from effbench.channels import PER_CHANNEL, PRODUCERS, ChannelGroup, channel_groups, remove_channels
from effbench.method import MAIN, Artifact, Deployable
from effbench.pareto import non_dominated_fronts, rank_and_crowding
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext, fit
from suites.pruning._channel_masks import ReaderMasks, compiled_logits, keep_facts, require_positive_ints
from suites.pruning.base import PruningMethod

Keep = dict[int, np.ndarray]


# ---------------------------------------------------------------- NSGA-II


def nsga2(
    evaluate: Callable[[np.ndarray], np.ndarray], segments: Sequence[int], population: int, generations: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Evolve bit masks over ``segments`` (each keeps at least one bit); the final first front (distinct masks)."""
    length = int(sum(segments))
    bounds = np.cumsum([0, *segments])

    def repair(genomes: np.ndarray) -> np.ndarray:
        for genome in genomes:
            for start, end in zip(bounds[:-1], bounds[1:], strict=True):
                if not genome[start:end].any():
                    genome[start + rng.integers(end - start)] = True
        return genomes

    rates = rng.uniform(0.1, 1.0, size=(population, 1))
    genomes = repair(rng.random((population, length)) < rates)
    genomes[0] = True
    objectives = evaluate(genomes)
    for _ in range(generations):
        rank, crowding = rank_and_crowding(objectives)
        # Binary tournaments: the lower front wins, then the larger crowding distance.
        pairs = rng.integers(population, size=(population, 2, 2))
        better = np.lexsort((-crowding, rank))
        standing = np.empty(population, int)
        standing[better] = np.arange(population)
        parents = [tuple(int(min(pair, key=lambda i: standing[i])) for pair in row) for row in pairs]
        children = np.array([np.where(rng.random(length) < 0.5, genomes[a], genomes[b]) for a, b in parents])
        children ^= rng.random(children.shape) < 1.0 / length
        children = repair(children)
        genomes = np.concatenate([genomes, children])
        objectives = np.concatenate([objectives, evaluate(children)])
        rank, crowding = rank_and_crowding(objectives)
        survivors = np.lexsort((-crowding, rank))[:population]
        genomes, objectives = genomes[survivors], objectives[survivors]
    front = non_dominated_fronts(objectives)[0]
    _, distinct = np.unique(genomes[front], axis=0, return_index=True)
    front = [front[i] for i in sorted(distinct)]
    return genomes[front], objectives[front]


# ---------------------------------------------------------------- params of a selection


class ParamCounter:
    """The params a network keeps under a channel selection, counted exactly from its weight shapes."""

    def __init__(self, model: keras.Model, groups: Sequence[ChannelGroup]):
        self.channels = [group.channels for group in groups]
        produced = {name: i for i, g in enumerate(groups) for name in g.producers}
        read = {name: i for i, g in enumerate(groups) for name in g.readers}
        # (size, groups scaling it): a producer's kernels scale with the group read and the group made, its bias
        # with the group made; a per-channel layer's weights with its group.
        self.terms: list[tuple[int, tuple[int, ...]]] = []
        for layer in model.layers:
            for weight in layer.weights:
                kind = weight.name.rsplit("/", 1)[-1].split(":")[0]
                scaled: list[int | None] = []
                if type(layer) in PRODUCERS:
                    reads = kind in ("kernel", "depthwise_kernel", "pointwise_kernel")
                    makes = kind != "depthwise_kernel"
                    scaled = [read.get(layer.name) if reads else None, produced.get(layer.name) if makes else None]
                elif type(layer) in PER_CHANNEL:
                    scaled = [read.get(layer.name)]
                self.terms.append((int(np.prod(weight.shape)), tuple(g for g in scaled if g is not None)))

    def __call__(self, kept: Sequence[int]) -> int:
        """Params kept when group ``g`` keeps ``kept[g]`` channels."""
        total = 0
        for size, scaled in self.terms:
            numerator, denominator = size, 1
            for group in scaled:
                numerator, denominator = numerator * int(kept[group]), denominator * self.channels[group]
            total += numerator // denominator
        return total


# ---------------------------------------------------------------- the method


@register_method(
    "emo-pms",
    suite="pruning",
    kind="compression",
    paper=Paper(
        "An EMO Joint Pruning with Multiple Sub-networks: Fast and Effect", 2023, "https://arxiv.org/abs/2303.16212"
    ),
    summary="per-block NSGA-II channel pruning (validation accuracy vs params kept), merged by impairment per "
    "param into a front of sub-networks: the target one and K more along the front, each fine-tuned",
    taxonomy=Taxonomy(structured=True, applied="post-training", data="labelled"),
)
class EMOPMS(PruningMethod):
    """Options: ``sparsity`` (fraction of the network's params removed by the main deployable), ``points``
    (K sub-networks along the front: ``pareto-0`` ...), ``blocks``, ``population``, ``generations``,
    ``eval_samples`` (the validation batch)."""

    default_options: ClassVar[dict[str, Any]] = {
        **PruningMethod.default_options, "points": 3, "blocks": 3, "population": 16, "generations": 10,
        "eval_samples": 512,
    }  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        require_positive_ints(self, "points", "blocks", "population", "generations", "eval_samples")

    def deployable_names(self) -> tuple[str, ...]:
        return (MAIN, *(f"pareto-{index}" for index in range(self.options["points"])))

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        started = time.perf_counter()
        groups = channel_groups(model)
        if not groups:
            raise ValueError(f"emo-pms: model '{model.name}' has no prunable channel group")
        rng = np.random.default_rng(context.seed)
        samples = self.options["eval_samples"]
        x, y = context.splits.x_val[:samples], context.splits.y_val[:samples]
        masks, logits, params = ReaderMasks(model, groups), compiled_logits(model), ParamCounter(model, groups)
        full = [g.channels for g in groups]
        dense_accuracy = float(np.mean(logits(x).argmax(axis=-1) == y))
        blocks = [b.tolist() for b in np.array_split(np.arange(len(groups)), min(self.options["blocks"], len(groups)))]
        fronts = []
        for block in blocks:
            genomes, objectives = nsga2(
                self.evaluator(block, groups, masks, logits, params, x, y), [full[g] for g in block],
                self.options["population"], self.options["generations"], rng,
            )  # fmt: skip
            order = np.lexsort((objectives[:, 0], -objectives[:, 1]))
            fronts.append([(self.keep_of(block, groups, genomes[i]), dense_accuracy + objectives[i, 0]) for i in order])
        path = merge_fronts(fronts, params, full, dense_accuracy)
        removed = np.array([1.0 - params(kept_counts(scheme, full)) / params(full) for scheme in path])
        targets = {MAIN: float(self.options["sparsity"])}
        points = self.options["points"]
        targets.update({f"pareto-{i}": removed.max() * (i + 1) / points for i in range(points)})
        chosen = {name: int(np.argmin(np.abs(removed - target))) for name, target in targets.items()}
        trained: dict[int, tuple[keras.Model, dict]] = {}
        for index in dict.fromkeys(chosen.values()):
            pruned = remove_channels(model, path[index])
            trained[index] = (pruned, fit(pruned, context)[0])
        deployables = {}
        for name, index in chosen.items():
            with masks.applied(path[index]):
                accuracy = float(np.mean(logits(x).argmax(axis=-1) == y))
            facts = {
                "sparsity_target": round(float(targets[name]), 6), "params_removed": round(float(removed[index]), 6),
                "val_batch_accuracy_before_finetune": round(accuracy, 6), "path_index": index,
                **keep_facts(model, groups, path[index]),
            }  # fmt: skip
            deployables[name] = Deployable(trained[index][0], facts=facts)
        deployables[MAIN].facts.update({
            "dense_val_batch_accuracy": round(dense_accuracy, 6), "blocks": blocks, "path_length": len(path),
            "front_sizes": [len(front) for front in fronts],
            "evaluations": len(blocks) * self.options["population"] * (self.options["generations"] + 1),
        })  # fmt: skip
        return Artifact.of(deployables, history=trained[chosen[MAIN]][1], train_seconds=time.perf_counter() - started)

    @staticmethod
    def keep_of(block: Sequence[int], groups: Sequence[ChannelGroup], genome: np.ndarray) -> Keep:
        """A block genome's channel selection by group index."""
        keep, start = {}, 0
        for group in block:
            keep[group] = np.flatnonzero(genome[start : start + groups[group].channels])
            start += groups[group].channels
        return keep

    def evaluator(
        self, block: Sequence[int], groups: Sequence[ChannelGroup], masks: ReaderMasks, logits: Callable,
        params: ParamCounter, x: np.ndarray, y: np.ndarray,
    ) -> Callable[[np.ndarray], np.ndarray]:  # fmt: skip
        """Genomes of ``block`` -> their objectives (-accuracy, params kept), the other blocks dense."""
        full = [group.channels for group in groups]

        def evaluate(genomes: np.ndarray) -> np.ndarray:
            rows = []
            for genome in genomes:
                keep = self.keep_of(block, groups, genome)
                with masks.applied(keep):
                    accuracy = float(np.mean(logits(x).argmax(axis=-1) == y))
                rows.append((-accuracy, float(params(kept_counts(keep, full)))))
            return np.array(rows)

        return evaluate


def kept_counts(keep: Keep, full: Sequence[int]) -> list[int]:
    """Channels kept per group (all of a group not in ``keep``)."""
    return [len(keep[g]) if g in keep else channels for g, channels in enumerate(full)]


def merge_fronts(
    fronts: Sequence[Sequence[tuple[Keep, float]]], params: ParamCounter, full: Sequence[int], dense_accuracy: float
) -> list[Keep]:
    """The global schemes of the impairment ranking (module docstring), densest first.

    ``fronts[b]``: block ``b``'s front as (selection, accuracy), ordered from the most params kept to the fewest.
    """

    def block_params(selection: Keep) -> int:
        return params(kept_counts(selection, full))

    position = [0] * len(fronts)
    path = [{g: kept for front in fronts for g, kept in front[0][0].items()}]
    while True:
        steps = []
        for b, front in enumerate(fronts):
            if position[b] + 1 < len(front):
                (here, here_accuracy), (there, there_accuracy) = front[position[b]], front[position[b] + 1]
                saved = block_params(here) - block_params(there)
                steps.append(((here_accuracy - there_accuracy) / max(saved, 1), b))
        if not steps:
            return path
        _, block = min(steps)
        position[block] += 1
        scheme = dict(path[-1])
        scheme.update(fronts[block][position[block]][0])
        path.append(scheme)
