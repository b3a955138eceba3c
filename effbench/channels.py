"""Channel groups of a Keras graph, and their physical removal: structured pruning that really shrinks a model.

Removing output channel ``c`` of a conv is not a local edit: every layer that reads the conv's output loses its
input channel ``c`` too (the next conv's kernel, a batch norm's statistics, a depthwise conv's filter), and
where a residual ``Add`` joins several convs' outputs, they must lose the same channels. So channels are
pruned per *group*. :func:`channel_groups` finds them from the graph, in one pass over the model's layers:

- a conv / dense layer (``Conv1D``/``Conv2D`` with one group, ``SeparableConv2D``, ``Dense``) *produces* a new
  channel space: its output channels;
- layers that act per channel pass the space through (batch norm, activations, dropout, pooling and global
  pooling, padding, cropping, upsampling, a depthwise conv with multiplier 1, PReLU);
- element-wise merges (``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``, ``Minimum``) join their
  inputs' spaces into one (union-find): that is a residual group;
- ``Flatten`` maps a space to ``positions x channels`` features, which the next dense layer reads;
- anything else (concatenation, reshape, attention, normalisation across channels, a layer of unknown type)
  freezes the spaces it reads, as do the model's inputs and outputs (the classes).

A group is a space with at least one producer that nothing froze. :func:`remove_channels` rebuilds the model
with the kept channels of each group only (``filters`` / ``units`` reduced), through :func:`effbench.graph.rewrite`
with a weight transfer that slices every weight along the axes that hold the group's channels: the copy
computes exactly what the original computes once the conv / dense layers that read a group ignore its removed
channels (their weights on those input channels set to zero), and its params and MACs are those of the smaller
network (tested on the architectures suite's backbones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from effbench.graph import local_name, rewrite
from effbench.tf import keras, tf

L = keras.layers
PRODUCERS = (L.Conv1D, L.Conv2D, L.SeparableConv2D, L.Dense)
PER_CHANNEL = (
    L.BatchNormalization, L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Softmax, L.Dropout, L.SpatialDropout2D,
    L.GaussianNoise, L.GaussianDropout, L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.Cropping1D, L.Cropping2D, L.UpSampling1D, L.UpSampling2D, L.PReLU,
    L.DepthwiseConv2D,
)  # fmt: skip
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together: ``producers`` make them, ``readers`` read them."""

    index: int
    producers: tuple[str, ...]
    readers: tuple[str, ...]
    channels: int


@dataclass
class _Space:
    channels: int
    producers: list[str] = field(default_factory=list)
    frozen: bool = False
    parent: int | None = None


@dataclass(frozen=True)
class _Flat:
    """Features of a flattened ``(positions..., channels)`` tensor: feature ``p * channels + c``."""

    space: int
    positions: int


class _Spaces:
    """Union-find over channel spaces, and which space (or flattened space) each tensor holds."""

    def __init__(self) -> None:
        self.spaces: list[_Space] = []
        self.of_tensor: dict[int, int | _Flat] = {}

    def new(self, channels: int, producer: str | None = None, frozen: bool = False) -> int:
        self.spaces.append(_Space(channels, [producer] if producer else [], frozen))
        return len(self.spaces) - 1

    def root(self, index: int) -> int:
        while self.spaces[index].parent is not None:
            index = self.spaces[index].parent
        return index

    def join(self, indices: Sequence[int]) -> int:
        roots = list(dict.fromkeys(self.root(i) for i in indices))
        first = self.spaces[roots[0]]
        for other in roots[1:]:
            space = self.spaces[other]
            space.parent = roots[0]
            first.producers += space.producers
            first.frozen = first.frozen or space.frozen or space.channels != first.channels
        return roots[0]

    def freeze(self, held: int | _Flat) -> None:
        self.spaces[self.root(held.space if isinstance(held, _Flat) else held)].frozen = True


def _channels(tensor) -> int:
    return int(tensor.shape[-1])


def _flat_size(tensor) -> int:
    return int(np.prod(tensor.shape[1:]))


