r"""Complexity track: parameters, MACs, FLOPs, BOPs, OPs and packed size, counted from the Keras graph.

Nothing is executed. Every count comes from the static shapes recorded in the layer graph and
from the weight variables, and every count is **per example**: axis 0 (the batch axis) is dropped
from every shape. Shapes are read per call (per inbound node of the model's graph), so a shared
layer called twice counts its operations twice and its parameters once. Nested functional or
Sequential models are recursed into and their layers reported as ``outer/inner``.

MACs (multiply-accumulates of linear operators; bias adds are not MACs)
-----------------------------------------------------------------------
This is the convention of published "Mult-Adds" (MobileNet v1/v2 papers) and of the ResNet
paper's "FLOPs", which are multiply-adds too. With kernel extents :math:`k_i`, :math:`g` groups,
depth multiplier :math:`m`, and :math:`S_{in}, S_{out}` the input/output spatial positions
(:math:`\prod H\cdot W` for 2-D):

* Conv1D/2D/3D: :math:`\prod k_i \cdot (C_{in}/g) \cdot C_{out} \cdot S_{out}` (= kernel size × :math:`S_{out}`)
* Conv{1,2,3}DTranspose: :math:`\prod k_i \cdot C_{in} \cdot C_{out} \cdot S_{in}` (each input
  element is scattered through the whole kernel)
* DepthwiseConv1D/2D: :math:`\prod k_i \cdot C_{in} \cdot m \cdot S_{out}`
* SeparableConv1D/2D: depthwise + pointwise, :math:`(\prod k_i \cdot C_{in} m + C_{in} m C_{out}) S_{out}`
* Dense on input :math:`(\dots, d_{in})`: :math:`d_{in} \cdot units \cdot \prod(\text{output dims but batch and last})`
* EinsumDense: the product of the sizes of all indices of the equation (batch index = 1)
* MultiHeadAttention with :math:`h` heads, key/value head dims :math:`d_k, d_v`, :math:`T_q, T_k,
  T_v` query/key/value positions: the four projections (kernel size × positions each) plus
  :math:`h T_q T_k d_k` for :math:`QK^T` and :math:`h T_q T_k d_v` for :math:`AV`
* larq ``Quant*`` layers: as their float counterparts (they subclass them). Embedding: 0 (a lookup).
* A layer with an ``effbench_cost(input_shapes, output_shapes)`` method counts itself: it returns
  (MACs, elementwise ops) per example from the call's shapes (batch axis included, ignored), as the
  tiny transformer's attention cores do for :math:`QK^T` and :math:`AV`. Its BOPs are those MACs
  times its bit widths, as for any layer, so a binary layer that computes fewer binary operations
  than :math:`K \cdot C_{out}` per position declares them this way (MST-compression's
  ``MSTQuantConv2D`` / ``MSTQuantDense``, ``suites/binarization/mst.py``; tested in ``tests/test_mst.py``).

FLOPs = 2·MACs + bias adds + elementwise ops
--------------------------------------------
Every MAC counts 2 FLOPs whatever its bit widths: a binary (XNOR-popcount) MAC too, so ``flops`` does
not reflect binarization or quantization (``bops`` and ``ops`` do). Elementwise costs, per output element
unless said otherwise:

* bias add: 1 (layers with a bias)
* activations, as a layer or as a layer's ``activation=`` argument: 1 for every nonlinearity
  (relu, relu6, sigmoid, tanh, swish, gelu, ...: an op count, not a cycle count, so transcendental
  functions also count 1); 0 for ``linear``; softmax/log-softmax: 3 (exp, sum, divide)
* BatchNormalization: 2 (inference form :math:`y = a x + b`, with :math:`a, b` folded per channel)
* LayerNormalization, GroupNormalization: 5 (mean accumulate, subtract, square-accumulate,
  multiply by the folded :math:`\gamma/\sqrt{\sigma^2+\epsilon}`, add :math:`\beta`; per-row terms ignored)
* Rescaling, Normalization: 2 (scale and offset)
* Add, Subtract, Multiply, Average, Maximum, Minimum of :math:`n` inputs: :math:`n-1`
* MaxPooling, AveragePooling with window :math:`p_1 \times \dots`: :math:`\prod p_i`;
  global pooling: 1 per *input* element
* MultiHeadAttention: the four projection biases, 1 per projected query element (the
  :math:`1/\sqrt{d_k}` scaling) and 3 per attention score (softmax)
* 0: InputLayer, Reshape, Flatten, Dropout and noise layers (identity at inference), ZeroPadding,
  Cropping, Concatenate, Permute, RepeatVector, Masking, nearest UpSampling, Embedding,
  TFMOT's input QuantizeLayer. larq input quantizers are not counted as FLOPs: their effect is
  what BOPs measure.

A weightless layer of any other type counts 0 but is listed in ``ComplexityReport.uncounted``
with a warning. A layer *with weights* of an unknown type raises :class:`ComplexityError` naming
the layer and class, so nothing that holds parameters is silently miscounted.

BOPs, OPs, size, params, sparsity
---------------------------------
* BOPs = :math:`\text{MACs} \cdot b_w \cdot b_a` per layer, with :math:`(b_w, b_a)` from
  :func:`effbench.bits.layer_bit_widths`: the bit-operation count of mixed-precision quantization work,
  every MAC weighted by the product of its operands' widths. A float layer therefore counts
  :math:`32 \cdot 32 = 1024` BOPs per MAC; a binary layer 1. This is *not* what BiBench, Bi-Real Net and
  ReActNet report; that is OPs.
* OPs = BOPs / 64 + FLOPs, the convention of Bi-Real Net and ReActNet (after XNOR-Net) that binarization
  papers, BiBench among them, report: a 64-bit CPU does 64 binary operations in one instruction.
  Per layer, a layer whose weights *and* activations are both below 32 bits counts
  :math:`\text{MACs} \cdot b_w \cdot b_a / 64` (1/64 per binary MAC, 1 per 8x8-bit MAC), every other
  layer its MACs (the "FLOPs" of these papers are multiply-adds, like the MACs here; a layer with one
  float operand, such as weight-only quantization, computes in float). Elementwise work (BN, activations,
  pooling) is left out, as in those papers. A value of its own (a float: 1/64 of a MAC is not whole).
* size_bits = :math:`\sum_{kernels} |K| \cdot b_w + \sum_{other} |W| \cdot 32`. Kernels are the
  ``kernel``, ``depthwise_kernel``, ``pointwise_kernel`` and ``embeddings`` variables; biases,
  BN :math:`\gamma, \beta` and the non-trainable moving statistics (they ship in the file) are float32.
  size_bytes = :math:`\lceil \text{size\_bits} / 8 \rceil`.
* params = the number of elements of all weight variables (as ``model.count_params()``), each
  variable counted once; ``params_trainable`` of those the layer trains (its ``trainable_weights``: a frozen
  layer's count zero); ``params_nonzero`` counts
  nonzero values. TFMOT bookkeeping (quantizer min/max ranges, ``optimizer_step``, pruning masks
  and thresholds) is not part of the deployed model and is excluded from params and size.
* sparsity = fraction of zero values among kernel elements.

Active MACs (conditional computation)
-------------------------------------
* macs_active: the MACs one input runs, where a layer computes only part of itself per input (a mixture of
  experts routes each token to one expert). Such a layer declares
  ``effbench_active_macs(input_shapes, output_shapes) -> int`` beside its ``effbench_cost``, per example from
  the call's shapes as that one is; every other layer's active MACs are its MACs. Reported only for a model
  with such a layer (``ComplexityReport.conditional``), so the records of every other model are unchanged;
  ``macs`` stays what the graph executes. ``moe-switch`` (``suites/architectures/moe_switch.py``) declares it.

Sparse counts (ShrinkBench's, Blalock et al. 2020)
--------------------------------------------------
* macs_nonzero: per layer whose MACs are all kernel MACs (conv, transposed conv, depthwise, dense,
  einsum-dense), :math:`\text{MACs} \cdot \text{nnz}(K) / |K|`, exact since each kernel element is used the same
  number of times (once per output position); every other layer's MACs as they are (attention's
  :math:`QK^T` does not shrink with its projections' zeros).
* flops_nonzero = flops - 2 (macs - macs_nonzero): a zero weight saves its multiply and its add.
* compression_ratio = params / params_nonzero; theoretical_speedup = flops / flops_nonzero. A
  structured method that removes channels shrinks ``params`` and ``macs`` themselves (the physical model);
  an unstructured one only the nonzero counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effbench.bits import (
    FLOAT_BITS,
    KERNEL_KINDS,
    is_tfmot_quantize_layer,
    is_tfmot_quantize_wrapper,
    is_transparent_wrapper,
    kernel_bit_widths,
    layer_bit_widths,
    unknown_quantizers,
)
from effbench.registry import MetricSpec, register_track
from effbench.tf import keras, tf
from effbench.track import MeasureContext, Metric, Track

Shape = tuple[Any, ...]


class ComplexityError(ValueError):
    """The model cannot be counted faithfully (no layer graph, unknown shapes, unknown weighted layer)."""


@dataclass
class LayerComplexity:
    """One layer's counts; operation counts are summed over all its calls in the graph."""

    name: str
    layer_class: str
    params: int = 0
    params_trainable: int = 0
    params_nonzero: int = 0
    kernel_params: int = 0
    kernel_nonzero: int = 0
    macs: int = 0
    macs_nonzero: int = 0
    macs_active: int = 0
    conditional: bool = False
    flops: int = 0
    w_bits: int = FLOAT_BITS
    a_bits: int = FLOAT_BITS
    bops: int = 0
    ops: float = 0.0
    size_bits: int = 0
    calls: int = 0


