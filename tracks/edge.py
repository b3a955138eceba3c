"""The edge track: the model converted to TFLite, its size, CPU latency and accuracy after conversion.

The model is converted into the variants of :mod:`tracks._tflite` (``float32``, ``float16``,
``dynamic``, ``int8``, and ``lce`` for binary models: a method that deploys as ``lce``, or a bare larq model with a
1-bit layer), and each variant is measured under ``scope`` = its name. A deployable that *is* a flatbuffer
(post-training quantization) is measured as itself under ``deployed`` (below), beside only the ``float32``
conversion of its Keras model, the reference:

- ``converted`` (bool, 1/0): whether the converter produced a flatbuffer. A failed conversion is an
  outcome, not a crash: ``converter_error`` (text) then holds the converter's message (for TFLite, one
  entry per rejected op with its error code, e.g. ``ERROR_NEEDS_FLEX_OPS``), cut to 500 characters.
- ``size_bytes`` (byte): size of the ``.tflite`` flatbuffer, kept as ``<variant>.tflite`` beside the record.
- ``litert_t1_*`` / ``litert_t2_*`` (``lce_t1_*`` / ``lce_t2_*`` for ``lce``): batch-1 latency with 1 and
  2 interpreter threads, as ``_median_ms``, ``_p90_ms``, ``_cv`` and ``_repeats`` (see
  :mod:`tracks._timing`, policy ``TIMING_POLICY``). One timed call is ``set_tensor`` of one input,
  ``invoke`` and ``get_tensor`` of the output, on an interpreter whose tensors are already allocated;
  loading the model and allocating are not timed. LiteRT (``ai_edge_litert.interpreter.Interpreter``)
  applies its default XNNPACK delegate; ``lce`` runs on LCE's interpreter, whose ``predict`` does the
  same copy-in, invoke, copy-out, with LCE's kernels for the binary ops and TFLite's builtin (not
  XNNPACK) kernels for the float ones, LCE's default. LCE's kernels are optimized for 64-bit ARM; on
  x86 a binary model runs slower than its float32 variant on XNNPACK, so ``lce`` latency measured
  here says nothing about a phone: :func:`effbench.benchmark_log.benchmark_model_metrics` records phone
  measurements.
- ``top1`` (ratio, with task data): fraction of the test split whose argmax output is the label.
- ``agreement`` (ratio, with task data): fraction of the test split where the variant's argmax equals
  the Keras model's argmax (1.0 = conversion changed no decision).
- Tasks of other kinds (``TaskSpec.kind``) get their primary metric of :mod:`tracks._quality` in place of
  ``top1`` and agreement as the kind needs: segmentation ``miou`` and ``agreement`` over pixels (the fraction
  of test pixels whose class is the Keras model's); CTR ``auc`` and ``agreement`` of the click decisions
  (p > 0.5); super-resolution ``psnr_y`` and ``agreement_psnr``, the PSNR (dB, peak 1) of the variant's
  output images against the Keras model's (at most 100 dB); regression ``rmse`` and ``agreement_rmse``, the
  RMS difference of the two models' outputs; enhancement ``si_snr`` and ``agreement_snr``, the SNR (dB) of the
  variant's output signals against the Keras model's (at most 100 dB).
- ``run_error`` (text): a variant that converted but that its interpreter could not run.

A pruned model (kernels at least ``SPARSE_MIN_SPARSITY`` zeros) is also converted as ``sparse``
(``Optimize.EXPERIMENTAL_SPARSITY``: sparse weights stored compressed), measured like the others, with
``xnnpack_sparse_rules_met`` / ``xnnpack_sparse_unmet`` (whether the model meets XNNPACK's sparse-inference
rules) and ``xnnpack_sparse_enabled_on_cpu`` (0 on x86 with AVX, where XNNPACK turns its sparse path off, so the
sparse file is smaller but not faster): :mod:`tracks._sparse`.

The ``edge-lce`` track measures only ``float32`` and ``lce`` (the pair a binarization sweep compares),
with the same metrics and scopes.

At the ``smoke`` budget (a check that every stage runs, not numbers to compare) only ``float32`` and the method's
own deployment variant (``lce`` for a binary operator) are converted, and both are timed with
``tracks._timing.SMOKE_POLICY``.

The ``int8`` variant also records ``calibration`` (text) and ``calibration_samples`` (count): the first
128 inputs of the run's training split (whose order depends on the run's seed), or, for a bare model
with no task, 128 standard-normal noise inputs drawn with a fixed seed (calibrating on noise gives
poor activation ranges; such an int8 latency is still meaningful, its accuracy would not be).

Whole-model text metrics name what ran: ``runtime`` (LiteRT version and delegate) and ``converter``
(TensorFlow version); the ``lce`` scope has its own ``runtime`` and ``converter``.

The method's own deployment, under the scope ``deployed``: a deployable that *is* a flatbuffer (post-training
quantization) is measured as it is (no conversion), with the same metrics; a method that names its
deployment variant (``Method.deployment``: ``int8`` for QAT, ``lce`` for a binary network) gets that
variant's metrics again under ``deployed``. The whole-model text ``deployment`` says which.

Phone measurements (``effbench device-result``): :mod:`effbench.benchmark_log` turns the output of TFLite's
``benchmark_model`` (or LCE's ``lce_benchmark_model``, which prints the same lines) into ``device_*`` metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

# The benchmark-log parser lives in the core (effbench device-result uses it); re-exported for this track's users.
from effbench.benchmark_log import benchmark_model_metrics, parse_benchmark_model_output  # noqa: F401
from effbench.bits import layer_bit_widths
from effbench.registry import MetricSpec, TaskSpec, register_track
from effbench.tf import keras, tf
from effbench.tflite import SPARSE_VARIANT
from effbench.track import MeasureContext, Metric, Track
from tracks import _quality, _sparse, _tflite
from tracks._timing import TimingPolicy, policy_for, time_calls, timing_specs

# A smoke run (a check that every stage runs, not numbers to compare) converts float32 and the method's own
# deployment only, and times them with the smoke policy (tracks._timing).
SMOKE = "smoke"
# Lighter than the default policy: up to 5 variants x 2 thread counts are timed per model.
TIMING_POLICY = TimingPolicy(warmup=5, min_repeats=20, min_seconds=0.5, max_seconds=3.0)
THREADS = (1, 2)
# The scope of the method's own deployment: the flatbuffer it deploys, or the variant it names.
DEPLOYED = "deployed"
# Threads of the interpreter that scores the test split (accuracy does not depend on it).
EVAL_THREADS = 2
KERAS_EVAL_BATCH = 256
# Identical outputs would have an infinite PSNR; agreement_psnr is capped here.
MAX_AGREEMENT_PSNR = 100.0
# The kinds whose outputs are values (images, signals, numbers), compared with Keras's as values, not decisions.
VALUE_KINDS = ("super-resolution", "regression", "enhancement")
# A model whose kernels are at least this sparse (a pruned one) is also converted as the sparse flatbuffer.
SPARSE_MIN_SPARSITY = 0.2
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")
_CONVERSION = ("conversion",)
METRICS = (
    MetricSpec("size_bytes", "byte", "lower", "cost", _CONVERSION),
    *timing_specs("<runtime>_t<threads>", _CONVERSION),
    MetricSpec("top1", "ratio", "higher", "quality", _CONVERSION),
    MetricSpec("agreement", "ratio", "higher", "quality", _CONVERSION),
    MetricSpec("miou", "ratio", "higher", "quality", _CONVERSION),
    MetricSpec("auc", "ratio", "higher", "quality", _CONVERSION),
    MetricSpec("psnr_y", "dB", "higher", "quality", _CONVERSION),
    MetricSpec("agreement_psnr", "dB", "higher", "quality", _CONVERSION),
    MetricSpec("rmse", "value", "lower", "quality", _CONVERSION),
    MetricSpec("agreement_rmse", "value", "lower", "quality", _CONVERSION),
    MetricSpec("si_snr", "dB", "higher", "quality", _CONVERSION),
    MetricSpec("agreement_snr", "dB", "higher", "quality", _CONVERSION),
    MetricSpec("converted", "bool", "higher", "info", _CONVERSION),
    MetricSpec("converter_error", "text", "none", "info", _CONVERSION),
    MetricSpec("run_error", "text", "none", "info", _CONVERSION),
    MetricSpec("calibration", "text", "none", "info", _CONVERSION),
    MetricSpec("calibration_samples", "count", "none", "info", _CONVERSION),
    MetricSpec("runtime", "text", "none", "info", ("", *_CONVERSION)),
    MetricSpec("converter", "text", "none", "info", ("", *_CONVERSION)),
    # The sparse flatbuffer of a pruned model: does it meet XNNPACK's sparse-inference rules, and does this CPU
    # let XNNPACK use them (tracks/_sparse.py).
    MetricSpec("xnnpack_sparse_rules_met", "bool", "higher", "info", _CONVERSION),
    MetricSpec("xnnpack_sparse_unmet", "text", "none", "info", _CONVERSION),
    MetricSpec("xnnpack_sparse_enabled_on_cpu", "bool", "none", "info", _CONVERSION),
    # Which of the conversions is the method's own deployment (its metrics are repeated under ``deployed``).
    MetricSpec("deployment", "text", "none", "info"),
)


@dataclass(frozen=True)
class Backend:
    """An interpreter: its metric prefix, a batch-1 call to time, and a whole-array predict."""

    prefix: str
    single_call: Callable[[bytes, int, np.ndarray], Callable[[], object]]
    predict: Callable[[bytes, np.ndarray, int], np.ndarray]


LITERT = Backend("litert", _tflite.litert_single_call, _tflite.litert_predict)
LCE = Backend("lce", _tflite.lce_single_call, _tflite.lce_predict)


@dataclass(frozen=True)
class Inputs:
    """What every variant is fed: one timing input, and the test split with Keras's decisions.

    ``keras_argmax`` holds the Keras model's decisions (per example, or per pixel for segmentation);
    ``keras_outputs`` its raw outputs, which super-resolution and regression compare with. ``task`` is the
    task's spec (None: classification with no other context).
    """

    sample: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    keras_argmax: np.ndarray | None = None
    keras_outputs: np.ndarray | None = None
    task: TaskSpec | None = None
    # The image each test example is a patch of (super-resolution; Task.test_groups), or None.
    groups: np.ndarray | None = None


def runtime_metrics(with_lce: bool) -> list[Metric]:
    litert = f"LiteRT {_tflite.litert_version()} (ai_edge_litert Interpreter, XNNPACK delegate, CPU)"
    metrics = [
        Metric("runtime", litert, "text"),
        Metric("converter", f"TensorFlow {tf.__version__} TFLiteConverter.from_saved_model", "text"),
    ]
    if with_lce:
        version = _tflite.lce_version()
        lce = f"Larq Compute Engine {version} interpreter (LCE kernels, builtin float kernels, CPU)"
        metrics += [
            Metric("runtime", lce, "text", _tflite.LCE_VARIANT),
            Metric("converter", f"larq_compute_engine {version} convert_saved_model", "text", _tflite.LCE_VARIANT),
        ]
    return metrics


def calibration_metrics(data: _tflite.Calibration) -> list[Metric]:
    return [
        Metric("calibration", data.source, "text", "int8"),
        Metric("calibration_samples", len(data.samples), "count", "int8"),
    ]


def latency_metrics(
    backend: Backend, content: bytes, sample: np.ndarray, variant: str, policy: TimingPolicy
) -> list[Metric]:
    metrics = []
    for threads in THREADS:
        timing = time_calls(backend.single_call(content, threads, sample), policy)
        metrics += timing.metrics(f"{backend.prefix}_t{threads}", scope=variant)
    return metrics


def accuracy_metrics(backend: Backend, content: bytes, inputs: Inputs, variant: str) -> list[Metric]:
    outputs = np.asarray(backend.predict(content, inputs.x_test, EVAL_THREADS))
    kind = inputs.task.kind if inputs.task is not None else "classification"
    if kind in VALUE_KINDS:
        return [Metric(m.name, m.value, m.unit, variant) for m in value_agreement(outputs, inputs)]
    predicted = _quality.decisions(kind, outputs)
    agreement = Metric("agreement", float(np.mean(predicted == inputs.keras_argmax)), "ratio", variant)
    if kind == "segmentation":
        confusion = _quality.confusion_matrix(predicted, inputs.y_test, inputs.task.num_classes)
        return [Metric("miou", _quality.mean_iou(confusion), "ratio", variant), agreement]
    if kind == "ctr":
        auc = _quality.roc_auc(_quality.click_probability(outputs), inputs.y_test)
        return [Metric("auc", auc, "ratio", variant), agreement]
    return [Metric("top1", float(np.mean(predicted == inputs.y_test)), "ratio", variant), agreement]


def value_agreement(outputs: np.ndarray, inputs: Inputs) -> list[Metric]:
    """A super-resolution, enhancement or regression variant's primary metric, and how close its outputs are to
    Keras's."""
    spec = inputs.task
    if spec.kind == "enhancement":
        value = float(np.mean(_quality.si_snr(outputs, inputs.y_test)))
        agreement = min(_quality.output_snr(outputs, inputs.keras_outputs), MAX_AGREEMENT_PSNR)
        return [Metric("si_snr", value, "dB"), Metric("agreement_snr", agreement, "dB")]
    if spec.kind == "super-resolution":
        scale = spec.output_shape[0] // spec.input_shape[0]
        value_psnr, _ = _quality.super_resolution_scores(outputs, inputs.y_test, scale, inputs.groups)
        agreement = min(_quality.output_psnr(outputs, inputs.keras_outputs), MAX_AGREEMENT_PSNR)
        return [Metric("psnr_y", value_psnr, "dB"), Metric("agreement_psnr", agreement, "dB")]
    rmse = next(m for m in _quality.regression_metrics(outputs, inputs.y_test) if m.name == "rmse")
    difference = float(np.sqrt(np.mean((outputs - inputs.keras_outputs.reshape(outputs.shape)) ** 2)))
    return [rmse, Metric("agreement_rmse", difference, "value")]


