"""TFLite conversion and the batched LiteRT evaluation: the core's, for the tracks and for the methods.

A post-training quantizer's deployment *is* a converted flatbuffer, so methods convert as the edge track does,
with the same settings; both use this module (suites never import tracks).

Every variant keeps float32 inputs and outputs (the int8 variant quantizes and dequantizes inside the
graph), so the same test inputs feed every variant and their outputs are compared directly.

- ``float32``: TFLite's converter with no optimization.
- ``float16``: ``Optimize.DEFAULT`` and ``supported_types = [tf.float16]``: weights stored as float16,
  dequantized to float32 when the model is loaded; arithmetic stays float32 on CPU.
- ``dynamic``: ``Optimize.DEFAULT`` with no data: int8 weights; activations are quantized on the fly
  by the kernels that support it, the rest computes in float.
- ``int8``: full integer quantization: ``Optimize.DEFAULT``, builtin int8 ops only, activation ranges
  calibrated on a representative dataset (:class:`Calibration`, ``CALIBRATION_SAMPLES`` inputs by default).
- ``sparse`` (:data:`SPARSE_VARIANT`, not one of the default variants): float32 with
  ``Optimize.EXPERIMENTAL_SPARSITY``, which stores sparse weight tensors in a compressed (block) format: the file
  shrinks with a pruned model's zeros; outputs are unchanged. Whether a runtime computes faster with them is a
  separate question (XNNPACK's sparse kernels have rules of their own: ``tracks/_sparse.py``).

The converter starts from a SavedModel. ``TFLiteConverter.from_keras_model`` saves the Keras model to a fresh one
on every call, and that export is most of a conversion's time (a binary ResNet-20: about 5 of 8 s). The edge
track converts one model up to six ways, so :func:`exported` saves it once, exactly as ``from_keras_model``
does (``tf.saved_model.save`` with debug info), and :func:`convert` converts from that folder. The flatbuffers
compute the same outputs and have the same sizes; only the converter's metadata, which names the source
format, differs from ``from_keras_model``'s.

LiteRT is imported where it is used: every command imports this module through the tracks. The batched LiteRT
evaluation itself lives in :mod:`effbench.litert`, which imports no TensorFlow (the verifier's sandbox runs it).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effbench.console import native_stderr_filtered
from effbench.litert import EVAL_BATCH, litert_predict  # noqa: F401 - the batched evaluation, with the conversions
from effbench.tasks.base import Splits
from effbench.tf import keras, tf

TFLITE_VARIANTS = ("float32", "float16", "dynamic", "int8")
SPARSE_VARIANT = "sparse"
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


# A Keras model, or the SavedModel folder that exported() saved it to.
Source = keras.Model | Path


@contextlib.contextmanager
def exported(model: keras.Model) -> Iterator[Source]:
    """The model saved once as the SavedModel ``from_keras_model`` would save, for several conversions.

    Where saving fails, the model itself: :func:`convert` then converts it as ``from_keras_model`` does, which
    falls back to freezing the Keras model's graph.
    """
    with tempfile.TemporaryDirectory(prefix="effbench-savedmodel-") as folder:
        yield _saved(model, Path(folder))


def _saved(model: keras.Model, folder: Path) -> Source:
    try:
        with native_stderr_filtered():
            tf.saved_model.save(model, str(folder), options=tf.saved_model.SaveOptions(save_debug_info=True))
    except Exception:  # noqa: BLE001 - a model SavedModel cannot hold still converts from its graph
        return model
    return folder


def convert(source: Source, variant: str, data: Calibration) -> bytes:
    """The flatbuffer of one of ``TFLITE_VARIANTS`` or ``sparse``; raises what the converter raises."""
    if variant not in (*TFLITE_VARIANTS, SPARSE_VARIANT):
        known = ", ".join((*TFLITE_VARIANTS, SPARSE_VARIANT))
        raise ValueError(f"unknown TFLite variant '{variant}'; expected one of {known}")
    if isinstance(source, Path):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source))
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
    if variant == SPARSE_VARIANT:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    elif variant != "float32":
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