_TOTALLED = (
    "params", "params_trainable", "params_nonzero", "kernel_params", "kernel_nonzero",
    "macs", "macs_nonzero", "macs_active", "flops", "bops", "ops", "size_bits",
)
_PER_LAYER = (
    ("params", "count"), ("macs", "count"), ("flops", "count"), ("bops", "count"), ("ops", "count"),
    ("size_bits", "bit"),
)
_WHOLE_AND_LAYER = ("", "layer")
# Headline costs first: the order in which the leaderboard offers them as Pareto axes.
METRICS = (
    MetricSpec("macs", "count", "lower", "cost", _WHOLE_AND_LAYER),
    MetricSpec("bops", "count", "lower", "cost", _WHOLE_AND_LAYER),
    MetricSpec("ops", "count", "lower", "cost", _WHOLE_AND_LAYER),
    MetricSpec("size_bits", "bit", "lower", "cost", _WHOLE_AND_LAYER),
    MetricSpec("params", "count", "lower", "cost", _WHOLE_AND_LAYER),
    MetricSpec("flops", "count", "lower", "cost", _WHOLE_AND_LAYER),
    MetricSpec("size_bytes", "byte", "lower", "cost"),
    MetricSpec("params_trainable", "count", "lower", "cost"),
    MetricSpec("params_nonzero", "count", "lower", "cost"),
    MetricSpec("sparsity", "ratio", "higher", "cost"),
    MetricSpec("macs_nonzero", "count", "lower", "cost"),
    MetricSpec("macs_active", "count", "lower", "cost"),
    MetricSpec("flops_nonzero", "count", "lower", "cost"),
    MetricSpec("compression_ratio", "ratio", "higher", "cost"),
    MetricSpec("theoretical_speedup", "ratio", "higher", "cost"),
)


