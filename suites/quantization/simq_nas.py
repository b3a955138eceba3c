r"""SimQ-NAS: one search over sub-network widths and per-layer bit widths, guided by a light predictor.

Small-faithful. Four stages, from the trained protocol backbone (upstream ``trained``):

1. **Elastic super-network.** Channels are grouped as :func:`effbench.channels.channel_groups` finds them:
   a conv / dense layer's output channels with the per-channel layers that pass them on, and every producer
   whose outputs a residual ``Add`` joins (a residual stream is one group; a group read through a
   ``Flatten`` stays whole). A group :math:`g` keeps :math:`k_g = \operatorname{round}(r\, C_g)` of its
   :math:`C_g` channels, :math:`r \in \{0.5, 0.75, 1\}` (``WIDTHS``): the first :math:`k_g` in importance
   order, :math:`\lVert W_{\cdot c} \rVert_1` of its producers' filters (summed over them), descending,
   computed once on the trained weights. In the super-network each conv / dense layer reading :math:`g`
   multiplies its input and its kernel by the mask :math:`m_g` (1 on the kept channels), and every conv /
   dense layer :math:`l` computes at :math:`b_l \in \{8, 4\}` bits (``BITS``, weights and input): the
   ``round`` mode of :mod:`suites.quantization._bit_choice`, rounding with the STE.
2. **Sandwich training** (BigNAS / OFA): per batch, the largest sub-network (full width, 8 bits), the
   smallest (:math:`r = 0.5`, 4 bits) and ``random_subnets`` random ones (widths and bits uniform) each
   compute a loss; one optimizer step applies the sum of their gradients. The largest learns from the
   labels; with ``distill`` (default) the others learn from its softened outputs (in-place distillation,
   :math:`-\sum_j \operatorname{sg}(\operatorname{softmax}(z^{\max})_j) \log \operatorname{softmax}(z)_j`).
   The task's fine-tune recipe sets the optimizer, schedule, batch size and epochs.
3. **Search** (LINAS, the lightweight iterative search of the hardware-aware sub-network search
   system): a sub-network is a genome (width choice per group, bit choice per layer). Measuring one on the
   validation split:
   set its masks and policy, recalibrate every batch norm's statistics and every input range on the
   calibration inputs (one pass in training mode, weights at the policy's bits and inputs unquantized:
   each batch norm takes its batch's mean and variance, each input quantizer the min/max of its masked
   input, what the extracted sub-network's own calibration then gives it,
   :func:`~suites.quantization._uniform.calibrate_activation_ranges`), then
   top-1 at that policy. The accuracy predictor is ridge regression on the genome's one-hot encoding
   (:class:`RidgePredictor`), fitted on the measured sub-networks; size and BOPs are exact
   (:class:`CostModel`: per weight, its shape with the kept channels; BOPs :math:`= \sum_l \text{MACs}_l
   b_l^2`, size :math:`= \sum_{kernels} |K| b_l + \sum_{others} |W| \cdot 32`, the complexity track's
   definitions). Half of ``measured`` are the largest, the smallest and random sub-networks; then
   ``iterations`` rounds each fit the predictor, run NSGA-II (:func:`nsga2`) on (predicted error, cost),
   and measure a spread of the predicted front's unmeasured genomes. A last NSGA-II run on the final
   predictor gives the front; ``points`` genomes are taken evenly along it, most accurate first
   (:func:`spread_along_front`; from the next fronts where it is shorter, so they are always distinct).
4. **Deployment.** Each chosen sub-network is extracted: the masked channels are removed physically
   (:func:`effbench.channels.remove_channels`: producers rebuilt with fewer filters, every reader's weights
   sliced), its layers fake-quantized at its policy and calibrated. Its
   facts: ``bit_widths``, ``widths`` and ``channels`` per group, ``simulated`` (true where a layer is at 4
   bits; at 8 bits everywhere it also deploys as an int8 flatbuffer), ``calibration``, and ``search``: the
   predicted top-1, the exact BOPs and size, its place on the front.

NSGA-II (Deb et al. 2002), compactly: a population of genomes; per generation, binary tournaments on
(front rank, crowding distance) pick parents, uniform crossover and per-gene mutation (rate 1/genes) make
children, and parents and children together are cut back to the population by fast non-dominated sorting
(:func:`effbench.pareto.non_dominated_fronts`) and crowding distance. Duplicates are dropped.

Deviations: the paper searches transformer and ResNet super-networks trained beforehand, with more
elastic dimensions than width (depth, heads); how it quantizes a candidate and which precisions its policies take are
not in the abstract. Here the super-network is made from the trained protocol backbone and trained
briefly (the fine-tune recipe), it is elastic in width only, and its policy is {8, 4} bits per layer,
sampled during sandwich training so that every policy is trained quantization-aware. Latency is not an
objective: BOPs stand for compute (option ``cost=size`` searches size in bits instead). The chosen
sub-networks are not fine-tuned (the abstract does not say they are; one-shot sub-networks deploy with the
super-network's weights and recalibrated batch norms, as OFA's do). The predictor is ridge regression (the
paper's are "lightly trained"; their kind is not in the abstract). Recalibration runs in training mode, so
a backbone with dropout would drop there too (the protocol backbones have none).

Paper: Sridhar, Szankin, Chen, Sundaresan & Sarah, "SimQ-NAS: Simultaneous Quantization Policy and Neural
Architecture Search", 2023 (https://arxiv.org/abs/2312.13301); its search recipe: Sarah, Cummings, Sridhar
et al., "A Hardware-Aware System for Accelerating Deep Neural Network Optimization", 2022
(https://arxiv.org/abs/2202.12954).

Options: ``backbone``; ``points`` (deployables, default 3: the main one is the front's most accurate,
``pareto-1`` ... the next along it); ``measured`` (sub-networks measured, 32); ``iterations`` (predictor
rounds, 2); ``population`` (40) and ``generations`` (25) of NSGA-II; ``random_subnets`` (2);
``distill`` (true); ``cost`` (``bops`` or ``size``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from effbench.bits import KERNEL_KINDS
from effbench.channels import CHANNEL_AXES, PRODUCERS, ChannelGroup, channel_groups, remove_channels
from effbench.graph import local_name
from effbench.method import MAIN, Artifact, Deployable
from effbench.pareto import crowding_distance, non_dominated_fronts, rank_and_crowding
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.quantization._bit_choice import (
    ROUND,
    bit_choice_layers,
    bit_choice_model,
    copy_weights,
    deployable,
    output_positions,
    quantized_copy,
    training_batches,
)
from suites.quantization._uniform import FLOAT_BITS, quantizable_layer_names, quantize_layers
from suites.quantization.base import QuantizationMethod, calibration_samples

WIDTHS = (0.5, 0.75, 1.0)
BITS = (8, 4)
COSTS = ("bops", "size")
# Calibration inputs for batch-norm statistics and input ranges (the first of the training split).
RECALIBRATION_SAMPLES = 256
EVALUATION_BATCH = 512
RIDGE = 0.1

# ---------------------------------------------------------------- elastic width


def elastic_groups(model: keras.Model) -> list[ChannelGroup]:
    """The model's channel groups (:func:`effbench.channels.channel_groups`) but those a ``Flatten`` reads."""
    return [
        group
        for group in channel_groups(model)
        if not any(isinstance(model.get_layer(name), keras.layers.Flatten) for name in group.readers)
    ]


