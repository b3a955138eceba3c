r"""Mixed-precision PTQ from Hessian sensitivities augmented with inter-layer dependencies, bisection-searched.

Starting from a high-precision baseline (float16 everywhere by default, the paper's 16-bit baseline), each
conv / dense layer :math:`l` (kernel :math:`W_l`, :math:`n_l` elements) gets a sensitivity

.. math:: s_l = \underbrace{\tfrac12\,\frac{\operatorname{Tr}(H_{ll})}{n_l}\,\lVert Q(W_l) - W_l\rVert_2^2}_{\Omega_l}
          \;+\; \tfrac12 \sum_{m \in \{l-1,\, l+1\}} D_{lm},\qquad
          D_{lm} = \Delta L_{\{l, m\}} - \Delta L_{\{l\}} - \Delta L_{\{m\}}

:math:`\Omega_l` is the second-order loss change of quantizing layer :math:`l` to the low precision (``Q``, the
per-channel max-abs grid) under an isotropic Hessian block of average curvature :math:`\operatorname{Tr}(H_{ll})
/ n_l`; the trace is Hutchinson's estimate (Rademacher probes, Hessian-vector products from nested
``GradientTape`` s; :func:`~suites.quantization._mixed_precision.hutchinson_traces`) of the task loss on a
labelled calibration batch, float model. :math:`D_{lm}` is the inter-layer dependency of adjacent layers (model
order): the measured loss change when both are quantized together minus their two single changes (weights
quantized in place, everything else float), each pair's term shared half-half between its two layers.
Layers are ranked by :math:`s_l`, least sensitive first; for each accuracy budget :math:`\delta` (option
``budgets``, the largest relative top-1 drop allowed on a held-out split; ``0.0001`` is the paper's "within
99.99% of the baseline"), a bisection over :math:`k` finds the most layers :math:`k` such that the model with the
:math:`k` least sensitive layers at the low precision keeps top-1 :math:`\ge (1 - \delta)` times the baseline's
(the accuracy is taken to fall with :math:`k`, as the paper's search assumes).

**Precisions** (option ``precisions``, ``high/low``): ``16/8`` (default, the paper's: float16 and int8). That maps
to TFLite, so each deployable's ``tflite`` is a per-layer int8 / float16 flatbuffer: the float32 conversion
requantized by ai-edge-quantizer, int8 layers static (int8 per-channel weights, int8 activations calibrated on
the calibration batch), float16 layers with float16 weights (float32 arithmetic on CPU, as TFLite's float16
variant); every other op stays float32, with (de)quantize ops between. Its Keras model simulates the same
mix (float16 layers round weights and inputs to float16, the paper's 16-bit compute, where the flatbuffer keeps
their activations float32; int8 layers are 8/8 fake quantized) and its bit map says (16, 16) / (8, 8);
``simulated: false``. The other pairs (``8/4``, ``8/2``, ``16/4``, ...) have no TFLite kernels below 8 bits: the
deployable is the Keras fake-quantized model (``simulated: true``, low layers ``(low, 8)``), unless every layer
ends at 8/8 (then the int8 flatbuffer). Each budget is a deployable, the first the main one, the others
``max-drop=<d>``.

Deviations (small-faithful): the abstract does not give the dependency term's form; it is an assumption,
modelled as above (measured joint loss change minus the singles), over adjacent pairs only. The Hessian's
scale enters as the average trace times the perturbation (HAWQ-v2's form). The calibration batch is the first
training inputs with their labels (``smoke`` 32, ``quick`` 128, ``paper`` 256), Hutchinson probes ``smoke`` 2,
``quick`` 16, ``paper`` 64, and the held-out split the first ``smoke`` 64 / ``quick`` 512 / ``paper`` all
validation examples. The paper measures latency on GPUs and CPUs with mixed-precision kernels; here the edge
track measures the flatbuffer. Classification tasks only (the budget is on top-1).

Paper: Schaefer et al., "Augmenting Hessians with Inter-Layer Dependencies for Mixed-Precision Post-Training
Quantization", 2023 (https://arxiv.org/abs/2306.04879).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import larq
import numpy as np

from effbench.method import Artifact, Deployable
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.tflite import Calibration, convert
from effbench.training import TrainContext, task_loss
from suites.quantization import _mixed_precision as mp
from suites.quantization._uniform import ActivationQuantizer, WeightQuantizer, quantizable_layer_names
from suites.quantization.base import QuantizationMethod, int8_flatbuffer

HALF_BITS = 16
HIGH_BITS = (HALF_BITS, 8)
SAMPLES = {"smoke": 32, "quick": 128, "paper": 256}
PROBES = {"smoke": 2, "quick": 16, "paper": 64}
HELD_OUT = {"smoke": 64, "quick": 512, "paper": None}


@keras.utils.register_keras_serializable(package="effbench.quantization")
class Float16Quantizer(larq.quantizers._BaseQuantizer):
    """Rounds a tensor to float16 and back (``precision`` 16 for the counts); the gradient passes straight."""

    precision = HALF_BITS

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x + tf.stop_gradient(tf.cast(tf.cast(x, tf.float16), x.dtype) - x)


def weight_quantizer(bits: int) -> larq.quantizers._BaseQuantizer:
    return Float16Quantizer() if bits == HALF_BITS else WeightQuantizer(bits)


def activation_quantizer(bits: int) -> larq.quantizers._BaseQuantizer:
    return Float16Quantizer() if bits == HALF_BITS else ActivationQuantizer(bits)


def parse_precisions(value: Any) -> tuple[int, int]:
    """``"high/low"`` -> (high, low): high 16 or 8, low 8, 4 or 2, low below high."""
    try:
        high, low = (int(part) for part in str(value).split("/"))
    except ValueError:
        raise ValueError(f"option 'precisions' is '{value}': expected high/low bits, e.g. 16/8") from None
    if high not in HIGH_BITS or low not in mp.CANDIDATE_BITS or low >= high:
        raise ValueError(f"option 'precisions' is '{value}': high must be 16 or 8, low 8, 4 or 2 and below high")
    return high, low


def dependency_scores(
    names: list[str], single: dict[str, float], pair: dict[tuple[str, str], float]
) -> dict[str, float]:
    """Half of each adjacent pair's dependency ``D = dL(pair) - dL(l) - dL(m)`` to each of its two layers."""
    scores = dict.fromkeys(names, 0.0)
    for (first, second), together in pair.items():
        dependency = together - single[first] - single[second]
        scores[first] += dependency / 2
        scores[second] += dependency / 2
    return scores


