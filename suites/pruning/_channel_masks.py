r"""Channel masks over a model's channel groups: static ones (searched, then removed) and per-input gates.

Both kinds act on the channel groups of :func:`effbench.channels.channel_groups` (channels that are removed
together: a conv's output channels, or every conv tied by a residual ``Add``).

**Static masks** (random search, evolutionary search). A candidate keeps the channels :math:`K_g` of each
group :math:`g`. :class:`ReaderMasks` evaluates it *in place*, without rebuilding the model: it sets to zero
the input weights of every conv / dense layer that reads a removed channel (the reader's kernel slice on that
input channel; for a dense layer after ``Flatten``, every position's slice). The removed channels are then
computed but never used, so the model's output is exactly that of
:func:`effbench.channels.remove_channels` (``tests/test_pruning_dynamic.py`` checks it), which is how the
chosen candidate is deployed, physically smaller.

**Gates** (dynamic methods: FTWT, APTP, FactorLLM). A *site* (:class:`GateSite`) is a channel group made by
one producer (a conv or dense layer) and read, through a linear chain of per-channel layers (batch norm,
activations, a depthwise conv, pooling), by conv / dense readers only; groups tied by a residual sum are not
sites (a mask there would have to cut the whole stage's stream). :func:`insert_gates` rebuilds the model with
a :class:`ChannelGate` at the end of each site's chain, the tensor its readers read:
:math:`y = x \odot m(\cdot)`, a per-input (per-position, for tokens) mask :math:`m \in \{0, 1\}^C` that the
method computes (a predictor, a router, a code). A channel off for an input is then never needed by it: the
producer need not compute it, the chain's depthwise conv need not filter it, the readers need not read it.

**MACs actually computed** (:func:`input_macs`). With :math:`f_s(x) = |m_s(x)| / C_s` the active fraction of
site :math:`s` for input :math:`x` (its mean over positions for per-token masks), every conv / dense layer
:math:`l` of static MACs :math:`M_l` computes

.. math::  M_l(x) = M_l \prod_{s \in S(l)} f_s(x),

:math:`S(l)` being the sites :math:`l` produces, filters (depthwise) or reads: exact, since :math:`M_l` is
:math:`k \cdot C_{in} \cdot C_{out}` times the positions. Layers that count themselves (``effbench_cost``: the
gates' predictors and routers, attention cores) add their MACs as they are. :func:`dynamic_facts` reports the
mean over inputs (batch 1: each input computes its own channels) and the *batch* effect: a dense kernel that
runs a batch at once must compute the union of the batch's masks, so it reports the union density at batch
64 and the MACs per input under those unions. The deployed Keras model itself computes dense-with-masks (its
static MACs): the savings need kernels that skip the masked channels.

Private module (the registry skips names starting with ``_``); shared by ``random-search-sparse``,
``emo-pms``, ``ftwt``, ``aptp-router`` and ``factor-moe``.
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from effbench.channels import PER_CHANNEL, PRODUCERS, ChannelGroup, channel_groups
from effbench.tf import keras, tf

L = keras.layers
# Union densities are reported for this batch size: what a dense kernel computes for a batch of inputs.
UNION_BATCH = 64
# Per-channel layers that do multiply-accumulates (their MACs scale with the active channels).
_FILTERING = (L.DepthwiseConv2D,)


def require_positive_ints(method: Any, *names: str) -> None:
    """Raise ValueError unless each named option of ``method`` is a positive integer."""
    for name in names:
        value = method.options[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"option {name} of '{method.spec.slug}' is {value!r}; expected a positive integer")


# ---------------------------------------------------------------- static masks


def _input_axis(layer: keras.layers.Layer) -> tuple[str, int]:
    """The weight of a reader holding its input channels, and that axis."""
    if isinstance(layer, L.SeparableConv2D):
        return "depthwise_kernel", 2
    if isinstance(layer, L.Dense):
        return "kernel", 0
    return "kernel", -2


class ReaderMasks:
    """Evaluates channel selections in place by zeroing the readers' input weights (module docstring).

    ``keep`` maps a group index (of ``groups``) to the sorted kept channel indices; groups not in it keep all.
    """

    def __init__(self, model: keras.Model, groups: Sequence[ChannelGroup]):
        self.model = model
        self.groups = list(groups)
        # Per group: (variable, axis, positions) of each conv / dense reader.
        self._slots: list[list[tuple[tf.Variable, int, int]]] = []
        for group in self.groups:
            slots = []
            for name in group.readers:
                layer = model.get_layer(name)
                if type(layer) not in PRODUCERS:
                    continue
                weight, axis = _input_axis(layer)
                variable = getattr(layer, weight)
                positions = int(variable.shape[axis]) // group.channels
                slots.append((variable, axis, positions))
            self._slots.append(slots)

    @contextlib.contextmanager
    def applied(self, keep: Mapping[int, Sequence[int]]) -> Iterator[None]:
        """Inside the block, the model computes as if only the ``keep`` channels existed."""
        saved: list[tuple[tf.Variable, np.ndarray]] = []
        try:
            for index, kept in keep.items():
                channels = self.groups[index].channels
                removed = np.setdiff1d(np.arange(channels), np.asarray(kept, dtype=np.int64))
                if removed.size == 0:
                    continue
                for variable, axis, positions in self._slots[index]:
                    value = np.asarray(variable)
                    saved.append((variable, value))
                    rows = (np.arange(positions)[:, None] * channels + removed[None, :]).reshape(-1)
                    zeroed = value.copy()
                    index_tuple = [slice(None)] * value.ndim
                    index_tuple[axis] = rows
                    zeroed[tuple(index_tuple)] = 0.0
                    variable.assign(zeroed)
            yield
        finally:
            for variable, value in reversed(saved):
                variable.assign(value)


def compiled_logits(model: keras.Model, batch: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> logits`` in inference mode, traced once: weights assigned later (masks) are read, not retraced."""
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def logits(x: np.ndarray) -> np.ndarray:
        return np.concatenate([forward(tf.constant(x[i : i + batch])).numpy() for i in range(0, len(x), batch)])

    return logits