@dataclass
class ComplexityReport:
    """Per-layer rows and whole-model totals of :func:`count_complexity`."""

    layers: list[LayerComplexity] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def total(self, name: str) -> int | float:
        """Sum of one column over all layers (each variable is in exactly one row); ``ops`` is a float."""
        if name not in _TOTALLED:
            raise KeyError(f"'{name}' is not a summable column; choose from {', '.join(_TOTALLED)}")
        return sum(getattr(row, name) for row in self.layers)

    @property
    def params(self) -> int:
        return self.total("params")

    @property
    def params_trainable(self) -> int:
        return self.total("params_trainable")

    @property
    def params_nonzero(self) -> int:
        return self.total("params_nonzero")

    @property
    def macs(self) -> int:
        return self.total("macs")

    @property
    def flops(self) -> int:
        return self.total("flops")

    @property
    def bops(self) -> int:
        return self.total("bops")

    @property
    def ops(self) -> float:
        return self.total("ops")

    @property
    def size_bits(self) -> int:
        return self.total("size_bits")

    @property
    def size_bytes(self) -> int:
        return math.ceil(self.total("size_bits") / 8)

    @property
    def macs_nonzero(self) -> int:
        return self.total("macs_nonzero")

    @property
    def macs_active(self) -> int:
        return self.total("macs_active")

    @property
    def conditional(self) -> bool:
        """Whether some layer computes only part of itself per input (declares its active MACs)."""
        return any(row.conditional for row in self.layers)

    @property
    def flops_nonzero(self) -> int:
        return self.flops - 2 * (self.macs - self.macs_nonzero)

    @property
    def compression_ratio(self) -> float:
        return self.params / self.params_nonzero if self.params_nonzero else 0.0

    @property
    def theoretical_speedup(self) -> float:
        return self.flops / self.flops_nonzero if self.flops_nonzero else 0.0

    @property
    def sparsity(self) -> float:
        kernels = self.total("kernel_params")
        return 1.0 - self.total("kernel_nonzero") / kernels if kernels else 0.0

    def row(self, name: str) -> LayerComplexity:
        """The row of the layer called ``name`` (``outer/inner`` inside nested models)."""
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer '{name}' in the report; layers: {', '.join(r.name for r in self.layers)}")

    def metrics(self) -> list[Metric]:
        """Whole-model metrics, then per-layer ones (scope = layer name) for layers that count."""
        out = [
            Metric("params", self.params, "count"),
            Metric("params_trainable", self.params_trainable, "count"),
            Metric("params_nonzero", self.params_nonzero, "count"),
            Metric("macs", self.macs, "count"),
            Metric("flops", self.flops, "count"),
            Metric("bops", self.bops, "count"),
            Metric("ops", self.ops, "count"),
            Metric("size_bits", self.size_bits, "bit"),
            Metric("size_bytes", self.size_bytes, "byte"),
            Metric("sparsity", float(self.sparsity), "ratio"),
            Metric("macs_nonzero", self.macs_nonzero, "count"),
            Metric("flops_nonzero", self.flops_nonzero, "count"),
            Metric("compression_ratio", float(self.compression_ratio), "ratio"),
            Metric("theoretical_speedup", float(self.theoretical_speedup), "ratio"),
        ]
        if self.conditional:
            out.append(Metric("macs_active", self.macs_active, "count"))
        for row in self.layers:
            values = [(name, unit, getattr(row, name)) for name, unit in _PER_LAYER]
            if any(value for _, _, value in values):
                out.extend(Metric(name, value, unit, scope=row.name) for name, unit, value in values)
        return out