def bisect_layers(count: int, feasible: Callable[[int], bool]) -> int:
    """The largest ``k`` in [0, count] with ``feasible(k)``, given ``feasible(0)`` and monotone feasibility."""
    low, high = 0, count
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if feasible(middle) else (low, middle - 1)
    return low


def int8_float16_flatbuffer(float_model: keras.Model, int8_layers: set[str], samples: np.ndarray) -> bytes:
    """The float32 flatbuffer with ``int8_layers`` static int8 and every other conv / dense layer float16."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as flat

    content = convert(float_model, "float32", Calibration(samples, "the hessian-mp calibration batch"))
    model = flat.read_model(content)
    graph = model.subgraphs[0]
    linear = quantizable_layer_names(float_model)
    requantizer = quantizer.Quantizer(content)
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex].builtinCode
        if code not in (qtyping.BuiltinOperator.CONV_2D, qtyping.BuiltinOperator.DEPTHWISE_CONV_2D,
                        qtyping.BuiltinOperator.FULLY_CONNECTED):  # fmt: skip
            continue
        weights = flat.get_tensor_name(graph.tensors[op.inputs[1]])
        layer = next(name for name in linear if f"/{name}/" in weights)
        scope, operation = f"^{re.escape(flat.get_op_scope(op, graph.tensors))}$", flat.TFL_OP_CODE_TO_NAME[code]
        if layer in int8_layers:
            requantizer.add_static_config(scope, operation, activation_num_bits=8, weight_num_bits=8)
        else:
            requantizer.add_weight_only_config(scope, operation, HALF_BITS, algorithm_key=AlgorithmName.FLOAT_CASTING)
    signature, spec = next(iter(Interpreter(model_content=content).get_signature_list().items()))
    batches = [{spec["inputs"][0]: sample[None]} for sample in samples.astype(np.float32)]
    # Quiet: the calibrator's progress bar and LiteRT's note on preserving all tensors (it does so to read ranges).
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)
        calibration = requantizer.calibrate({signature: batches}) if requantizer.need_calibration else None
        return bytes(requantizer.quantize(calibration, enable_progress_report=False).quantized_model)


@register_method(
    "hessian-mp",
    suite="quantization",
    kind="compression",
    paper=Paper(
        "Augmenting Hessians with Inter-Layer Dependencies for Mixed-Precision Post-Training Quantization",
        2023,
        "https://arxiv.org/abs/2306.04879",
    ),
    summary="PTQ: Hutchinson Hessian-trace sensitivity x quantization perturbation plus measured adjacent-pair "
    "dependencies ranks the layers; bisection moves the least sensitive ones from float16 to int8 within an "
    "accuracy budget; per-layer int8/float16 TFLite",
    taxonomy=Taxonomy(weight_bits=8, activation_bits=8, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class HessianMixedPrecision(QuantizationMethod):
    default_options: ClassVar[dict[str, Any]] = {**QuantizationMethod.default_options, "budgets": "0.0001/0.01/0.05",
                                                 "precisions": "16/8"}  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.budgets = mp.parse_budgets(self.options["budgets"], "budgets")
        self.high, self.low = parse_precisions(self.options["precisions"])

    def deployable_names(self) -> tuple[str, ...]:
        return mp.budget_names("max-drop", self.budgets)

    def sensitivities(
        self, float_model: keras.Model, context: TrainContext, x: np.ndarray, y: np.ndarray
    ) -> dict[str, dict[str, float]]:
        """Per layer: average Hessian trace, perturbation, Omega, dependency and the total score s_l."""
        names = quantizable_layer_names(float_model)
        layers = [float_model.get_layer(name) for name in names]
        loss_of = task_loss(context.task.spec)

        def loss() -> tf.Tensor:
            return loss_of(y, float_model(x, training=False))

        kernels = [mp.kernel_variable(layer) for layer in layers]
        traces = mp.hutchinson_traces(loss, kernels, PROBES[context.budget], context.seed)
        base = float(loss())

        def delta(*group: str) -> float:
            with mp.kernels_quantized(float_model, group, self.low):
                return float(loss()) - base

        single = {name: delta(name) for name in names}
        pair = {(first, second): delta(first, second) for first, second in zip(names, names[1:], strict=False)}
        dependency = dependency_scores(names, single, pair)
        rows = {}
        for name, layer, kernel, trace in zip(names, layers, kernels, traces, strict=True):
            perturbation = float(tf.reduce_sum((mp.quantized_kernel(layer, self.low) - kernel) ** 2))
            average_trace = float(trace) / int(np.prod(kernel.shape))
            omega = 0.5 * average_trace * perturbation
            rows[name] = {"average_trace": average_trace, "perturbation": perturbation, "omega": omega,
                          "dependency": dependency[name], "score": omega + dependency[name]}  # fmt: skip
        return rows

    def bit_widths(self, names: list[str], low_layers: set[str]) -> dict[str, tuple[int, int]]:
        high = (self.high, self.high if self.high == HALF_BITS else mp.ACTIVATION_BITS)
        return {name: (self.low, mp.ACTIVATION_BITS) if name in low_layers else high for name in names}

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        if context.task.spec.kind != "classification":
            raise ValueError(f"hessian-mp's budget is on top-1; task '{context.task.spec.slug}' is no classification")
        count = SAMPLES[context.budget]
        x = context.splits.x_train[:count].astype(np.float32)
        y = context.splits.y_train[:count]
        held = HELD_OUT[context.budget]
        x_held, y_held = context.splits.x_val[:held].astype(np.float32), context.splits.y_val[:held]
        calibration = {"split": "train", "samples": int(len(x)), "selection": "first", "labels": True,
                       "held_out": {"split": "val", "samples": int(len(x_held)), "selection": "first"}}  # fmt: skip
        rows = self.sensitivities(float_model, context, x, y)
        ranking = sorted(rows, key=lambda name: rows[name]["score"])
        names = quantizable_layer_names(float_model)
        models: dict[int, keras.Model] = {}
        accuracy: dict[int, float] = {}

        def top1(k: int) -> float:
            if k not in accuracy:
                models[k] = mp.fake_quantized(float_model, self.bit_widths(names, set(ranking[:k])), x,
                                              weight_quantizer, activation_quantizer)  # fmt: skip
                accuracy[k] = float(np.mean(np.argmax(mp.predict(models[k], x_held), axis=-1) == y_held))
            return accuracy[k]

        baseline = top1(0)
        flatbuffers: dict[int, bytes | None] = {}
        deployables = {}
        for name, budget in zip(self.deployable_names(), self.budgets, strict=True):
            k = bisect_layers(len(ranking), lambda k, budget=budget: top1(k) >= (1 - budget) * baseline)
            if k not in flatbuffers:
                flatbuffers[k] = self.flatbuffer(float_model, self.bit_widths(names, set(ranking[:k])), x)
            tflite = flatbuffers[k]
            facts = mp.deployable_facts(
                models[k], tflite, calibration, {"max_relative_drop": budget},
                precisions=[self.high, self.low], ranking=ranking, low_precision_layers=k,
                held_out_top1=accuracy[k], baseline_top1=baseline,
                sensitivity={layer: rows[layer]["score"] for layer in ranking},
            )  # fmt: skip
            deployables[name] = Deployable(models[k], tflite, facts)
        return Artifact.of(deployables)

    def flatbuffer(self, float_model: keras.Model, bits: dict[str, tuple[int, int]], x: np.ndarray) -> bytes | None:
        """The TFLite deployment of a mix where TFLite has kernels for it: 8/8 everywhere, or int8 / float16."""
        if all(widths == (8, 8) for widths in bits.values()):
            return int8_flatbuffer(float_model, x, f"first {len(x)} training inputs")
        if {w for w, _ in bits.values()} <= {8, HALF_BITS}:
            return int8_float16_flatbuffer(float_model, {name for name, (w, _) in bits.items() if w == 8}, x)
        return None