def keep_facts(model: keras.Model, groups: Sequence[ChannelGroup], keep: Mapping[int, Sequence[int]]) -> dict:
    """The per-producer channel sparsity (``sparsity_by_layer``) and kept channels per group of a selection."""
    by_layer, kept = {}, {}
    for index, group in enumerate(groups):
        count = len(keep.get(index, range(group.channels)))
        kept[str(index)] = count
        for producer in group.producers:
            by_layer[producer] = round(1.0 - count / group.channels, 6)
    total = sum(g.channels for g in groups)
    channel_sparsity = 1.0 - sum(kept.values()) / total if total else 0.0
    return {"sparsity_by_layer": by_layer, "kept_channels": kept, "channel_sparsity": round(channel_sparsity, 6)}


# ---------------------------------------------------------------- gate sites


@dataclass(frozen=True)
class GateSite:
    """A channel group a gate can mask per input: made by ``producer``, gated after ``tail``, read by ``readers``.

    ``chain`` holds the per-channel layers with MACs (a depthwise conv) between the producer and the gate.
    """

    group: int
    producer: str
    tail: str
    readers: tuple[str, ...]
    chain: tuple[str, ...]
    channels: int


def _inbound_layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    """The single layer feeding ``name`` in ``model``'s graph (None where it has several inputs)."""
    in_graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    node = next(n for n in model.get_layer(name).inbound_nodes if id(n) in in_graph)
    inbound = tf.nest.flatten(node.inbound_layers)
    return inbound[0] if len(inbound) == 1 else None


