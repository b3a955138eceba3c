r"""Switch Transformer FFN: the tiny transformer's MLP replaced by E experts, each token routed to one.

Mechanism (one Switch FFN layer, per example's T tokens :math:`x_t` of width d). A router (a d x E
matrix :math:`W_r`, no bias) gives :math:`p_t = \mathrm{softmax}(W_r^\top x_t)`; token t goes to the one
expert :math:`e_t = \arg\max_i p_{t,i}` (top-1 routing) and its output is that expert's FFN, gated by
its router probability,

.. math::  y_t = p_{t,e_t}\, \mathrm{FFN}_{e_t}(x_t), \qquad
           \mathrm{FFN}_i(x) = W_{2,i}\,\mathrm{GELU}(W_{1,i} x + b_{1,i}) + b_{2,i},

so the router learns through the gate. Each expert has a buffer of
:math:`C = \lceil c\,T / E \rceil` slots (``capacity_factor`` c, 1.25 by default): the tokens routed to an
expert take its slots in token order, and a token past the capacity is dropped (its update is 0: the
residual carries it on, as in the paper). The experts run on their buffers only, so the layer computes
:math:`E C \cdot 2 d h = c\,T \cdot 2dh` expert MACs, not :math:`E T \cdot 2dh`. During training the
load-balancing loss

.. math::  \mathcal{L}_{aux} = \alpha\, E \sum_{i=1}^{E} f_i P_i,

with :math:`f_i` the fraction of the batch's tokens routed to expert i and :math:`P_i` the mean router
probability of expert i, is added with ``add_loss`` (``balance_weight`` :math:`\alpha` = 0.01, the
paper's); it is smallest, :math:`\alpha`, when both are uniform. As the paper advises for stability, the
router and expert weights are initialised from a truncated normal of variance 0.1 / fan-in, and the
router's input is multiplied by uniform noise in :math:`[1-\epsilon, 1+\epsilon]` while training
(``jitter`` :math:`\epsilon` = 0.01).

Blocks are the tiny transformer's (pre-norm attention, then the pre-norm Switch FFN in place of its MLP:
``block{i}_mlp`` is a :class:`SwitchFeedForward`); tokens, positions and head as
:class:`suites.architectures._transformer.TransformerArchitecture` builds them.

Costs (the complexity track). ``macs`` is what the layer executes per example: the router (T d E) and the
experts over their buffers (:math:`E C \cdot 2dh`); the gathers that fill and empty the buffers are
moves, not MACs. ``macs_active`` (declared by :meth:`SwitchFeedForward.effbench_active_macs`) is what
conditional computation needs, one expert per token: :math:`T d E + T \cdot 2dh`, the dense FFN's cost
plus the router's when each expert is as wide as the dense MLP. The parameters grow E-fold. The expert
load (fraction of tokens per expert, fraction dropped) is measured on data by :func:`expert_load`.

TFLite. The routing converts to builtin ops (ARG_MAX, ONE_HOT, CUMSUM, TOPK_V2 to pick each expert's
tokens, GATHER to fill the buffers and to bring the outputs back, BATCH_MATMUL for the experts), so the
flatbuffer routes per input as Keras does and runs the experts on their C-slot buffers: its latency
reflects ``macs``, capacity padding included (``tests/test_moe_switch.py`` converts it and checks those ops).
The full-int8 variant converts too.

Paper: Fedus, Zoph & Shazeer, "Switch Transformers: Scaling to Trillion Parameter Models with Simple and
Efficient Sparsity", 2021 (https://arxiv.org/abs/2101.03961); the roster's entry ("Build a Robust QA
System with Transformer-based Mixture of Experts", 2022) puts such Switch FFN layers in DistilBERT.
Small-faithful: top-1 routing, capacity factor and token dropping, the auxiliary loss, the reduced
initialisation and router jitter as in the paper, at tiny sizes (dim 64, depth 2, 4 experts) with every
block's FFN a Switch FFN (the paper alternates them with dense ones in some models), a routing group of one
example's tokens, no expert dropout, GELU experts. The size knob is ``hidden``, each expert's width;
``SIZED_RUNS`` matches the tiny transformer's executed MACs on ``listops-short``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._transformer import (
    TransformerArchitecture,
    gelu_tanh,
    pre_norm_residual,
    self_attention,
)

# Switch's reduced initialisation: a truncated normal of variance 0.1 / fan-in (the paper's s = 0.1).
INIT_SCALE = 0.1


@dataclass(frozen=True)
class Routing:
    """Where one call sends each token: (batch, tokens) arrays, and the router probabilities (batch, tokens, E)."""

    probabilities: tf.Tensor
    expert: tf.Tensor
    gate: tf.Tensor
    position: tf.Tensor
    kept: tf.Tensor


@keras.utils.register_keras_serializable(package="effbench")
class SwitchFeedForward(keras.layers.Layer):
    """``experts`` GELU FFNs of ``hidden`` units on (batch, tokens, dim); each token to one expert (see module)."""

    def __init__(
        self, experts: int, hidden: int, capacity_factor: float = 1.25, balance_weight: float = 0.01,
        jitter: float = 0.01, **kwargs: Any,
    ):  # fmt: skip
        super().__init__(**kwargs)
        self.experts, self.hidden = experts, hidden
        self.capacity_factor, self.balance_weight, self.jitter = capacity_factor, balance_weight, jitter

    def build(self, input_shape: tf.TensorShape) -> None:
        dim, experts, hidden = int(input_shape[-1]), self.experts, self.hidden

        def kernel(name: str, shape: tuple[int, ...], fan_in: int) -> tf.Variable:
            stddev = math.sqrt(INIT_SCALE / fan_in)
            initializer = keras.initializers.TruncatedNormal(stddev=stddev)
            return self.add_weight(name=name, shape=shape, initializer=initializer)

        self.router_kernel = kernel("router_kernel", (dim, experts), dim)
        self.in_kernel = kernel("expert_in_kernel", (experts, dim, hidden), dim)
        self.in_bias = self.add_weight(name="expert_in_bias", shape=(experts, 1, hidden), initializer="zeros")
        self.out_kernel = kernel("expert_out_kernel", (experts, hidden, dim), hidden)
        self.out_bias = self.add_weight(name="expert_out_bias", shape=(experts, 1, dim), initializer="zeros")

    def capacity(self, tokens: int) -> int:
        """Slots per expert: :math:`\\lceil c T / E \\rceil`, at most T."""
        return min(tokens, math.ceil(self.capacity_factor * tokens / self.experts))

    def route(self, x: tf.Tensor, training: bool = False) -> Routing:
        """The router's choice for each token of ``x`` (batch, tokens, dim) and whether its expert has room."""
        if training and self.jitter:
            x = x * tf.random.uniform(tf.shape(x), 1.0 - self.jitter, 1.0 + self.jitter)
        probabilities = tf.nn.softmax(tf.einsum("btd,de->bte", x, self.router_kernel), axis=-1)
        expert = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        chosen = tf.one_hot(expert, self.experts)
        # The rank of each token among those routed to its expert, in token order: its slot.
        position = tf.cast(tf.reduce_sum(tf.cumsum(chosen, axis=1) * chosen, axis=-1), tf.int32) - 1
        gate = tf.reduce_max(probabilities, axis=-1)
        return Routing(probabilities, expert, gate, position, position < self.capacity(x.shape[1]))

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        tokens, capacity = x.shape[1], self.capacity(x.shape[1])
        routing = self.route(x, bool(training))
        self.add_loss(self.balance_loss(routing))
        # Each expert's tokens, earliest first: the top C of (T - t) over the tokens routed to it (0 elsewhere).
        order = tf.cast(tokens - tf.range(tokens), tf.float32)
        claims = tf.transpose(tf.one_hot(routing.expert, self.experts), [0, 2, 1]) * order  # (batch, E, T)
        slots = tf.math.top_k(claims, k=capacity, sorted=True).indices  # (batch, E, C)
        buffers = tf.gather(x, slots, batch_dims=1)  # (batch, E, C, dim)
        hidden = gelu_tanh(tf.einsum("becd,edh->bech", buffers, self.in_kernel) + self.in_bias)
        outputs = tf.einsum("bech,ehd->becd", hidden, self.out_kernel) + self.out_bias
        flat = tf.reshape(outputs, [-1, self.experts * capacity, x.shape[2]])
        index = routing.expert * capacity + tf.minimum(routing.position, capacity - 1)
        weight = routing.gate * tf.cast(routing.kept, tf.float32)
        return tf.gather(flat, index, batch_dims=1) * weight[..., None]

    def balance_loss(self, routing: Routing) -> tf.Tensor:
        """:math:`\\alpha E \\sum_i f_i P_i` over the batch's tokens."""
        fractions = tf.reduce_mean(tf.one_hot(routing.expert, self.experts), axis=[0, 1])
        mean_probabilities = tf.reduce_mean(routing.probabilities, axis=[0, 1])
        return self.balance_weight * self.experts * tf.reduce_sum(fractions * mean_probabilities)

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        tokens, dim = inputs[0][1], inputs[0][2]
        slots = self.experts * self.capacity(tokens)
        macs = tokens * dim * self.experts + slots * 2 * dim * self.hidden
        # Softmax over the router logits; the experts' biases and GELU; the gating of the outputs.
        elementwise = 3 * tokens * self.experts + slots * (2 * self.hidden + dim) + tokens * dim
        return macs, elementwise

    def effbench_active_macs(self, inputs: list[tuple], outputs: list[tuple]) -> int:
        """One expert per token: the router's MACs and one FFN's per token."""
        tokens, dim = inputs[0][1], inputs[0][2]
        return tokens * dim * self.experts + tokens * 2 * dim * self.hidden

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(), "experts": self.experts, "hidden": self.hidden,
            "capacity_factor": self.capacity_factor, "balance_weight": self.balance_weight, "jitter": self.jitter,
        }  # fmt: skip


