"""Conversion to TFLite flatbuffers and the interpreters that run them, for the edge track.

Every variant keeps float32 inputs and outputs (the int8 variant quantizes and dequantizes inside the
graph), so the same test inputs feed every variant and their outputs are compared directly.

- ``float32``: ``TFLiteConverter.from_keras_model`` with no optimization.
- ``float16``: ``Optimize.DEFAULT`` and ``supported_types = [tf.float16]``: weights stored as float16,
  dequantized to float32 when the model is loaded; arithmetic stays float32 on CPU.
- ``dynamic``: ``Optimize.DEFAULT`` with no data: int8 weights; activations are quantized on the fly
  by the kernels that support it, the rest computes in float.
- ``int8``: full integer quantization: ``Optimize.DEFAULT``, builtin int8 ops only, activation ranges
  calibrated on a representative dataset of ``CALIBRATION_SAMPLES`` inputs.
- ``lce``: Larq Compute Engine's converter (models with larq layers only): binarized layers become
  LCE's custom ``LceBconv2d``/``LceQuantize``/... ops, which only LCE's interpreter (or an LCE-built
  ``lce_benchmark_model``) can run; LiteRT rejects them as unresolved custom ops.

LiteRT and LCE are imported where they are used: every command imports every track module.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from effbench.console import native_stderr_filtered
from effbench.tasks.base import Splits
from effbench.tf import keras, tf
from effbench.verify import litert_predict  # noqa: F401 - the tracks' batched LiteRT evaluation is the core's

if TYPE_CHECKING:
    from larq_compute_engine.tflite.python.interpreter import Interpreter as LceInterpreter

TFLITE_VARIANTS = ("float32", "float16", "dynamic", "int8")
LCE_VARIANT = "lce"
CALIBRATION_SAMPLES = 128
# Bare models (no task) are calibrated on noise drawn with this seed, so reruns convert identically.
NOISE_SEED = 0
ERROR_CHARS = 500


@dataclass(frozen=True)
class Calibration:
    """The int8 representative dataset and where it came from (recorded with the int8 variant)."""

    samples: np.ndarray
    source: str


def input_shape(model: keras.Model) -> tuple[int, ...]:
    """The per-example input shape; the edge track needs one input with every dimension known."""
    if len(model.inputs) != 1:
        raise ValueError(f"the edge track needs a model with one input; this one has {len(model.inputs)}")
    shape = tuple(model.inputs[0].shape[1:])
    if any(dim is None for dim in shape):
        raise ValueError(f"input shape {shape} has free dimensions: rebuild the model on a fixed input shape")
    return shape


def calibration(model: keras.Model, splits: Splits | None) -> Calibration:
    """The first ``CALIBRATION_SAMPLES`` training inputs, or seeded standard-normal noise without a task."""
    if splits is not None:
        samples = splits.x_train[:CALIBRATION_SAMPLES].astype(np.float32)
        return Calibration(samples, f"first {len(samples)} examples of the run's training split")
    noise = np.random.default_rng(NOISE_SEED).standard_normal((CALIBRATION_SAMPLES, *input_shape(model)))
    return Calibration(
        noise.astype(np.float32),
        f"{CALIBRATION_SAMPLES} standard-normal noise inputs (seed {NOISE_SEED}): no task data",
    )


def convert(model: keras.Model, variant: str, data: Calibration) -> bytes:
    """The flatbuffer of one of ``TFLITE_VARIANTS``; raises what the converter raises."""
    if variant not in TFLITE_VARIANTS:
        raise ValueError(f"unknown TFLite variant '{variant}'; expected one of {', '.join(TFLITE_VARIANTS)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.representative_dataset = lambda: ([sample[None]] for sample in data.samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Float in and out, so every variant takes the same inputs and is scored the same way.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    with native_stderr_filtered():  # the converter prints its settings from C++
        return converter.convert()


def convert_lce(model: keras.Model) -> bytes:
    """Larq Compute Engine's flatbuffer (float32 input and output, batch fixed to 1 by LCE)."""
    from larq_compute_engine import convert_keras_model

    with native_stderr_filtered():
        return convert_keras_model(model)


def has_larq_layers(model: keras.Model) -> bool:
    """True when any (nested) layer or quantizer of the model is larq's or subclasses one of larq's.

    Classes are matched by their module names along the MRO, so larq is imported only when a model uses it;
    methods' own binary layers (a ``QuantConv2D`` with a learned scale) count too.
    """
    return any(
        cls.__module__.startswith("larq.") for module in model.submodules for cls in type(module).__mro__
    )


def error_text(error: Exception) -> str:
    """A short, readable account of a failed conversion or run.

    The TFLite converter's message starts with MLIR source locations; its ``errors`` list holds one
    entry per offending op, whose first line names the op and whose last line gives the error code.
    """
    details = [d.error_message for d in getattr(error, "errors", []) if d.error_message]
    text = "; ".join(map(_converter_error_line, details)) if details else f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:ERROR_CHARS]


def _converter_error_line(message: str) -> str:
    lines = message.splitlines()
    code = lines[-1].removeprefix("Error code: ")
    return f"{lines[0]} [{code}]" if code != lines[-1] else lines[0]


def litert_version() -> str:
    return importlib.metadata.version("ai-edge-litert")


def lce_version() -> str:
    return importlib.metadata.version("larq-compute-engine")


def litert_single_call(content: bytes, threads: int, sample: np.ndarray) -> Callable[[], np.ndarray]:
    """One batch-1 inference through LiteRT (XNNPACK applied by default): set input, invoke, read output."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_filtered():  # LiteRT announces its XNNPACK delegate from C++
        interpreter = Interpreter(model_content=content, num_threads=threads)
        interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    batch = sample[None].astype(np.float32)

    def call() -> np.ndarray:
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return call


def _lce_interpreter(content: bytes, threads: int) -> LceInterpreter:
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    # LCE's defaults: binary ops on LCE's kernels, float ops on TFLite's builtin ones. Turning XNNPACK on
    # for the float ops changed nothing measurable here (a binary CNN: 12.1 ms both ways at 1 thread).
    return Interpreter(content, num_threads=threads, use_xnnpack=False)


def lce_single_call(content: bytes, threads: int, sample: np.ndarray) -> Callable[[], object]:
    """One batch-1 inference through LCE's interpreter: its ``predict`` copies the input in, invokes
    and copies the output out, the same unit of work as :func:`litert_single_call`."""
    wrapper = _lce_interpreter(content, threads).interpreter
    batch = [sample[None].astype(np.float32)]
    return lambda: wrapper.predict(batch)


def lce_predict(content: bytes, x: np.ndarray, threads: int) -> np.ndarray:
    """Outputs for all of ``x``, one input per invoke (LCE fixes the batch to 1 and cannot resize)."""
    return np.asarray(_lce_interpreter(content, threads).predict(x.astype(np.float32)))