def gate_sites(model: keras.Model) -> list[GateSite]:
    """The groups of ``model`` with one producer and a linear per-channel chain to conv / dense readers."""
    sites = []
    for index, group in enumerate(channel_groups(model)):
        if len(group.producers) != 1:
            continue
        readers = tuple(name for name in group.readers if type(model.get_layer(name)) in PRODUCERS)
        feeding = {getattr(_inbound_layer(model, name), "name", None) for name in readers}
        if not readers or len(feeding) != 1 or None in feeding:
            continue
        (tail,) = feeding
        chain: list[str] = []
        name = tail
        while name is not None and name != group.producers[0] and type(model.get_layer(name)) in PER_CHANNEL:
            chain.append(name)
            name = getattr(_inbound_layer(model, name), "name", None)
        # The chain must lead back to the producer, and nothing but it and the readers may hold the channels.
        if name != group.producers[0] or set(group.readers) != set(readers) | set(chain):
            continue
        filtering = tuple(n for n in reversed(chain) if isinstance(model.get_layer(n), _FILTERING))
        sites.append(GateSite(index, group.producers[0], tail, readers, filtering, group.channels))
    return sites


# A gate factory: (site index, site, the tail's output, the producer's input, the model's inputs) -> gated tensor.
GateFactory = Callable[[int, GateSite, Any, Any, list], Any]


def insert_gates(model: keras.Model, sites: Sequence[GateSite], gate: GateFactory) -> keras.Model:
    """A copy of ``model`` (fresh layers of the same names and weights) with ``gate(...)`` after each site's tail.

    The graph is replayed node by node, deepest first; ``gate`` returns the tensor that replaces the tail's
    output for every later layer (a :class:`ChannelGate`'s output). The producer's input it is given is the
    replayed one, so a predictor reading it sees the previous site's gated output, as the network computes.
    """
    tails = {site.tail: (index, site) for index, site in enumerate(sites)}
    producers = {site.producer for site in sites}
    replayed: dict[int, Any] = {}
    inputs = []
    for tensor in model.inputs:
        fresh = keras.Input(batch_shape=tuple(tensor.shape), dtype=tensor.dtype, name=tensor._keras_history.layer.name)
        replayed[id(tensor)] = fresh
        inputs.append(fresh)

    def mapped(value: Any) -> Any:
        return replayed[id(value)] if hasattr(value, "_keras_history") else value

    sources: dict[str, Any] = {}
    copies: dict[str, keras.layers.Layer] = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = node.layer
            args = tf.nest.map_structure(mapped, list(node.call_args))
            kwargs = tf.nest.map_structure(mapped, dict(node.call_kwargs))
            if layer.name in producers:
                sources[layer.name] = tf.nest.flatten(args)[0]
            copies[layer.name] = type(layer).from_config(layer.get_config())
            outputs = copies[layer.name](*args, **kwargs)
            if layer.name in tails:
                index, site = tails[layer.name]
                outputs = gate(index, site, outputs, sources[site.producer], inputs)
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs), strict=True):
                replayed[id(old)] = new
    outputs = [replayed[id(tensor)] for tensor in model.outputs]
    rebuilt = keras.Model(
        inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0], name=model.name
    )
    for name, copy in copies.items():
        copy.set_weights(model.get_layer(name).get_weights())
    return rebuilt


def copy_weights(source: keras.Model, target: keras.Model) -> keras.Model:
    """``target`` with each of its layers' weights taken from ``source``'s layer of the same name."""
    for layer in target.layers:
        layer.set_weights(source.get_layer(layer.name).get_weights())
    return target