class _Graph:
    """The model's channel spaces: per layer, the space its (first) input holds and the one its output holds."""

    def __init__(self, model: keras.Model):
        if not getattr(model, "_is_graph_network", False):
            raise ValueError("channel groups need a functional or Sequential Keras model (a layer graph)")
        self.spaces = _Spaces()
        self.inputs: dict[str, int | _Flat] = {}
        self.outputs: dict[str, int | _Flat] = {}
        for tensor in model.inputs:
            self.spaces.of_tensor[id(tensor)] = self.spaces.new(_channels(tensor), frozen=True)
        in_graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
        for layer in model.layers:
            nodes = [node for node in layer.inbound_nodes if id(node) in in_graph and not node.is_input]
            if len(nodes) > 1:
                raise ValueError(f"layer '{layer.name}' is called {len(nodes)} times; shared layers are not supported")
            if nodes:
                self._visit(layer, nodes[0])
        for tensor in model.outputs:
            self.spaces.freeze(self.spaces.of_tensor[id(tensor)])

    def _visit(self, layer: keras.layers.Layer, node) -> None:
        inputs = [self.spaces.of_tensor[id(t)] for t in tf.nest.flatten(node.keras_inputs)]
        outputs = tf.nest.flatten(node.outputs)
        self.inputs[layer.name] = inputs[0]
        kind = type(layer)
        if kind in PRODUCERS and getattr(layer, "groups", 1) == 1:
            out: int | _Flat = self.spaces.new(_channels(outputs[0]), producer=layer.name)
            if isinstance(inputs[0], _Flat) and kind is not L.Dense:
                self.spaces.freeze(inputs[0])
        elif kind in PER_CHANNEL and not (kind is L.DepthwiseConv2D and layer.depth_multiplier != 1) and not (
            isinstance(inputs[0], _Flat)
        ):
            out = inputs[0]
        elif kind in MERGES and not any(isinstance(held, _Flat) for held in inputs):
            out = self.spaces.join(inputs)
        elif kind is L.Flatten and not isinstance(inputs[0], _Flat):
            out = _Flat(inputs[0], _flat_size(outputs[0]) // self.spaces.spaces[self.spaces.root(inputs[0])].channels)
        else:
            for held in inputs:
                self.spaces.freeze(held)
            out = self.spaces.new(_channels(outputs[0]), frozen=True)
        for tensor in outputs:
            self.spaces.of_tensor[id(tensor)] = out
        self.outputs[layer.name] = out

    def root(self, held: int | _Flat) -> int:
        return self.spaces.root(held.space if isinstance(held, _Flat) else held)

    def groups(self) -> list[ChannelGroup]:
        roots = sorted({self.spaces.root(i) for i in range(len(self.spaces.spaces))})
        groups = []
        for root in roots:
            space = self.spaces.spaces[root]
            if space.frozen or not space.producers:
                continue
            readers = tuple(name for name, held in self.inputs.items() if self.root(held) == root)
            groups.append(ChannelGroup(len(groups), tuple(space.producers), readers, space.channels))
        return groups


def channel_groups(model: keras.Model) -> list[ChannelGroup]:
    """The model's prunable channel groups (module docstring), in the order of their first producer."""
    return _Graph(model).groups()


def _kept(held: int | _Flat, graph: _Graph, keep_by_root: Mapping[int, np.ndarray]) -> np.ndarray | None:
    """Indices kept along an axis holding ``held`` (None: all of them)."""
    kept = keep_by_root.get(graph.root(held))
    if kept is None or not isinstance(held, _Flat):
        return kept
    channels = graph.spaces.spaces[graph.root(held)].channels
    return (np.arange(held.positions)[:, None] * channels + kept[None, :]).reshape(-1)


# Per kind of weight: the axes holding its layer's (input channels, output channels), None where it has none; a
# dense kernel (in, out) and a conv kernel (..., in, out) alike.
CHANNEL_AXES = {
    "kernel": (-2, -1), "depthwise_kernel": (2, 2), "pointwise_kernel": (2, 3), "bias": (None, 0),
    "gamma": (0, 0), "beta": (0, 0), "moving_mean": (0, 0), "moving_variance": (0, 0), "alpha": (-1, -1),
}  # fmt: skip


def remove_channels(model: keras.Model, keep: Mapping[int, Sequence[int]]) -> keras.Model:
    """A copy of ``model`` with only the ``keep[g]`` channels (sorted indices) of each group ``g`` left.

    Groups are :func:`channel_groups`'s indices; a group not in ``keep`` keeps every channel. Raises
    ``ValueError`` for an unknown group, an empty or out-of-range selection.
    """
    graph = _Graph(model)
    groups = graph.groups()
    keep_by_root: dict[int, np.ndarray] = {}
    for index, kept in keep.items():
        if not 0 <= index < len(groups):
            raise ValueError(f"model '{model.name}' has {len(groups)} channel groups; there is no group {index}")
        kept = np.unique(np.asarray(kept, dtype=np.int64))
        size = groups[index].channels
        if kept.size == 0 or kept[0] < 0 or kept[-1] >= size:
            raise ValueError(f"group {index} has {size} channels; keep 1 to {size} of indices 0..{size - 1}")
        keep_by_root[graph.root(graph.outputs[groups[index].producers[0]])] = kept

    def rule(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if type(layer) not in PRODUCERS or layer.name not in graph.outputs:
            return None
        kept = _kept(graph.outputs[layer.name], graph, keep_by_root)
        if kept is None:
            return None
        config = layer.get_config()
        config["units" if type(layer) is L.Dense else "filters"] = int(kept.size)
        return type(layer).from_config(config)

    def transfer(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
        kept_in = _kept(graph.inputs[source.name], graph, keep_by_root) if source.name in graph.inputs else None
        kept_out = _kept(graph.outputs[source.name], graph, keep_by_root) if source.name in graph.outputs else None
        targets = {local_name(w, target): w for w in target.weights}
        for weight in source.weights:
            name = local_name(weight, source)
            value = np.asarray(weight)
            in_axis, out_axis = CHANNEL_AXES.get(name.split(":")[0], (None, None))
            if in_axis is not None and kept_in is not None:
                value = np.take(value, kept_in, axis=in_axis)
            if out_axis is not None and kept_out is not None and out_axis != in_axis:
                value = np.take(value, kept_out, axis=out_axis)
            targets[name].assign(value)

    return rewrite(model, rule, transfer)