# ---------------------------------------------------------------- shapes


@dataclass(frozen=True)
class _Call:
    """The static shapes of one call of a layer (one inbound node)."""

    node: Any
    inputs: list[Shape]
    outputs: list[Shape]


def _shape(tensor: Any) -> Shape:
    shape = tensor.shape
    return tuple(shape.as_list()) if hasattr(shape, "as_list") else tuple(shape)


def _flat_tensors(structure: Any) -> list[Any]:
    return [t for t in tf.nest.flatten(structure) if hasattr(t, "shape")]


def _call_of(node: Any) -> _Call:
    inputs = [_shape(t) for t in _flat_tensors(node.input_tensors)]
    outputs = [_shape(t) for t in _flat_tensors(node.output_tensors)]
    return _Call(node, inputs, outputs)


def _known(shape: Shape, layer: keras.layers.Layer) -> Shape:
    if any(d is None for d in shape[1:]):
        raise ComplexityError(
            f"layer '{layer.name}' ({type(layer).__name__}) has an unknown dimension in shape {shape}; "
            "the complexity track needs a model built with known input shapes"
        )
    return shape


def _elements(shape: Shape, layer: keras.layers.Layer) -> int:
    """Elements per example: the product of all dimensions but the batch axis."""
    return math.prod(_known(shape, layer)[1:])


def _out_elements(layer: keras.layers.Layer, call: _Call) -> int:
    return sum(_elements(shape, layer) for shape in call.outputs)


def _spatial(shape: Shape, layer: keras.layers.Layer) -> int:
    """Spatial positions per example of a conv input/output, honouring ``data_format``."""
    shape = _known(shape, layer)
    dims = shape[2:] if getattr(layer, "data_format", "channels_last") == "channels_first" else shape[1:-1]
    return math.prod(dims)


def _size(variable: Any) -> int:
    return math.prod(int(d) for d in variable.shape)


# ---------------------------------------------------------------- per-call costs
# Each returns (MACs, FLOPs other than 2*MACs) for one call, or None when it cannot count the call.

