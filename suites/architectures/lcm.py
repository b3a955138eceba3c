r"""Learnable commutative monoid (LCM) set classifier, small-faithful: a learned binary operator reduces the set
as a balanced binary tree of depth ceil(log2 n) (``lcm``).

Mechanism. The input's first axis lists the elements of a set :math:`\{x_1, \dots, x_n\}`, the rest is one
element's features (``digit-sets``: n = 3 digits of 64 pixels). With :math:`H` = option ``units``::

    e_i = phi(x_i)                        phi: `phi_layers` x (Dense(H), ReLU), the same weights for every element
    a (+) b = 1/2 (GRU(a; b) + GRU(b; a)) commutative by construction: both argument orders, averaged
    GRU(x; h) = (1 - z) * m + z * h       PyTorch's GRU cell, input x and state h (r applied after U_m h):
        r = sigmoid(W_r x + b_r + U_r h + c_r)         "monoid_input_reset",     "monoid_hidden_reset"
        z = sigmoid(W_z x + b_z + U_z h + c_z)         "monoid_input_update",    "monoid_hidden_update"
        m = tanh(W_m x + b_m + r * (U_m h + c_m))      "monoid_input_candidate", "monoid_hidden_candidate"
    s = e_1 (+) e_2 (+) ... (+) e_n       a balanced binary tree: each level combines neighbours (e_1 (+) e_2,
                                          e_3 (+) e_4, ...); an unpaired last element is combined with the identity
                                          element E, x (+) E = x, so it moves up one level unchanged
    logits = rho(s)                       rho: `rho_layers` x (Dense(H), ReLU), then the `logits` Dense layer

The tree has ceil(log2 n) levels and applies the operator n - 1 times (tested); all pairs of one level, in both
argument orders, are combined at once, by one call of each shared Dense layer on a (batch, 2 pairs, H) tensor, so
the dependency length is the tree's depth, not the n steps of a recurrent aggregator: the paper's point.
``aggregator="sum"`` puts the fixed monoid :math:`(\mathbb{R}^H, +, 0)` in the same tree, which is DeepSets' sum
aggregation (Zaheer et al. 2017), the reference the suite compares with.

Invariance, as it follows from the algebra: :math:`(+)` is exactly commutative, so the logits are exactly
invariant to the permutations that are symmetries of the tree (swapping the two members of a pair, or two sibling
subtrees: for n = 3, swapping the first two elements). It is not associative by construction, so other
permutations (for n = 3, any that changes which two elements are combined first) change the logits as far as
training leaves it non-associative (tested at initialisation); ``digit-sets``' permutation metrics in the accuracy
track measure how close it comes. The sum aggregator is invariant to every permutation.

Paper: Ong & Veličković, "Learnable Commutative Monoids for Graph Neural Networks", LoG 2022 (PMLR 198),
https://arxiv.org/abs/2212.08541: a GNN aggregator is a commutative monoid over the latent space; a learnable
commutative, associative binary operator applied as a balanced tree gives an aggregator of O(log V) depth that
competes with recurrent aggregators. No official code was found; the operator follows PyTorch Geometric's
``LCMAggregation`` (``torch_geometric/nn/aggr/lcm.py``, which implements this paper): a GRU cell applied in both
argument orders and averaged, the unpaired element of a level carried up unchanged, a ReLU projection before
the tree (here the last ``phi`` layer).

Scaled down (small-faithful): one set of 3 elements per example instead of a graph's neighbourhoods, H = 64.
Deviations and assumptions: (1) no associativity regulariser or other training-time term: the abstract and
PyG's implementation describe none, and whether the paper adds one could not be checked; (2) the identity
element is adjoined exactly (x (+) E = x by definition) rather than learned, which is what carrying the unpaired
element up computes; (3) Keras's initialisation (Glorot-uniform kernels, zero biases) instead of PyTorch's
U(-1/sqrt(H), 1/sqrt(H)) for the GRU weights; (4) a set classifier (phi, aggregate, rho) rather than a
message-passing GNN layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import logits_model, model_name, sequence_shape

L = keras.layers
AGGREGATORS = ("lcm", "sum")
GRU_GATES = ("reset", "update", "candidate")
# A monoid's operation on tensors: two (batch, pairs, H) tensors of left and right members -> (batch, pairs, H).
Combine = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _member(pairs: tf.Tensor, index: int) -> tf.Tensor:
    """Member ``index`` (0 left, 1 right) of each pair of a (batch, pairs, 2, H) tensor: (batch, pairs, H)."""
    count, _, width = pairs.shape[1:]
    picked = L.Cropping2D(((0, 0), (index, 1 - index)))(pairs)
    return L.Reshape((count, width))(picked)


def monoid_tree(elements: tf.Tensor, combine: Combine) -> tf.Tensor:
    """:math:`e_1 (+) \\dots (+) e_n` of (batch, n, H) ``elements`` as a balanced binary tree: (batch, H).

    Each level calls ``combine`` once, on all its pairs of neighbours; an unpaired last element moves up a level
    as it is (combined with the identity), so ``combine`` is called ceil(log2 n) times.
    """
    x = elements
    width = x.shape[-1]
    while x.shape[1] > 1:
        count = x.shape[1]
        paired = L.Cropping1D((0, 1))(x) if count % 2 else x
        pairs = L.Reshape((count // 2, 2, width))(paired)
        merged = combine(_member(pairs, 0), _member(pairs, 1))
        x = L.Concatenate(axis=1)([merged, L.Cropping1D((count - 1, 0))(x)]) if count % 2 else merged
    return L.Reshape((width,))(x)


def add(left: tf.Tensor, right: tf.Tensor) -> tf.Tensor:
    """The monoid (R^H, +, 0): the tree computes DeepSets' sum."""
    return L.Add()([left, right])