def kept_count(group: ChannelGroup, ratio: float) -> int:
    return max(1, round(ratio * group.channels))


def importance_orders(model: keras.Model, groups: Sequence[ChannelGroup]) -> list[np.ndarray]:
    """Each group's channels by descending importance: the L1 norm of their filters, over the producers."""
    orders = []
    for group in groups:
        norms = sum(
            np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
            for kernel in (model.get_layer(name).kernel.numpy() for name in group.producers)
        )
        orders.append(np.argsort(-norms, kind="stable"))
    return orders


Ties = Callable[[str, str, int], dict[int, int]]


def weight_ties(model: keras.Model, groups: Sequence[ChannelGroup]) -> Ties:
    """``ties(layer, weight kind, rank)``: which axes of that weight hold which group's channels (by index).

    A layer's input holds the group it reads; its output the group it produces, or for a per-channel layer
    (batch norm, depthwise conv) the group it reads.
    """
    reads = {name: index for index, group in enumerate(groups) for name in group.readers}
    makes = {name: index for index, group in enumerate(groups) for name in group.producers}
    producers = {layer.name for layer in model.layers if isinstance(layer, PRODUCERS)}

    def ties(layer: str, kind: str, rank: int) -> dict[int, int]:
        if kind not in CHANNEL_AXES:
            return {}
        holds = (reads.get(layer), makes.get(layer) if layer in producers else reads.get(layer))
        pairs = zip(CHANNEL_AXES[kind], holds, strict=True)
        return {axis % rank: group for axis, group in pairs if axis is not None and group is not None}

    return ties


