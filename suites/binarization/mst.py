r"""MST-compression: compute each output channel of a binary layer from another one, along a minimum spanning tree.

A binary layer's output channel :math:`c` at one output position is :math:`y_c = \sum_{i=1}^{K} a_i s_{c,i}`
over the :math:`K` (= kh·kw·C_in, or d_in for a dense layer) input bits :math:`a_i \in \{\pm 1\}` and
its sign kernel :math:`s_c \in \{\pm 1\}^K`: :math:`K` XNOR-popcount operations. Given an already
computed channel :math:`p`, only the :math:`d(p, c) = |\{i : s_{c,i} \ne s_{p,i}\}|` differing bits
change the sum::

    y_c = y_p + 2 * sum_{i : s_c,i != s_p,i} a_i s_c,i                         (exact, integer arithmetic)

So, with the complete graph over the :math:`C_{out}` output channels weighted by the Hamming distances
of their sign kernels, its minimum spanning tree (Prim's algorithm) orders the computation: the root
channel costs :math:`K` binary operations and every other channel :math:`d(\text{parent}, c)`, so per
output position the layer costs :math:`K + \sum_{edges} d` binary operations instead of
:math:`K \cdot C_{out}`, plus one add per non-root channel (the parent's value). Every MST has the
same total distance; the tree is rooted at its centre, which minimises its depth (the length of the
longest chain of dependent channels, the latency of a parallel implementation) for that tree.

The method starts from a trained BNN, its upstream of role ``trained``: the ``bnn`` operator (sign,
clipped STE, the task's default backbone or ``backbone``, the task's recipe), trained once by the runner
and shared with a ``bnn`` run of the same task and seed. It does not train: it swaps every binary
``QuantConv2D`` / ``QuantDense`` for :class:`MSTQuantConv2D` / :class:`MSTQuantDense`: the same layer
(same config, weights and outputs: the compressed model's accuracy is the BNN's by construction) that
also declares its cost to the complexity track
(``effbench_cost``): MACs :math:`= (K + \sum_{edges} d) \cdot S_{out}` binary multiply-accumulates,
:math:`S_{out}` the output positions, at 1 bit x 1 bit, so its BOPs are those MACs; elementwise ops
:math:`= (C_{out} - 1) S_{out}` adds of the parents' values, plus the bias adds and the activation, as
for any conv. The plan is recomputed from the kernel whenever the layer is counted, so a reloaded model
counts the same. :meth:`_MSTCost.mst_plan` gives a layer's tree; :func:`tree_forward` evaluates a layer
along its tree (the reference the tests hold against the plain product).

Deviations and scale: the paper also trains with a learning algorithm that shrinks the total MST
distance (and the depth); its details are not in the abstract and it is not implemented: the BNN is
trained as usual and compressed after training, so the reduction measured here is what MST
reordering alone gives an ordinary BNN (a lower bound on the paper's). Among the MSTs of equal weight
the paper picks one of minimum depth; here Prim's tree (ties to the lowest channel index) is rooted at
its centre, which minimises the depth of that tree only. The latency gain needs a custom XNOR kernel
(the paper's accelerator); the deployed Keras / LCE model computes every channel in full, so the edge
and latency tracks measure the BNN. Depthwise binary layers are not compressed (each channel sees its
own input); grouped convolutions are not supported.

Paper: Vo, Tran, Bae, Kim & Hong, "MST-compression: Compressing and Accelerating Binary Neural Networks
with Minimum Spanning Tree", ICCV 2023 (https://arxiv.org/abs/2308.13735).

Options: ``backbone`` (a method reference of the architecture to binarize; the task's default if unset).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.graph import rewrite
from effbench.method import Artifact, Method, MethodRef
from effbench.registry import Paper, TaskSpec, Taxonomy, register_method
from effbench.training import TrainContext


@dataclass(frozen=True)
class MSTPlan:
    """A layer's computation order: ``parent[c]`` (-1 for the root) and ``distance[c]`` (K for the root)."""

    parent: tuple[int, ...]
    distance: tuple[int, ...]
    root: int
    depth: int
    fan_in: int

    @property
    def channels(self) -> int:
        return len(self.parent)

    @property
    def binary_ops(self) -> int:
        """Binary operations per output position along the tree: K + the sum of the edge distances."""
        return sum(self.distance)

    @property
    def dense_binary_ops(self) -> int:
        """Binary operations per output position computed channel by channel: K x C_out."""
        return self.fan_in * self.channels

    def order(self) -> list[int]:
        """Channels parents first (breadth-first from the root)."""
        children: dict[int, list[int]] = {}
        for child, parent in enumerate(self.parent):
            children.setdefault(parent, []).append(child)
        order, queue = [], deque([self.root])
        while queue:
            channel = queue.popleft()
            order.append(channel)
            queue.extend(children.get(channel, []))
        return order