def measure_variant(
    variant: str, convert: Callable[[], bytes], backend: Backend, inputs: Inputs, context: MeasureContext
) -> list[Metric]:
    """Convert, keep the file, time and score one variant; failures become metrics."""
    try:
        content = convert()
    except Exception as error:  # noqa: BLE001 - a rejected model is a result to record
        return [
            Metric("converted", 0, "bool", variant),
            Metric("converter_error", _tflite.error_text(error), "text", variant),
        ]
    metrics = [Metric("converted", 1, "bool", variant), Metric("size_bytes", len(content), "byte", variant)]
    if context.files_dir is not None:
        (context.files_dir / f"{variant}.tflite").write_bytes(content)
    try:
        metrics += latency_metrics(backend, content, inputs.sample, variant, policy_for(context.budget, TIMING_POLICY))
        if inputs.x_test is not None:
            metrics += accuracy_metrics(backend, content, inputs, variant)
    except Exception as error:  # noqa: BLE001 - converted but not runnable is a result too
        metrics.append(Metric("run_error", _tflite.error_text(error), "text", variant))
    return metrics


def track_inputs(context: MeasureContext, data: _tflite.Calibration) -> Inputs:
    splits = context.splits
    if splits is None:
        return Inputs(sample=data.samples[0])
    outputs = np.asarray(context.model.predict(splits.x_test, batch_size=KERAS_EVAL_BATCH, verbose=0))
    spec = context.task.spec if context.task is not None else None
    kind = spec.kind if spec is not None else "classification"
    labels = splits.y_test if kind in VALUE_KINDS else splits.y_test.astype(int)
    decided = None if kind in VALUE_KINDS else _quality.decisions(kind, outputs)
    groups = context.task.test_groups() if context.task is not None else None
    return Inputs(splits.x_test[0], splits.x_test, labels, decided, outputs, spec, groups)


