r"""Mixed-precision machinery shared by the post-training methods ``zeroq``, ``adaquant`` and ``hessian-mp``.

A bit allocation gives each conv / dense layer :math:`l` (with :math:`n_l` kernel elements) a weight width
:math:`b_l` from a candidate set (``CANDIDATE_BITS``). Its size is :math:`\sum_l n_l b_l` bits and its average
weight width :math:`\sum_l n_l b_l / \sum_l n_l` (the budgets of ``zeroq`` and ``adaquant`` are averages).

- **Sensitivity tables** ``{layer: {bits: cost}}``: :func:`single_layer_table` quantizes one layer's kernel at a
  time in place (:func:`kernel_quantized`, the max-abs per-channel grid of :mod:`suites.quantization._uniform`)
  and scores the model, e.g. by :func:`mean_kl` to the float model's outputs (ZeroQ's :math:`\Omega_i(b)`).
- **Pareto frontier** by dynamic programming (:func:`pareto_frontier`, ZeroQ): over the layers in order, keep
  for every reachable size the least total cost, and drop every (size, cost) state that a smaller-or-equal
  state dominates. The survivors after the last layer are the exact Pareto frontier of (size, total cost) over
  all :math:`\prod_l |B_l|` allocations; :func:`cheapest_within` takes the best point under a size budget.
- **Integer program** (:func:`integer_program`, AdaQuant): binaries :math:`x_{l,b}`, one bit width per layer,

  .. math:: \min \sum_{l,b} \Delta L_{l,b} x_{l,b}\quad \text{s.t.}\ \sum_b x_{l,b} = 1,\
     \sum_{l,b} n_l b\, x_{l,b} \le \text{budget},

  solved by ``scipy.optimize.milp`` (HiGHS branch and bound).
- **Hutchinson's trace estimator** (:func:`hutchinson_traces`): for Rademacher vectors :math:`v`,
  :math:`\operatorname{Tr}(H_{ll}) = \mathbb{E}[v_l^\top (Hv)_l]`, with :math:`Hv` a Hessian-vector product from
  nested ``GradientTape`` s (the gradient of :math:`g^\top v`); one product gives every layer's block trace.
- **Deployables**: :func:`fake_quantized` builds the Keras fake-quantized model with
  :func:`~suites.quantization._uniform.quantize_layers` and calibrates its activation ranges;
  :func:`deployable_facts` gives the facts every deployable of these methods carries.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from effbench.method import Deployable
from effbench.tf import keras, tf
from suites.quantization._uniform import (
    ActivationQuantizer,
    BitWidths,
    WeightQuantizer,
    bit_width_facts,
    calibrate_activation_ranges,
    quantize_layers,
)

CANDIDATE_BITS = (2, 4, 8)
ACTIVATION_BITS = 8
# The width the first and last layers keep (``keep_ends``) and that a deployable must reach everywhere to ship
# as an int8 flatbuffer.
END_BITS = 8
# Sensitivity table: layer name -> {weight bits: cost of that layer alone at those bits}.
Table = Mapping[str, Mapping[int, float]]


@dataclass(frozen=True)
class Allocation:
    """One bit width per layer, its size in bits (kernels only) and its total cost."""

    bits: dict[str, int]
    size_bits: int
    cost: float


def parse_budgets(value: Any, option: str) -> tuple[float, ...]:
    """An option's budgets: a number, or numbers separated by '/' (``"4/6/8"``), in the order given."""
    try:
        budgets = tuple(float(part) for part in str(value).split("/"))
    except ValueError:
        raise ValueError(f"option '{option}' is '{value}': expected numbers separated by '/', e.g. 4/6/8") from None
    if len(set(budgets)) != len(budgets):
        raise ValueError(f"option '{option}' repeats a budget: '{value}'")
    return budgets


def budget_names(key: str, budgets: Sequence[float]) -> tuple[str, ...]:
    """Deployable names: the first budget is the main deployable (``""``), the others ``key=value``."""
    return ("", *(f"{key}={budget:g}" for budget in budgets[1:]))


def kernel_variable(layer: keras.layers.Layer) -> tf.Variable:
    """The kernel of a conv / depthwise / dense layer (float or larq)."""
    return layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel


def kernel_sizes(model: keras.Model, names: Sequence[str]) -> dict[str, int]:
    """Layer name -> number of kernel elements."""
    return {name: int(np.prod(kernel_variable(model.get_layer(name)).shape)) for name in names}


