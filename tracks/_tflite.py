"""Conversion to TFLite flatbuffers and the interpreters that run them, for the edge track.

Every variant keeps float32 inputs and outputs (the int8 variant quantizes and dequantizes inside the
graph), so the same test inputs feed every variant and their outputs are compared directly.

- ``float32``: TFLite's converter with no optimization (from the model's SavedModel export, saved once for
  every variant: :func:`effbench.tflite.exported`).
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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from effbench.console import native_stderr_filtered
from effbench.tf import keras
from effbench.tflite import (  # noqa: F401 - the conversions and the batched evaluation are the core's
    CALIBRATION_SAMPLES,
    NOISE_SEED,
    TFLITE_VARIANTS,
    Calibration,
    Source,
    calibration,
    convert,
    error_text,
    exported,
    input_shape,
    litert_predict,
)

if TYPE_CHECKING:
    from larq_compute_engine.tflite.python.interpreter import Interpreter as LceInterpreter

LCE_VARIANT = "lce"


def convert_lce(source: Source) -> bytes:
    """Larq Compute Engine's flatbuffer (float32 input and output, batch fixed to 1 by LCE), from the model or its
    export (:func:`effbench.tflite.exported`; the same bytes as ``convert_keras_model``'s own export gives)."""
    from larq_compute_engine import convert_keras_model, convert_saved_model

    with native_stderr_filtered():
        return convert_saved_model(source) if isinstance(source, Path) else convert_keras_model(source)


def has_larq_layers(model: keras.Model) -> bool:
    """True when any (nested) layer or quantizer of the model is larq's or subclasses one of larq's.

    Classes are matched by their module names along the MRO, so larq is imported only when a model uses it;
    methods' own binary layers (a ``QuantConv2D`` with a learned scale) count too.
    """
    return any(cls.__module__.startswith("larq.") for module in model.submodules for cls in type(module).__mro__)


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