def lce_applies(model: keras.Model, deployment: str | None) -> bool:
    """Whether Larq Compute Engine converts the model: a method that deploys as ``lce`` (the binarization suite),
    or, where no deployment is declared (a bare model file), a larq model with a 1-bit layer. A larq model of
    multi-bit fake quantizers (the quantization suite's) has nothing for LCE's binary kernels."""
    if deployment is not None:
        return deployment == _tflite.LCE_VARIANT
    return _tflite.has_larq_layers(model) and any(1 in layer_bit_widths(layer) for layer in model.layers)


def kernel_sparsity(model: keras.Model) -> float:
    """The fraction of zeros among the model's conv / dense kernel elements."""
    kernels = [np.asarray(w) for w in model.weights if w.name.split("/")[-1].split(":")[0] in KERNEL_NAMES]
    total = sum(k.size for k in kernels)
    return float(sum(np.count_nonzero(k == 0) for k in kernels) / total) if total else 0.0


def deployed_metrics(measured: list[Metric], context: MeasureContext, inputs: Inputs) -> list[Metric]:
    """The method's own deployment under the scope ``deployed``: its flatbuffer, or its declared variant's numbers."""
    if context.tflite is not None:
        return [
            Metric("deployment", "flatbuffer", "text"),
            *measure_variant(DEPLOYED, lambda: context.tflite, LITERT, inputs, context),
        ]
    if context.deployment is None:
        return []
    chosen = [Metric(m.name, m.value, m.unit, DEPLOYED) for m in measured if m.scope == context.deployment]
    return [Metric("deployment", context.deployment, "text"), *chosen] if chosen else []