class GruMonoid:
    """The learnable operator a (+) b = 1/2 (GRU(a; b) + GRU(b; a)), its six Dense layers shared by every level."""

    def __init__(self, units: int):
        self.input_gates = {gate: L.Dense(units, name=f"monoid_input_{gate}") for gate in GRU_GATES}
        self.hidden_gates = {gate: L.Dense(units, name=f"monoid_hidden_{gate}") for gate in GRU_GATES}

    def __call__(self, left: tf.Tensor, right: tf.Tensor) -> tf.Tensor:
        # Both argument orders at once: the cell reads [left; right] as its inputs and [right; left] as its
        # states, so each member is projected once per gate and the two orders share every layer call.
        pairs = left.shape[1]
        inputs, states = L.Concatenate(axis=1)([left, right]), L.Concatenate(axis=1)([right, left])
        both_orders = self.gru(inputs, states)
        return L.Average()([L.Cropping1D((0, pairs))(both_orders), L.Cropping1D((pairs, 0))(both_orders)])

    def gru(self, inputs: tf.Tensor, states: tf.Tensor) -> tf.Tensor:
        """The GRU cell's new state for each input and state (PyTorch's GRUCell)."""
        projected_input = {gate: dense(inputs) for gate, dense in self.input_gates.items()}
        projected_state = {gate: dense(states) for gate, dense in self.hidden_gates.items()}
        reset, update = (
            L.Activation("sigmoid")(L.Add()([projected_input[gate], projected_state[gate]]))
            for gate in ("reset", "update")
        )
        candidate = L.Activation("tanh")(
            L.Add()([projected_input["candidate"], L.Multiply()([reset, projected_state["candidate"]])])
        )
        # (1 - z) m + z h, written m + z (h - m): one multiply fewer.
        return L.Add()([candidate, L.Multiply()([update, L.Subtract()([states, candidate])])])


@register_method(
    "lcm",
    suite="architectures",
    kind="architecture",
    paper=Paper("Learnable Commutative Monoids for Graph Neural Networks", 2022, "https://arxiv.org/abs/2212.08541"),
    summary="small-faithful: set classifier phi -> learnable commutative operator (GRU, both orders averaged) "
    "reduced as a balanced tree of depth ceil(log2 n) -> rho; aggregator=sum is DeepSets",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class LearnableCommutativeMonoid(ArchitectureMethod):
    """Options: ``units`` (H, 64), ``phi_layers`` (2), ``rho_layers`` (1), ``aggregator`` (``lcm`` or ``sum``)."""

    default_options = {"units": 64, "phi_layers": 2, "rho_layers": 1, "aggregator": "lcm"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["aggregator"] not in AGGREGATORS:
            known = ", ".join(AGGREGATORS)
            raise ValueError(f"lcm: aggregator must be one of {known}, not '{self.options['aggregator']}'")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        items, features = sequence_shape(tuple(input_shape))
        units = self.options["units"]
        inputs = keras.Input(shape=input_shape)
        x = inputs if tuple(input_shape) == (items, features) else L.Reshape((items, features))(inputs)
        for index in range(self.options["phi_layers"]):
            # A Dense layer acts on the last axis: the same phi for every element.
            x = L.Dense(units, activation="relu", name=f"phi_{index}")(x)
        combine = GruMonoid(x.shape[-1]) if self.options["aggregator"] == "lcm" else add
        x = monoid_tree(x, combine)
        for index in range(self.options["rho_layers"]):
            x = L.Dense(units, activation="relu", name=f"rho_{index}")(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))