Cost = tuple[int, int]


def _activation_cost(activation: Any) -> int:
    # TFMOT replaces a wrapped layer's activation by a QuantizeAwareActivation holding the original.
    while activation is not None and not hasattr(activation, "__name__") and hasattr(activation, "activation"):
        activation = activation.activation
    name = getattr(activation, "__name__", None) or type(activation).__name__
    # NoOpActivation: TFMOT's identity, put where it moves a quantizer past a following ReLU.
    if activation is None or name in ("linear", "NoOpActivation"):
        return 0
    return 3 if name in ("softmax", "log_softmax") else 1


def _bias_and_activation(layer: keras.layers.Layer, call: _Call) -> int:
    per_element = (getattr(layer, "bias", None) is not None) + _activation_cost(getattr(layer, "activation", None))
    return per_element * _out_elements(layer, call)


def _dense(layer: keras.layers.Layer, call: _Call) -> Cost:
    out = _known(call.outputs[0], layer)
    return _size(layer.kernel) * math.prod(out[1:-1]), _bias_and_activation(layer, call)


def _conv(layer: keras.layers.Layer, call: _Call) -> Cost:
    return _size(layer.kernel) * _spatial(call.outputs[0], layer), _bias_and_activation(layer, call)


def _conv_transpose(layer: keras.layers.Layer, call: _Call) -> Cost:
    return _size(layer.kernel) * _spatial(call.inputs[0], layer), _bias_and_activation(layer, call)


def _depthwise(layer: keras.layers.Layer, call: _Call) -> Cost:
    return _size(layer.depthwise_kernel) * _spatial(call.outputs[0], layer), _bias_and_activation(layer, call)


def _separable(layer: keras.layers.Layer, call: _Call) -> Cost:
    kernels = _size(layer.depthwise_kernel) + _size(layer.pointwise_kernel)
    return kernels * _spatial(call.outputs[0], layer), _bias_and_activation(layer, call)


def einsum_macs(equation: str, input_shape: Shape, kernel_shape: Shape) -> int:
    """MACs per example of ``einsum(equation, input, kernel)``: the product of all index sizes.

    The batch index (axis 0 of the input, possibly inside ``...``) counts as size 1.
    """
    lhs, _ = equation.split("->")
    input_spec, kernel_spec = lhs.split(",")
    if "..." in kernel_spec:
        raise ComplexityError(f"einsum '{equation}': an ellipsis on the kernel side is not supported")
    dims = [1, *input_shape[1:]]
    sizes: dict[str, int] = dict(zip(kernel_spec, kernel_shape, strict=True))
    ellipsis = 1
    if "..." in input_spec:
        head, tail = input_spec.split("...")
        ellipsis = math.prod(dims[len(head) : len(dims) - len(tail)])
        sizes.update(zip(head, dims[: len(head)], strict=True))
        sizes.update(zip(tail, dims[len(dims) - len(tail) :], strict=True))
    else:
        sizes.update(zip(input_spec, dims, strict=True))
    return math.prod(int(s) for s in sizes.values()) * ellipsis


def _einsum_dense(layer: keras.layers.Layer, call: _Call) -> Cost:
    macs = einsum_macs(layer.equation, _known(call.inputs[0], layer), tuple(layer.kernel.shape))
    return macs, _bias_and_activation(layer, call)


def _attention_inputs(node: Any) -> tuple[Shape, Shape, Shape]:
    # MHA is called as mha(query, value, key=None, ...), positionally or by keyword.
    args, kwargs = list(node.call_args), dict(node.call_kwargs)
    names = ("query", "value", "key")
    tensors = {name: args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(names)}
    if tensors["key"] is None:
        tensors["key"] = tensors["value"]
    return _shape(tensors["query"]), _shape(tensors["value"]), _shape(tensors["key"])


def _projection(dense: keras.layers.Layer, positions: int) -> Cost:
    bias = getattr(dense, "bias", None)
    return _size(dense.kernel) * positions, (_size(bias) * positions if bias is not None else 0)