@register_track(
    "edge",
    summary="TFLite float32/float16/dynamic/int8 (+LCE for larq): size, LiteRT latency, top-1 after conversion",
    needs_task_data=False,
    metrics=METRICS,
)
class EdgeTrack(Track):
    # The TFLite variants converted and measured; LCE is added for models with larq layers, and the sparse
    # flatbuffer for pruned models (if sparse_variant).
    variants: ClassVar[tuple[str, ...]] = _tflite.TFLITE_VARIANTS
    sparse_variant: ClassVar[bool] = True

    def measure(self, context: MeasureContext) -> list[Metric]:
        model = context.model
        data = _tflite.calibration(model, context.splits)
        inputs = track_inputs(context, data)
        with_lce = context.tflite is None and lce_applies(model, context.deployment)
        metrics = runtime_metrics(with_lce)
        # A deployable that is a flatbuffer is measured as itself (deployed_metrics), beside its Keras model's
        # float32 conversion as the reference: converting its simulation every other way would measure nothing.
        variants = self.variants if context.tflite is None else ("float32",)
        if context.budget == SMOKE:
            variants = tuple(variant for variant in variants if variant in ("float32", context.deployment))
        if "int8" in variants:
            metrics += calibration_metrics(data)
        with _tflite.exported(model) as source:  # one export for every conversion below
            for variant in variants:
                convert = functools.partial(_tflite.convert, source, variant, data)
                metrics += measure_variant(variant, convert, LITERT, inputs, context)
            if with_lce:
                convert = functools.partial(_tflite.convert_lce, source)
                metrics += measure_variant(_tflite.LCE_VARIANT, convert, LCE, inputs, context)
            if self.sparse_variant and kernel_sparsity(model) >= SPARSE_MIN_SPARSITY:
                convert = functools.partial(_tflite.convert, source, SPARSE_VARIANT, data)
                metrics += measure_variant(SPARSE_VARIANT, convert, LITERT, inputs, context)
                metrics += _sparse.sparse_inference_metrics(model)
        return metrics + deployed_metrics(metrics, context, inputs)


@register_track(
    "edge-lce",
    summary="the binary deployment pair: LCE model and the float32 TFLite model of the same network",
    needs_task_data=False,
    metrics=METRICS,
)
class EdgeLceTrack(EdgeTrack):
    """The edge track cut to what a binarization sweep compares: ``float32`` (LiteRT, XNNPACK) and ``lce``.

    The same metrics, under the same scopes, as :class:`EdgeTrack` for those two variants; the float16,
    dynamic-range and int8 conversions (a third of a binary model's edge run, on two CPU cores) are
    left out. A model without larq layers gets ``float32`` only.
    """

    variants = ("float32",)
    sparse_variant = False