def ends_kept(names: Sequence[str], keep_ends: bool) -> tuple[str, ...]:
    """The first and last quantizable layers where ``keep_ends`` (they stay at ``END_BITS``), else none."""
    return (names[0], names[-1]) if keep_ends and names else ()


def candidate_bits(names: Sequence[str], kept: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Layer name -> the widths it may take: ``END_BITS`` only for a kept layer, else ``CANDIDATE_BITS``."""
    return {name: (END_BITS,) if name in kept else CANDIDATE_BITS for name in names}


def average_bits(bits: Mapping[str, int], sizes: Mapping[str, int]) -> float:
    """Kernel-size-weighted average weight width of an allocation."""
    return sum(sizes[name] * b for name, b in bits.items()) / sum(sizes[name] for name in bits)


def quantized_kernel(layer: keras.layers.Layer, bits: int) -> tf.Tensor:
    """The layer's kernel on the ``bits``-bit per-channel max-abs grid (``_uniform.WeightQuantizer``)."""
    return WeightQuantizer(bits)(tf.convert_to_tensor(kernel_variable(layer)))


@contextlib.contextmanager
def weights_replaced(layer: keras.layers.Layer, kernel: tf.Tensor, bias: tf.Tensor | None = None) -> Iterator[None]:
    """Within the block, the layer computes with ``kernel`` (and ``bias``, if given); its own are restored after."""
    variables = [kernel_variable(layer)] + ([layer.bias] if bias is not None else [])
    originals = [variable.numpy() for variable in variables]
    for variable, value in zip(variables, [kernel, bias], strict=False):
        variable.assign(value)
    try:
        yield
    finally:
        for variable, original in zip(variables, originals, strict=True):
            variable.assign(original)


def kernel_quantized(layer: keras.layers.Layer, bits: int) -> contextlib.AbstractContextManager[None]:
    """Within the block, the float layer computes with its kernel quantized at ``bits`` (restored after)."""
    return weights_replaced(layer, quantized_kernel(layer, bits))


@contextlib.contextmanager
def kernels_quantized(model: keras.Model, names: Sequence[str], bits: int) -> Iterator[None]:
    """Within the block, the float model's layers ``names`` compute with kernels quantized at ``bits``."""
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(kernel_quantized(model.get_layer(name), bits))
        yield


def single_layer_table(
    model: keras.Model, choices: Mapping[str, Sequence[int]], score: Callable[[], float]
) -> dict[str, dict[int, float]]:
    """``score()`` with each layer alone quantized (weights, in place) at each of its candidate widths."""
    table: dict[str, dict[int, float]] = {}
    for name, widths in choices.items():
        table[name] = {}
        for bits in widths:
            with kernels_quantized(model, [name], bits):
                table[name][bits] = float(score())
    return table


def mean_kl(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over examples of KL(softmax(reference) || softmax(logits))."""
    log_p = tf.nn.log_softmax(tf.constant(reference_logits, tf.float32))
    log_q = tf.nn.log_softmax(tf.constant(logits, tf.float32))
    return float(tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)))


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Inference-mode outputs on ``x`` (one call: calibration sets are small)."""
    return model(x, training=False).numpy()


def pareto_frontier(table: Table, sizes: Mapping[str, int]) -> list[Allocation]:
    """The (size, total cost) Pareto frontier over every allocation of ``table``, by dynamic programming.

    Sorted by size; each point is strictly cheaper than every smaller one (module docstring).
    """
    names = list(table)
    states: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]
    for name in names:
        best: dict[int, tuple[float, tuple[int, ...]]] = {}
        for size, cost, choice in states:
            for bits, layer_cost in table[name].items():
                key, value = size + sizes[name] * bits, cost + layer_cost
                if key not in best or value < best[key][0]:
                    best[key] = (value, (*choice, bits))
        states = []
        for size in sorted(best):
            cost, choice = best[size]
            if not states or cost < states[-1][1]:
                states.append((size, cost, choice))
    return [Allocation(dict(zip(names, choice, strict=True)), size, cost) for size, cost, choice in states]


def budget_bits(average: float, sizes: Mapping[str, int]) -> int:
    """The size budget in bits of an average weight width over the layers of ``sizes``."""
    return math.floor(average * sum(sizes.values()) + 1e-6)


def _infeasible(table: Table, sizes: Mapping[str, int], budget: int) -> ValueError:
    smallest = {name: min(widths) for name, widths in table.items()}
    return ValueError(
        f"a size budget of {budget} bits ({budget / sum(sizes.values()):.3f} average weight bits) is below the "
        f"smallest allocation's {average_bits(smallest, sizes):.3f} average bits"
    )


def cheapest_within(frontier: Sequence[Allocation], budget: int) -> Allocation:
    """The frontier's least-cost allocation of at most ``budget`` bits."""
    fitting = [point for point in frontier if point.size_bits <= budget]
    if not fitting:
        raise ValueError(f"a size budget of {budget} bits is below the smallest allocation's {frontier[0].size_bits}")
    return min(fitting, key=lambda point: point.cost)


def integer_program(table: Table, sizes: Mapping[str, int], budget: int) -> Allocation:
    """The least-cost allocation of at most ``budget`` bits: AdaQuant's integer program (module docstring)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    pairs = [(name, bits) for name, widths in table.items() for bits in widths]
    cost = np.array([table[name][bits] for name, bits in pairs])
    one_each = np.array([[1.0 if pair[0] == name else 0.0 for pair in pairs] for name in table])
    size_row = np.array([[sizes[name] * bits for name, bits in pairs]], dtype=float)
    result = milp(
        cost,
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(size_row, -np.inf, budget)],
        integrality=np.ones(len(pairs)),
        bounds=Bounds(0, 1),
    )
    if not result.success:
        raise _infeasible(table, sizes, budget)
    chosen = {name: bits for (name, bits), x in zip(pairs, result.x, strict=True) if x > 0.5}
    return Allocation(chosen, sum(sizes[name] * bits for name, bits in chosen.items()), float(cost @ result.x))


def hutchinson_traces(
    loss: Callable[[], tf.Tensor], variables: Sequence[tf.Variable], samples: int, seed: int
) -> np.ndarray:
    """Hutchinson estimates of the Hessian's diagonal-block traces :math:`\\operatorname{Tr}(H_{ll})`, per variable.

    Each sample draws Rademacher :math:`v` (one block per variable), forms :math:`Hv` as the gradient of
    :math:`\\nabla L^\\top v` (nested tapes) and adds :math:`v_l^\\top (Hv)_l` to block :math:`l`'s estimate.
    """
    rng = np.random.default_rng(seed)
    totals = np.zeros(len(variables))
    for _ in range(samples):
        vectors = [tf.constant(rng.choice([-1.0, 1.0], size=v.shape), v.dtype) for v in variables]
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = loss()
            gradients = inner.gradient(value, variables)
            projection = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(gradients, vectors, strict=True)])
        products = outer.gradient(projection, variables)
        totals += [float(tf.reduce_sum(h * v)) for h, v in zip(products, vectors, strict=True)]
    return totals / samples


def fake_quantized(
    float_model: keras.Model,
    bit_widths: BitWidths,
    samples: np.ndarray,
    weight_quantizer: Callable[[int], Any] = WeightQuantizer,
    activation_quantizer: Callable[[int], Any] = ActivationQuantizer,
) -> keras.Model:
    """``quantize_layers`` of the float model at ``bit_widths``, its activation ranges calibrated on ``samples``."""
    model = quantize_layers(float_model, bit_widths, weight_quantizer, activation_quantizer)
    calibrate_activation_ranges(model, samples)
    return model


def uniform_ends(bits: Mapping[str, int]) -> bool:
    """Whether every layer ends at ``END_BITS``: the deployable then ships as an int8 flatbuffer."""
    return all(b == END_BITS for b in bits.values())


def budget_deployable(
    model: keras.Model, bits: Mapping[str, int], sizes: Mapping[str, int], budget: float,
    int8: Callable[[], bytes | None], calibration: dict, **extra: Any,
) -> Deployable:  # fmt: skip
    """The deployable of one average-bits budget: ``int8()``'s flatbuffer where every layer ends at 8 bits."""
    tflite = int8() if uniform_ends(bits) else None
    achieved = {"avg_bits": budget, "achieved_avg_bits": average_bits(bits, sizes)}
    return Deployable(model, tflite, deployable_facts(model, tflite, calibration, achieved, **extra))


def deployable_facts(
    model: keras.Model, tflite: bytes | None, calibration: dict, budget: dict, **extra: Any
) -> dict[str, Any]:
    """What every deployable of these methods records: simulated or not, its bit map, calibration, budget."""
    return {
        "simulated": tflite is None,
        "bit_widths": bit_width_facts(model),
        "calibration": calibration,
        "budget": budget,
        **extra,
    }