def _attention(layer: keras.layers.Layer, call: _Call) -> Cost:
    query, value, key = (_known(s, layer) for s in _attention_inputs(call.node))
    positions = {"q": math.prod(query[1:-1]), "k": math.prod(key[1:-1]), "v": math.prod(value[1:-1])}
    projections = [
        _projection(layer._query_dense, positions["q"]),
        _projection(layer._key_dense, positions["k"]),
        _projection(layer._value_dense, positions["v"]),
        _projection(layer._output_dense, positions["q"]),
    ]
    heads, key_dim = layer._num_heads, layer._key_dim
    value_dim = layer._value_dim or key_dim
    # Attention axes index the projected (batch, positions..., heads, dim) tensor, one rank more.
    axes = [a % (len(query) + 1) for a in (layer._attention_axes or range(1, len(query) - 1))]
    # Scores: one per head, query position and key position along the attention axes; the other
    # sequence axes act as batch axes shared by query and key.
    scores = heads * math.prod(query[1:-1]) * math.prod(key[a] for a in axes)
    macs = sum(m for m, _ in projections) + scores * (key_dim + value_dim)
    extra = sum(e for _, e in projections) + heads * key_dim * positions["q"] + 3 * scores
    return macs, extra


def _declared_cost(layer: keras.layers.Layer, call: _Call) -> Cost:
    """A layer that counts itself: ``effbench_cost(input_shapes, output_shapes) -> (MACs, elementwise)``."""
    inputs = [_known(shape, layer) for shape in call.inputs]
    outputs = [_known(shape, layer) for shape in call.outputs]
    return layer.effbench_cost(inputs, outputs)


def _declared_active_macs(layer: keras.layers.Layer, call: _Call) -> int:
    """A conditional layer's MACs per input: ``effbench_active_macs(input_shapes, output_shapes)``."""
    inputs = [_known(shape, layer) for shape in call.inputs]
    outputs = [_known(shape, layer) for shape in call.outputs]
    return layer.effbench_active_macs(inputs, outputs)


def _per_element(cost: int) -> Callable[[keras.layers.Layer, _Call], Cost]:
    def count(layer: keras.layers.Layer, call: _Call) -> Cost:
        return 0, cost * _out_elements(layer, call)

    return count


def _activation_layer(layer: keras.layers.Layer, call: _Call) -> Cost:
    return 0, _activation_cost(layer.activation) * _out_elements(layer, call)


def _merge(layer: keras.layers.Layer, call: _Call) -> Cost:
    return 0, (len(call.inputs) - 1) * _out_elements(layer, call)


def _pooling(layer: keras.layers.Layer, call: _Call) -> Cost:
    return 0, math.prod(layer.pool_size) * _out_elements(layer, call)


def _global_pooling(layer: keras.layers.Layer, call: _Call) -> Cost:
    return 0, sum(_elements(shape, layer) for shape in call.inputs)


def _upsampling(layer: keras.layers.Layer, call: _Call) -> Cost | None:
    return (0, 0) if getattr(layer, "interpolation", "nearest") == "nearest" else None


def _free(layer: keras.layers.Layer, call: _Call) -> Cost:
    return 0, 0


def _cost_table() -> list[tuple[tuple[type, ...], Callable[[keras.layers.Layer, _Call], Cost | None]]]:
    """Layer classes and their cost functions; the first ``isinstance`` match wins, so subclasses
    (SeparableConv, DepthwiseConv and transposed convs all derive from Conv) come before bases."""
    L = keras.layers
    return [
        ((L.SeparableConv1D, L.SeparableConv2D), _separable),
        ((L.DepthwiseConv1D, L.DepthwiseConv2D), _depthwise),
        ((L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose), _conv_transpose),
        ((L.Conv1D, L.Conv2D, L.Conv3D), _conv),
        ((L.Dense,), _dense),
        ((L.EinsumDense,), _einsum_dense),
        ((L.MultiHeadAttention,), _attention),
        ((L.BatchNormalization,), _per_element(2)),
        ((L.LayerNormalization, L.GroupNormalization), _per_element(5)),
        ((L.Rescaling, L.Normalization), _per_element(2)),
        ((L.Softmax,), _per_element(3)),
        ((L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU, L.PReLU), _per_element(1)),
        ((L.Activation,), _activation_layer),
        ((L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum), _merge),
        ((L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D), _pooling),
        ((L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D), _pooling),
        (
            (
                L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
                L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
            ),
            _global_pooling,
        ),
        ((L.UpSampling1D, L.UpSampling2D, L.UpSampling3D), _upsampling),
        (
            (
                L.InputLayer, L.Reshape, L.Flatten, L.Dropout, L.GaussianDropout, L.GaussianNoise,
                L.AlphaDropout, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D,
                L.Cropping2D, L.Cropping3D, L.Concatenate, L.Permute, L.RepeatVector, L.Masking,
                L.ActivityRegularization, L.Embedding,
            ),
            _free,
        ),
    ]