def channel_signs(kernel: np.ndarray) -> np.ndarray:
    """(C_out, K) int8 matrix of +-1: row c is output channel c's kernel (last axis of ``kernel``), sign(0) = +1."""
    kernel = np.asarray(kernel)
    return np.where(kernel.reshape(-1, kernel.shape[-1]).T >= 0, 1, -1).astype(np.int8)


def hamming_distances(signs: np.ndarray) -> np.ndarray:
    """(C, C) numbers of differing bits between the rows of a +-1 matrix."""
    signs = signs.astype(np.int64)
    return (signs.shape[1] - signs @ signs.T) // 2


def _tree_centre(neighbours: list[list[int]]) -> tuple[int, int]:
    """(centre, depth from it) of a tree given as adjacency lists: the middle of a longest path."""

    def farthest(start: int) -> tuple[int, list[int]]:
        previous = {start: -1}
        queue, last = deque([start]), start
        while queue:
            last = queue.popleft()
            for other in neighbours[last]:
                if other not in previous:
                    previous[other] = last
                    queue.append(other)
        path = [last]
        while previous[path[-1]] != -1:
            path.append(previous[path[-1]])
        return last, path

    end, _ = farthest(0)
    _, path = farthest(end)
    return path[len(path) // 2], len(path) // 2


def minimum_spanning_tree(signs: np.ndarray) -> MSTPlan:
    """Prim's MST over the rows of a (C, K) +-1 matrix under the Hamming distance, rooted at its centre."""
    channels, fan_in = signs.shape
    distances = hamming_distances(signs)
    in_tree = np.zeros(channels, bool)
    in_tree[0] = True
    best, nearest = distances[0].copy(), np.zeros(channels, np.int64)
    neighbours: list[list[int]] = [[] for _ in range(channels)]
    for _ in range(channels - 1):
        candidate = int(np.argmin(np.where(in_tree, np.iinfo(np.int64).max, best)))
        neighbours[candidate].append(int(nearest[candidate]))
        neighbours[int(nearest[candidate])].append(candidate)
        in_tree[candidate] = True
        closer = ~in_tree & (distances[candidate] < best)
        best[closer], nearest[closer] = distances[candidate][closer], candidate
    root, depth = _tree_centre(neighbours)
    parent, distance = [-1] * channels, [fan_in] * channels
    queue, seen = deque([root]), {root}
    while queue:
        channel = queue.popleft()
        for other in neighbours[channel]:
            if other not in seen:
                seen.add(other)
                parent[other], distance[other] = channel, int(distances[channel, other])
                queue.append(other)
    return MSTPlan(tuple(parent), tuple(distance), root, depth, fan_in)


def tree_forward(inputs: np.ndarray, signs: np.ndarray, plan: MSTPlan) -> tuple[np.ndarray, int]:
    """(outputs, binary ops per row): +-1 ``inputs`` (n, K) times ``signs`` (C, K) computed along ``plan``.

    The root channel is a full K-term sum; every other channel is its parent's value plus twice the sum
    over the bits where the two kernels differ. Equals ``inputs @ signs.T`` exactly.
    """
    inputs, signs = inputs.astype(np.int64), signs.astype(np.int64)
    outputs = np.zeros((len(inputs), len(signs)), np.int64)
    operations = 0
    for channel in plan.order():
        parent = plan.parent[channel]
        if parent < 0:
            outputs[:, channel] = inputs @ signs[channel]
            operations += signs.shape[1]
            continue
        differ = np.flatnonzero(signs[channel] != signs[parent])
        outputs[:, channel] = outputs[:, parent] + 2 * inputs[:, differ] @ signs[channel, differ]
        operations += differ.size
    return outputs, operations


class _MSTCost:
    """Mixin for a binary larq layer: counts its operations along the MST of its output channels."""

    def mst_plan(self) -> MSTPlan:
        if getattr(self, "groups", 1) != 1:
            raise ValueError(f"layer '{self.name}': MST-compression of grouped convolutions is not supported")
        binary_kernel = (
            self.kernel_quantizer(tf.convert_to_tensor(self.kernel)) if self.kernel_quantizer else self.kernel
        )
        return minimum_spanning_tree(channel_signs(np.asarray(binary_kernel)))

    def effbench_cost(self, input_shapes: list[tuple], output_shapes: list[tuple]) -> tuple[int, int]:
        """(MACs, elementwise ops) per example: (K + sum d) binary MACs and (C_out - 1) adds per position."""
        output = output_shapes[0]
        if getattr(self, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer '{self.name}': MST-compression counts channels-last layers only")
        positions, channels = math.prod(output[1:-1]), output[-1]
        plan = self.mst_plan()
        per_element = int(self.use_bias) + (keras.activations.serialize(self.activation) != "linear")
        return plan.binary_ops * positions, (channels - 1) * positions + per_element * positions * channels


@larq.utils.register_keras_custom_object
class MSTQuantConv2D(_MSTCost, larq.layers.QuantConv2D):
    """``larq.layers.QuantConv2D`` whose cost is counted along its channel MST (module docstring)."""


@larq.utils.register_keras_custom_object
class MSTQuantDense(_MSTCost, larq.layers.QuantDense):
    """``larq.layers.QuantDense`` whose cost is counted along its channel MST (module docstring)."""


MST_COUNTERPARTS: dict[type, type] = {larq.layers.QuantConv2D: MSTQuantConv2D, larq.layers.QuantDense: MSTQuantDense}


def mst_compress(model: keras.Model) -> keras.Model:
    """A copy of a functional BNN with its binary conv / dense layers swapped for their MST-counted twins.

    Same layer names, configs and weights: the copy computes exactly what ``model`` computes.
    """

    def rule(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        counterpart = MST_COUNTERPARTS.get(type(layer))
        return counterpart.from_config(layer.get_config()) if counterpart else None

    return rewrite(model, rule)


def mst_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, _MSTCost)]


@register_method(
    "mst",
    suite="binarization",
    kind="compression",
    paper=Paper(
        "MST-compression: Compressing and Accelerating Binary Neural Networks with Minimum Spanning Tree",
        2023,
        "https://arxiv.org/abs/2308.13735",
    ),
    summary="a trained BNN whose output channels are computed from their MST parents: K + sum of Hamming "
    "distances binary ops per position instead of K x C_out",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class MSTCompression(Method):
    default_options: ClassVar[dict[str, Any]] = {"backbone": None}
    # The compressed BNN keeps its binary layers: like the operators, it deploys as an LCE flatbuffer.
    deployment: ClassVar[str | None] = "lce"

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        """The trained BNN: the ``bnn`` operator on the same backbone, trained once by the runner."""
        backbone = self.options["backbone"]
        return {"trained": MethodRef("bnn", (("backbone", backbone),) if backbone else ())}

    def run(self, context: TrainContext) -> Artifact:
        started = time.perf_counter()
        model = mst_compress(context.upstream["trained"].model)
        return Artifact(model, train_seconds=time.perf_counter() - started)

    def fp32_twin(self, task_default_backbone: str) -> str:
        return self.options["backbone"] or task_default_backbone