def broadcast_mask(mask: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """A (batch, C) mask shaped to multiply (batch, ..., C) features; a per-position mask as it is."""
    if mask.shape.rank == features.shape.rank:
        return mask
    return tf.reshape(mask, [-1] + [1] * (features.shape.rank - 2) + [features.shape[-1]])


class ChannelGate(keras.layers.Layer, metaclass=abc.ABCMeta):
    r"""Base of the gates: :math:`y = x \odot m`, with the {0, 1} mask :math:`m` of :meth:`channel_mask`.

    Called on ``[features, ...]`` (what else a subclass reads: the producer's input, a route); a subclass
    implements :meth:`channel_mask` (of shape (batch, C), or (batch, positions..., C) per position) and
    :meth:`mask_cost`, the MACs and element-wise operations per example of computing it. ``effbench_cost``
    adds the multiply, one per feature element.
    """

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        features = inputs[0]
        mask = tf.cast(self.channel_mask(inputs, training=training), features.dtype)
        return features * broadcast_mask(mask, features)

    @abc.abstractmethod
    def channel_mask(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """The {0, 1} mask of the channels kept for each example."""

    @abc.abstractmethod
    def mask_cost(self, input_shapes: list[tuple[int, ...]]) -> tuple[int, int]:
        """(MACs, element-wise operations) per example of computing the mask."""

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def effbench_cost(self, input_shapes: list[tuple[int, ...]], output_shapes: list[tuple[int, ...]]):
        macs, operations = self.mask_cost(input_shapes)
        return macs, operations + math.prod(output_shapes[0][1:])


def gate_masks(model: keras.Model, names: Sequence[str], x: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    """Each named gate's {0, 1} mask (bool) on every example of ``x``, as the deployed model computes it."""
    gates = [model.get_layer(name) for name in names]
    probe = keras.Model(model.inputs, [gate.input for gate in gates])

    @tf.function(reduce_retracing=True)
    def masks(chunk: tf.Tensor) -> list[tf.Tensor]:
        inputs = probe(chunk, training=False)
        inputs = inputs if len(gates) > 1 else [inputs]
        return [gate.channel_mask(held, training=False) > 0.5 for gate, held in zip(gates, inputs, strict=True)]

    chunks = [masks(tf.constant(x[i : i + batch])) for i in range(0, len(x), batch)]
    return [np.concatenate([chunk[index].numpy() for chunk in chunks]) for index in range(len(gates))]


# ---------------------------------------------------------------- MACs


def _node_shapes(model: keras.Model, layer: keras.layers.Layer) -> tuple[list[tuple], list[tuple]]:
    in_graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    node = next(n for n in layer.inbound_nodes if id(n) in in_graph)
    shapes = [tuple(t.shape) for t in tf.nest.flatten(node.input_tensors)]
    return shapes, [tuple(t.shape) for t in tf.nest.flatten(node.output_tensors)]


def linear_macs(model: keras.Model) -> dict[str, int]:
    """Layer name -> MACs per example of every layer that multiply-accumulates (the complexity track's count)."""
    macs = {}
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        inputs, outputs = _node_shapes(model, layer)
        spatial = math.prod(outputs[0][1:-1])
        if hasattr(layer, "effbench_cost"):
            macs[layer.name] = int(layer.effbench_cost(inputs, outputs)[0])
        elif isinstance(layer, L.SeparableConv2D):
            kernels = int(np.prod(layer.depthwise_kernel.shape)) + int(np.prod(layer.pointwise_kernel.shape))
            macs[layer.name] = kernels * spatial
        elif isinstance(layer, L.DepthwiseConv2D):
            macs[layer.name] = int(np.prod(layer.depthwise_kernel.shape)) * spatial
        elif isinstance(layer, (L.Conv1D, L.Conv2D, L.Dense)):
            macs[layer.name] = int(np.prod(layer.kernel.shape)) * spatial
        elif isinstance(layer, (L.EinsumDense, L.MultiHeadAttention, L.Conv3D, L.Conv1DTranspose, L.Conv2DTranspose)):
            raise ValueError(f"layer '{layer.name}' ({type(layer).__name__}): its MACs are not counted here")
    return macs


@dataclass(frozen=True)
class MacTerm:
    """One layer's static MACs and the sites whose active fractions scale them."""

    layer: str
    macs: int
    sites: tuple[int, ...]


def mac_terms(model: keras.Model, sites: Sequence[GateSite]) -> list[MacTerm]:
    """Every MAC-counting layer with the sites it produces, filters or reads (module docstring)."""
    terms = []
    for name, macs in linear_macs(model).items():
        related = tuple(
            index for index, site in enumerate(sites)
            if name == site.producer or name in site.chain or name in site.readers
        )  # fmt: skip
        terms.append(MacTerm(name, macs, related))
    return terms


def input_macs(terms: Sequence[MacTerm], fractions: np.ndarray) -> np.ndarray:
    """MACs per input given each input's active fraction per site, ``fractions`` of shape (inputs, sites)."""
    total = np.zeros(len(fractions))
    for term in terms:
        scale = np.ones(len(fractions))
        for site in term.sites:
            scale = scale * fractions[:, site]
        total += term.macs * scale
    return total


def active_fractions(masks: Sequence[np.ndarray]) -> np.ndarray:
    """(inputs, sites): each input's fraction of active channels per site, averaged over positions."""
    return np.stack([mask.reshape(len(mask), -1).mean(axis=1) for mask in masks], axis=1)


def union_fractions(masks: Sequence[np.ndarray], batch: int = UNION_BATCH) -> np.ndarray:
    """(batches, sites): the fraction of each site's channels on for at least one input (or position) of a batch.

    Consecutive full batches of ``batch`` inputs; all inputs as one batch when there are fewer.
    """
    count = len(masks[0])
    starts = range(0, count - batch + 1, batch) if count >= batch else [0]
    size = batch if count >= batch else count
    return np.array([[m[s : s + size].reshape(-1, m.shape[-1]).any(axis=0).mean() for m in masks] for s in starts])


def dynamic_facts(
    model: keras.Model, sites: Sequence[GateSite], masks: Sequence[np.ndarray], measured_on: str
) -> dict[str, Any]:
    """The MACs the masks let each input compute, against the static count, at batch 1 and batch 64."""
    terms = mac_terms(model, sites)
    static = sum(term.macs for term in terms)
    fractions = active_fractions(masks)
    per_input = input_macs(terms, fractions)
    unions = union_fractions(masks)
    channels = np.array([site.channels for site in sites], dtype=np.float64)
    producers = [site.producer for site in sites]
    return {
        "macs_static": int(static),
        "macs_per_input_mean": round(float(per_input.mean()), 1),
        "macs_per_input_min": round(float(per_input.min()), 1),
        "macs_per_input_max": round(float(per_input.max()), 1),
        "macs_per_input_ratio": round(float(per_input.mean() / static), 6),
        "flops_static": int(2 * static),
        "flops_per_input_mean": round(float(2 * per_input.mean()), 1),
        "active_fraction_by_site": dict(zip(producers, np.round(fractions.mean(axis=0), 6).tolist(), strict=True)),
        "union_batch": min(UNION_BATCH, len(masks[0])),
        "union_density": round(float((unions * channels).sum(axis=1).mean() / channels.sum()), 6),
        "union_density_by_site": dict(zip(producers, np.round(unions.mean(axis=0), 6).tolist(), strict=True)),
        "macs_per_input_batch_union": round(float(input_macs(terms, unions).mean()), 1),
        "measured_on": measured_on,
        "how": "MACs per input counted from each input's gate masks: every conv / dense layer's static MACs "
        "times the active fraction of each gated channel group it produces, filters or reads; layers that count "
        "themselves (predictors, routers) as they are. FLOPs = 2 x MACs of those layers. Batch effect: a dense "
        "kernel running a batch computes the union of its inputs' masks (union density at the union batch).",
        "execution": "the deployed Keras model computes dense-with-masks (its static MACs); the per-input savings "
        "need a runtime that skips masked channels",
    }