_COST_TABLE: list | None = None


def _cost_function(layer: keras.layers.Layer) -> Callable[[keras.layers.Layer, _Call], Cost | None] | None:
    global _COST_TABLE
    if _COST_TABLE is None:
        _COST_TABLE = _cost_table()
    if is_tfmot_quantize_layer(layer):
        return _free
    if hasattr(layer, "effbench_cost"):
        return _declared_cost
    for classes, function in _COST_TABLE:
        if isinstance(layer, classes):
            return function
    return None


# ---------------------------------------------------------------- weights


def _unwrapped(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer whose operations and weights ship: TFMOT wrappers are looked through."""
    if is_tfmot_quantize_wrapper(layer) or is_transparent_wrapper(layer):
        return layer.layer
    return layer


def _deployed_weights(layer: keras.layers.Layer) -> list[Any]:
    """The weight variables the deployed model keeps, each once.

    A layer, or a quantizer inside it, may list weights that only training uses in ``training_only_weights``
    (FDA's noise-adaptation MLP, zero at the end of training): they are not deployed, so not counted.
    TFMOT's QuantizeLayer holds only range bookkeeping. A TFMOT wrapper adds non-trainable
    range/step/mask variables of its own, and QuantizeWrapper replaces the wrapped layer's
    quantized kernels by tensors (so the kernels drop out of the inner layer's ``weights``) and
    keeps them in its own ``_trainable_weights`` instead; the deployed set is therefore the inner
    layer's weights plus those.
    """
    if is_tfmot_quantize_layer(layer):
        return []
    inner = _unwrapped(layer)
    candidates = list(inner.weights)
    if inner is not layer:
        candidates += list(getattr(layer, "_trainable_weights", []))
    modules = (inner, *inner.submodules)
    training_only = {id(v) for module in modules for v in getattr(module, "training_only_weights", ())}
    unique: dict[int, Any] = {}
    for variable in candidates:
        if id(variable) not in training_only and not _kind(variable).startswith(TFMOT_CLUSTER_BOOKKEEPING):
            unique.setdefault(id(variable), variable)
    return list(unique.values())


# TFMOT clustering's centroids and pulling indices: they reconstruct the kernel during training, and
# strip_clustering ships the kernel itself.
TFMOT_CLUSTER_BOOKKEEPING = ("cluster_centroids_", "pulling_indices_")


def _kind(variable: Any) -> str:
    return variable.name.rsplit("/", 1)[-1].split(":", 1)[0]


def _count_weights(row: LayerComplexity, weights: list[Any], bits: dict[str, int], trainable: set[int]) -> None:
    for variable in weights:
        size, nonzero = _size(variable), int(np.count_nonzero(variable.numpy()))
        row.params += size
        row.params_trainable += size if id(variable) in trainable else 0
        row.params_nonzero += nonzero
        kind = _kind(variable)
        if kind in KERNEL_KINDS:
            row.kernel_params += size
            row.kernel_nonzero += nonzero
        row.size_bits += size * bits.get(kind, FLOAT_BITS)


# ---------------------------------------------------------------- traversal


def _require_graph(model: keras.Model, name: str) -> None:
    if not getattr(model, "_is_graph_network", False):
        raise ComplexityError(
            f"model '{name}' ({type(model).__name__}) has no layer graph (a subclassed or unbuilt model); "
            "the complexity track needs a functional or Sequential model built with known input shapes, "
            "e.g. created from keras.Input(shape=...)"
        )


class _Counter:
    def __init__(self) -> None:
        self.report = ComplexityReport()
        self._seen: set[int] = set()

    def visit_model(self, model: keras.Model, prefix: str, repeats: int) -> None:
        _require_graph(model, prefix.rstrip("/") or model.name)
        # A layer's inbound_nodes include calls made while building other models (a layer reused
        # elsewhere); _nodes_by_depth holds this model's own calls, as keras' summary() uses it.
        in_graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
        for layer in model.layers:
            calls = [node for node in layer.inbound_nodes if id(node) in in_graph and not node.is_input]
            name = prefix + layer.name
            if isinstance(layer, keras.Model):
                self.visit_model(layer, name + "/", repeats * len(calls))
            else:
                self.visit_layer(layer, name, [_call_of(node) for node in calls], repeats)

    def visit_layer(self, layer: keras.layers.Layer, name: str, calls: list[_Call], repeats: int) -> None:
        inner = _unwrapped(layer)
        row = LayerComplexity(name, type(inner).__name__, calls=len(calls) * repeats)
        row.w_bits, row.a_bits = layer_bit_widths(layer)
        weights = [w for w in _deployed_weights(layer) if id(w) not in self._seen]
        self._seen.update(id(w) for w in weights)
        # A frozen layer's variables stay trainable=True; what trains is what the layer lists as trainable.
        trainable = {id(w) for w in layer.trainable_weights}
        _count_weights(row, weights, kernel_bit_widths(layer), trainable)
        self._count_operations(row, layer, inner, calls, repeats)
        for attribute in unknown_quantizers(layer):
            self.report.warnings.append(f"layer '{name}': {attribute} has no known precision, counted as 32 bits")
        self.report.layers.append(row)

    def _count_operations(
        self, row: LayerComplexity, layer: keras.layers.Layer, inner: keras.layers.Layer,
        calls: list[_Call], repeats: int,
    ) -> None:
        cost = _cost_function(inner)
        costs = [cost(inner, call) for call in calls] if cost is not None else [None]
        if any(c is None for c in costs):
            if _deployed_weights(layer):
                raise ComplexityError(
                    f"layer '{row.name}' of class {type(inner).__name__} has weights but the complexity "
                    "track does not know how to count its operations; add it to tracks/complexity.py "
                    "(or unwrap it) rather than let it be miscounted"
                )
            self.report.uncounted.append(f"{row.name} ({type(inner).__name__})")
            self.report.warnings.append(
                f"layer '{row.name}' ({type(inner).__name__}) is not a known layer type; counted as 0 FLOPs"
            )
            return
        macs = sum(m for m, _ in costs) * repeats
        row.macs = macs
        row.macs_nonzero = macs
        if cost in _KERNEL_MACS and row.kernel_params:
            row.macs_nonzero = macs * row.kernel_nonzero // row.kernel_params
        row.macs_active = macs
        if hasattr(inner, "effbench_active_macs"):
            row.conditional = True
            row.macs_active = sum(_declared_active_macs(inner, call) for call in calls) * repeats
        row.flops = 2 * macs + sum(e for _, e in costs) * repeats
        row.bops = macs * row.w_bits * row.a_bits
        row.ops = operations(macs, row.w_bits, row.a_bits)


# Cost functions whose MACs are all kernel MACs, each kernel element used equally often (macs_nonzero scales).
_KERNEL_MACS = (_dense, _conv, _conv_transpose, _depthwise, _einsum_dense)


# Binary operations one 64-bit instruction does: the divisor of OPs = BOPs / 64 + FLOPs.
BINARY_OPS_PER_INSTRUCTION = 64


def operations(macs: int, w_bits: int, a_bits: int) -> float:
    """OPs of ``macs`` MACs at ``(w_bits, a_bits)``: MACs w a / 64 when both are below 32 bits, else MACs."""
    if w_bits < FLOAT_BITS and a_bits < FLOAT_BITS:
        return macs * w_bits * a_bits / BINARY_OPS_PER_INSTRUCTION
    return float(macs)


def count_complexity(model: keras.Model) -> ComplexityReport:
    """Count params, MACs, FLOPs, BOPs, OPs and packed size of ``model`` from its layer graph.

    See the module docstring for the conventions. Raises :class:`ComplexityError` for models
    without a layer graph, unknown input shapes, and weighted layers of unknown type.
    """
    counter = _Counter()
    counter.visit_model(model, "", 1)
    return counter.report


@register_track(
    "complexity",
    summary="params, MACs, FLOPs, BOPs, OPs (BOPs/64 + FLOPs) and packed size, counted from the Keras graph",
    needs_task_data=False,
    metrics=METRICS,
)
class ComplexityTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        return count_complexity(context.model).metrics()