def _kind(weight: tf.Variable, layer: keras.layers.Layer) -> str:
    return local_name(weight, layer).rsplit("/", 1)[-1].split(":", 1)[0]


# ---------------------------------------------------------------- the search space and its exact cost


@dataclass(frozen=True)
class SearchSpace:
    """Genomes: a width index (into ``WIDTHS``) per group, then a bit index (into ``BITS``) per layer."""

    groups: tuple[ChannelGroup, ...]
    orders: tuple[np.ndarray, ...]  # each group's channels, most important first
    layers: tuple[str, ...]

    @property
    def cardinalities(self) -> np.ndarray:
        return np.array([len(WIDTHS)] * len(self.groups) + [len(BITS)] * len(self.layers))

    def largest(self) -> np.ndarray:
        return np.array([WIDTHS.index(1.0)] * len(self.groups) + [BITS.index(max(BITS))] * len(self.layers))

    def smallest(self) -> np.ndarray:
        return np.array([WIDTHS.index(min(WIDTHS))] * len(self.groups) + [BITS.index(min(BITS))] * len(self.layers))

    def random(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, self.cardinalities, size=(count, len(self.cardinalities)))

    def widths(self, genome: np.ndarray) -> list[float]:
        return [WIDTHS[index] for index in genome[: len(self.groups)]]

    def kept(self, genome: np.ndarray) -> list[int]:
        """Channels each group keeps."""
        return [kept_count(group, ratio) for group, ratio in zip(self.groups, self.widths(genome), strict=True)]

    def kept_channels(self, genome: np.ndarray) -> dict[int, np.ndarray]:
        """Group index -> the indices of the channels it keeps: its most important ones, in index order."""
        pairs = zip(self.groups, self.orders, self.kept(genome), strict=True)
        return {group.index: np.sort(order[:count]) for group, order, count in pairs}

    def bits(self, genome: np.ndarray) -> dict[str, int]:
        return {layer: BITS[index] for layer, index in zip(self.layers, genome[len(self.groups) :], strict=True)}


class CostModel:
    """Exact BOPs and packed size in bits of a genome's deployed sub-network, without building it.

    Built from the full-width model fake-quantized (its weights are the deployed ones, quantizer ranges
    included): each weight's element count is its shape with tied axes cut to the kept channels, kernels
    at the layer's bits and everything else at 32; each layer's MACs are its kernel's elements times
    its output positions (unchanged by pruning), and its BOPs MACs times its bits squared.
    """

    def __init__(self, full: keras.Model, space: SearchSpace):
        self.space = space
        ties = weight_ties(full, space.groups)
        self.weights = []
        for layer in full.layers:
            for weight in layer.weights:
                kind = _kind(weight, layer)
                shape = tuple(int(size) for size in weight.shape)
                self.weights.append((layer.name, kind in KERNEL_KINDS, shape, ties(layer.name, kind, len(shape))))
        self.positions = {name: output_positions(full.get_layer(name)) for name in space.layers}

    def __call__(self, genome: np.ndarray) -> tuple[int, int]:
        """(BOPs, size in bits) of ``genome``."""
        kept, bits = self.space.kept(genome), self.space.bits(genome)
        bops = size = 0
        for layer, kernel, shape, tied in self.weights:
            elements = math.prod(kept[tied[axis]] if axis in tied else n for axis, n in enumerate(shape))
            width = bits.get(layer, FLOAT_BITS) if kernel else FLOAT_BITS
            size += elements * width
            if kernel and layer in bits:
                bops += elements * self.positions[layer] * width * width
        return bops, size