@dataclass(frozen=True)
class ExpertLoad:
    """One Switch layer's load on some inputs: the fraction of tokens the router sends to each expert (before
    the capacity), and the fraction of all tokens dropped because their expert was full."""

    fractions: np.ndarray
    dropped: float


def expert_load(model: keras.Model, x: np.ndarray) -> dict[str, ExpertLoad]:
    """The load of every :class:`SwitchFeedForward` of ``model`` on inputs ``x``, by layer name."""
    layers = [layer for layer in model.layers if isinstance(layer, SwitchFeedForward)]
    inputs = keras.Model(model.input, [layer.input for layer in layers])(x, training=False)
    loads = {}
    for layer, tokens in zip(layers, tf.nest.flatten(inputs), strict=True):
        routing = layer.route(tokens)
        counts = np.bincount(routing.expert.numpy().ravel(), minlength=layer.experts)
        dropped = 1.0 - float(np.mean(routing.kept.numpy()))
        loads[layer.name] = ExpertLoad(counts / counts.sum(), dropped)
    return loads


@register_method(
    "moe-switch",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity",
        2021,
        "https://arxiv.org/abs/2101.03961",
    ),
    summary="tiny transformer whose MLPs are Switch FFNs: top-1 routing to E experts, capacity factor, "
    "load-balancing loss; reports active MACs; small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class MoESwitch(TransformerArchitecture):
    default_options = {
        "dim": 64, "depth": 2, "heads": 4, "patch": 2, "experts": 4, "hidden": 128, "capacity_factor": 1.25,
    }  # fmt: skip

    def block(self, x: tf.Tensor, name: str, grid: tuple[int, int]) -> tf.Tensor:
        x = pre_norm_residual(x, f"{name}_attention", self_attention(self.options["heads"], name))
        switch = SwitchFeedForward(
            self.options["experts"], self.options["hidden"], self.options["capacity_factor"], name=f"{name}_mlp"
        )
        return pre_norm_residual(x, f"{name}_mlp", switch)