# ---------------------------------------------------------------- the super-network


class ElasticSupernet:
    """The trained backbone as an elastic, bit-choosing super-network (module docstring, 1 to 4)."""

    def __init__(self, float_model: keras.Model):
        """``float_model`` (trained) is kept as the template that extracted sub-networks are cut from."""
        self.template = float_model
        groups = elastic_groups(float_model)
        orders = importance_orders(float_model, groups)
        self.space = SearchSpace(tuple(groups), tuple(orders), tuple(quantizable_layer_names(float_model)))
        # The conv / dense layers reading a group mask it (a depthwise conv filters it channel by channel).
        linear = {layer.name for layer in float_model.layers if isinstance(layer, PRODUCERS)}
        self.readers = [[name for name in group.readers if name in linear] for group in groups]
        self.model = bit_choice_model(float_model, BITS, ROUND, masked={n for names in self.readers for n in names})
        self.layers = {layer.name: layer for layer in bit_choice_layers(self.model)}
        self.batch_norms = [layer for layer in self.model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        probed = [layer.input for layer in self.batch_norms] + [self.layers[n].input for n in self.space.layers]
        self.probe = keras.Model(self.model.inputs, probed)
        full = quantize_layers(self.template, {name: (max(BITS), max(BITS)) for name in self.space.layers})
        self.cost = CostModel(full, self.space)
        self._recalibrate = tf.function(self._recalibration)
        self._logits = tf.function(lambda x: self.model(x, training=False))

    def settings(self, genome: np.ndarray) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """(a mask per group, a one-hot bit choice per layer) of ``genome``, as the variables take them."""
        kept = self.space.kept_channels(genome)
        masks = tuple(
            np.isin(np.arange(group.channels), kept[group.index]).astype(np.float32) for group in self.space.groups
        )
        choices = tuple(np.eye(len(BITS), dtype=np.float32)[index] for index in genome[len(self.space.groups) :])
        return masks, choices

    def assign(self, masks: Sequence[tf.Tensor], choices: Sequence[tf.Tensor]) -> None:
        for readers, mask in zip(self.readers, masks, strict=True):
            for name in readers:
                self.layers[name].in_mask.assign(mask)
        for name, choice in zip(self.space.layers, choices, strict=True):
            self.layers[name].choice.assign(choice)

    def _recalibration(self, masks: Sequence[tf.Tensor], choices: Sequence[tf.Tensor], samples: tf.Tensor) -> None:
        self.assign(masks, choices)
        for name in self.space.layers:
            for quantizer in self.layers[name].activation_quantizers:  # unset ranges pass their input through
                quantizer.low.assign(0.0)
                quantizer.high.assign(0.0)
        values = self.probe(samples, training=True)
        for layer, value in zip(self.batch_norms, values[: len(self.batch_norms)], strict=True):
            mean, variance = tf.nn.moments(value, axes=list(range(len(value.shape) - 1)))
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        for name, value in zip(self.space.layers, values[len(self.batch_norms) :], strict=True):
            layer = self.layers[name]
            value = value * layer.in_mask if layer.masked else value
            for quantizer in layer.activation_quantizers:
                quantizer.low.assign(tf.minimum(tf.reduce_min(value), 0.0))
                quantizer.high.assign(tf.maximum(tf.reduce_max(value), 0.0))

    def set(self, genome: np.ndarray, samples: np.ndarray) -> None:
        """Set ``genome``'s masks and policy, with its batch-norm statistics and ranges from ``samples``."""
        masks, choices = self.settings(genome)
        self._recalibrate(masks, choices, tf.constant(samples))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The super-network's logits at its current setting, in inference mode."""
        starts = range(0, len(x), EVALUATION_BATCH)
        return np.concatenate([self._logits(x[start : start + EVALUATION_BATCH]).numpy() for start in starts])

    def accuracy(self, genome: np.ndarray, samples: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        """Top-1 of ``genome``'s sub-network on ``(x, y)``, recalibrated on ``samples``."""
        self.set(genome, samples)
        return float(np.mean(self.logits(x).argmax(axis=-1) == y))

    def train(self, context: TrainContext, random_subnets: int, distill: bool, rng: np.random.Generator) -> dict:
        """Sandwich-rule training with the recipe (module docstring, 2); the per-epoch history."""
        weights = self.model.trainable_variables
        steps = math.ceil(len(context.splits.x_train) / context.recipe.batch_size)
        optimizer = context.recipe.make_optimizer(steps)
        classes = context.task.spec.num_classes

        @tf.function
        def gradients(x, targets, masks, choices):  # noqa: ANN001, ANN202 - a traced step
            self.assign(masks, choices)
            with tf.GradientTape() as tape:
                logits = self.model(x, training=True)
                loss = tf.reduce_mean(keras.losses.categorical_crossentropy(targets, logits, from_logits=True))
            return loss, tape.gradient(loss, weights), logits

        largest, smallest = self.space.largest(), self.space.smallest()
        history: dict[str, list[float]] = {"supernet_loss": [], "epoch_seconds": []}
        for _ in range(context.recipe.epochs):
            started, losses = time.perf_counter(), []
            for x, y in training_batches(context):
                targets = tf.one_hot(y, classes)
                total = None
                for index, genome in enumerate([largest, smallest, *self.space.random(rng, random_subnets)]):
                    loss, grads, logits = gradients(x, targets, *self.settings(genome))
                    if index == 0:
                        losses.append(float(loss))
                        targets = tf.stop_gradient(tf.nn.softmax(logits)) if distill else targets
                    total = grads if total is None else [a + b for a, b in zip(total, grads, strict=True)]
                optimizer.apply_gradients(zip(total, weights, strict=True))
            history["supernet_loss"].append(float(np.mean(losses)))
            history["epoch_seconds"].append(time.perf_counter() - started)
        return history

    def extract(self, genome: np.ndarray, samples: np.ndarray) -> tuple[keras.Model, keras.Model]:
        """(the pruned float sub-network, it fake-quantized at ``genome``'s policy), calibrated on ``samples``."""
        self.set(genome, samples)
        copy_weights(self.model, self.template)
        pruned = remove_channels(self.template, self.space.kept_channels(genome))
        return pruned, quantized_copy(pruned, self.space.bits(genome), samples)


# ---------------------------------------------------------------- multi-objective search


def nsga2(
    evaluate: Callable[[np.ndarray], np.ndarray],
    cardinalities: np.ndarray,
    rng: np.random.Generator,
    population: int,
    generations: int,
    seeds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """NSGA-II over integer genomes (gene ``i`` in ``[0, cardinalities[i])``), minimising ``evaluate``'s columns.

    Returns the final population (unique genomes) and its objectives.
    """
    genes = len(cardinalities)
    start = [np.asarray(seeds).reshape(-1, genes)] if seeds is not None else []
    genomes = np.unique(np.vstack([*start, rng.integers(0, cardinalities, (population, genes))]), axis=0)
    genomes = genomes[rng.permutation(len(genomes))[:population]]
    objectives = evaluate(genomes)
    for _ in range(generations):
        rank, crowding = rank_and_crowding(objectives)
        a, b = rng.integers(0, len(genomes), (2, population))
        a_wins = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (crowding[a] >= crowding[b]))
        parents = genomes[np.where(a_wins, a, b)]
        mates = parents[rng.permutation(population)]
        children = np.where(rng.random(parents.shape) < 0.5, parents, mates)
        mutate = rng.random(children.shape) < 1.0 / genes
        children = np.where(mutate, rng.integers(0, cardinalities, children.shape), children)
        genomes = np.unique(np.vstack([genomes, children]), axis=0)
        objectives = evaluate(genomes)
        keep = []
        for front in non_dominated_fronts(objectives):
            room = population - len(keep)
            if room <= 0:
                break
            order = np.argsort(-crowding_distance(objectives[front]), kind="stable")
            keep.extend(np.asarray(front)[order[:room]].tolist())
        genomes, objectives = genomes[keep], objectives[keep]
    return genomes, objectives


def spread_along_front(objectives: np.ndarray, count: int) -> list[int]:
    """``count`` distinct rows spread evenly along the first front (best first objective first), then the next."""
    chosen: list[int] = []
    for front in non_dominated_fronts(objectives):
        ordered = sorted(front, key=lambda row: tuple(objectives[row]))
        room = count - len(chosen)
        if len(ordered) > room:
            ordered = [ordered[i] for i in np.round(np.linspace(0, len(ordered) - 1, room)).astype(int)]
        chosen.extend(ordered)
        if len(chosen) == count:
            break
    return chosen


class RidgePredictor:
    """Ridge regression on the one-hot encoding of genomes: the lightly trained accuracy predictor."""

    def __init__(self, cardinalities: np.ndarray, ridge: float = RIDGE):
        self.offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]])
        self.width, self.ridge = int(np.sum(cardinalities)), ridge

    def encode(self, genomes: np.ndarray) -> np.ndarray:
        genomes = np.atleast_2d(genomes)
        encoded = np.zeros((len(genomes), self.width))
        np.put_along_axis(encoded, genomes + self.offsets, 1.0, axis=1)
        return encoded

    def fit(self, genomes: np.ndarray, targets: np.ndarray) -> "RidgePredictor":
        x, y = self.encode(genomes), np.asarray(targets, dtype=np.float64)
        self.x_mean, self.y_mean = x.mean(axis=0), y.mean()
        centred = x - self.x_mean
        gram = centred.T @ centred + self.ridge * np.eye(self.width)
        self.coefficients = np.linalg.solve(gram, centred.T @ (y - self.y_mean))
        return self

    def predict(self, genomes: np.ndarray) -> np.ndarray:
        return (self.encode(genomes) - self.x_mean) @ self.coefficients + self.y_mean


@dataclass
class SearchResult:
    genomes: np.ndarray  # the chosen genomes, most accurate first
    predicted: np.ndarray  # their predicted top-1
    measured: int  # sub-networks measured


def linas_search(
    measure: Callable[[np.ndarray], float],
    cost: Callable[[np.ndarray], float],
    space: SearchSpace,
    rng: np.random.Generator,
    options: dict[str, Any],
) -> SearchResult:
    """The predictor-guided search of the module docstring (3): measure, fit, NSGA-II, repeat; the front."""
    cache: dict[bytes, float] = {}

    def costs(genomes: np.ndarray) -> np.ndarray:
        return np.array([cache.setdefault(g.tobytes(), cost(g)) for g in genomes], dtype=np.float64)

    budget = max(2, options["measured"])
    initial = np.vstack([space.largest(), space.smallest(), space.random(rng, budget)])
    genomes = _first_unique(initial, max(2, budget // 2))
    scores = [measure(genome) for genome in genomes]
    predictor = RidgePredictor(space.cardinalities)

    def front(seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        predictor.fit(genomes, scores)
        evaluate = lambda g: np.column_stack([-predictor.predict(g), costs(g)])  # noqa: E731
        return nsga2(evaluate, space.cardinalities, rng, options["population"], options["generations"], seeds)

    rounds = max(1, options["iterations"])
    for round_index in range(rounds):
        room = (budget - len(genomes)) // (rounds - round_index)
        if room <= 0:
            break
        population, objectives = front(genomes)
        known = {g.tobytes() for g in genomes}
        fresh = [i for i in range(len(population)) if population[i].tobytes() not in known]
        picked = [fresh[i] for i in spread_along_front(objectives[fresh], min(room, len(fresh)))] if fresh else []
        genomes = np.vstack([genomes, population[picked]])
        scores += [measure(population[i]) for i in picked]
    population, objectives = front(genomes)
    chosen = spread_along_front(objectives, options["points"])
    return SearchResult(population[chosen], -objectives[chosen, 0], len(genomes))


def _first_unique(genomes: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` distinct rows of ``genomes``, in order."""
    seen, rows = set(), []
    for genome in genomes:
        if genome.tobytes() not in seen:
            seen.add(genome.tobytes())
            rows.append(genome)
    return np.array(rows[:count])


# ---------------------------------------------------------------- the method


@register_method(
    "simq-nas",
    suite="quantization",
    kind="elastic",
    paper=Paper(
        "SimQ-NAS: Simultaneous Quantization Policy and Neural Architecture Search",
        2023,
        "https://arxiv.org/abs/2312.13301",
    ),
    summary="elastic-width super-network from the trained backbone with a per-layer {8, 4}-bit policy, sandwich "
    "training; NSGA-II over widths x bits on a ridge accuracy predictor and exact BOPs; the front's points",
    taxonomy=Taxonomy(weight_bits=4, activation_bits=4, structured=True, applied="training", data="labelled"),
    scale="small-faithful",
)
class SimQNAS(QuantizationMethod):
    default_options: ClassVar[dict[str, Any]] = {
        **QuantizationMethod.default_options, "points": 3, "measured": 32, "iterations": 2, "population": 40,
        "generations": 25, "random_subnets": 2, "distill": True, "cost": "bops",
    }  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["cost"] not in COSTS:
            raise ValueError(f"simq-nas cost must be one of {', '.join(COSTS)}; got {self.options['cost']}")
        if int(self.options["points"]) < 1 or int(self.options["population"]) < int(self.options["points"]):
            raise ValueError("simq-nas needs points >= 1 and a population of at least that many")

    def deployable_names(self) -> tuple[str, ...]:
        """The main deployable (the front's most accurate point), then ``pareto-1`` ... along the front."""
        return (MAIN, *(f"pareto-{index}" for index in range(1, int(self.options["points"]))))

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        started = time.perf_counter()
        rng = np.random.default_rng(context.seed)
        samples, calibration = calibration_samples(context, RECALIBRATION_SAMPLES)
        supernet = ElasticSupernet(float_model)
        history = supernet.train(context, int(self.options["random_subnets"]), bool(self.options["distill"]), rng)
        x_val, y_val = context.splits.x_val, context.splits.y_val
        column = COSTS.index(self.options["cost"])
        result = linas_search(
            lambda genome: supernet.accuracy(genome, samples, x_val, y_val),
            lambda genome: supernet.cost(genome)[column],
            supernet.space, rng, self.options,
        )  # fmt: skip
        deployables: dict[str, Deployable] = {}
        for name, (index, genome) in zip(self.deployable_names(), enumerate(result.genomes), strict=True):
            pruned, quantized = supernet.extract(genome, samples)
            names = [",".join(group.producers) for group in supernet.space.groups]
            bops, size = supernet.cost(genome)
            facts = {
                "calibration": {**calibration, "use": "batch-norm statistics and input ranges"},
                "widths": dict(zip(names, supernet.space.widths(genome), strict=True)),
                "channels": dict(zip(names, supernet.space.kept(genome), strict=True)),
                "search": {
                    "pareto_point": index, "predicted_top1": float(np.clip(result.predicted[index], 0.0, 1.0)),
                    "bops": int(bops),
                    "size_bits": int(size), "measured_subnetworks": result.measured, "objective": self.options["cost"],
                },
            }  # fmt: skip
            deployables[name] = deployable(quantized, pruned, samples, facts)
        return Artifact.of(deployables, history=history, train_seconds=time.perf_counter() - started)
