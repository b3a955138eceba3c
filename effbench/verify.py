"""Verified numbers: a submission's flatbuffers measured by a process that never ran submitted code.

A ``.tflite`` flatbuffer is data, not code: LiteRT (or Larq Compute Engine's interpreter, for binary ops)
runs it with kernels that ship with those packages. So a submission's deployables, converted inside the
sandbox (:func:`flatbuffers`: the edge tracks' own conversions where they ran, else a float32 conversion), are
scored again by :func:`child_verify`: in a sandbox of its own too, where
no file of the submission is even visible, only the flatbuffers and the task's data. It reports, per
flatbuffer (scope = its variant: ``deployed`` for the method's own deployment file, ``float32``, ``lce``):

- ``file_bytes``: the file's size;
- ``top1`` (classification tasks): the fraction of the task's test split whose arg-max output is the label.

The whole-model ``top1`` and ``file_bytes`` are those of the deployment: ``deployed`` where the method has
its own flatbuffer, else ``float32``, else ``lce``. Nothing else about a submission can be verified this way:
numbers of the Keras model (accuracy, loss, calibration, complexity counted on its graph, Keras latency,
robustness) and of its training (time, memory, curves) are measured in the sandbox by code the submission
shares a process with, and are recorded as ``sandbox`` numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from effbench.litert import litert_predict
from effbench.track import Metric

if TYPE_CHECKING:
    from effbench.tf import keras

DEPLOYED, FLOAT32, LCE = "deployed", "float32", "lce"
# The variant whose numbers are the whole-model ones, in order of preference.
HEADLINE = (DEPLOYED, FLOAT32, LCE)


def flatbuffers(
    model: keras.Model, deployment: bytes | None, converted: Mapping[str, bytes]
) -> tuple[dict[str, bytes], list[str]]:
    """The flatbuffers to verify of one deployable (variant -> bytes), and why any could not be made.

    ``converted``: the variants the edge tracks converted already (their kept ``<variant>.tflite`` files), used
    as they are; without a float32 one, the model is converted here. Runs in the sandbox, beside the
    submission's code: what it returns is only data to verify.
    """
    from effbench.tf import tf

    made = {variant: converted[variant] for variant in (FLOAT32, LCE) if variant in converted}
    problems = []
    if deployment is not None:
        made[DEPLOYED] = deployment
    if FLOAT32 not in made:
        try:
            made[FLOAT32] = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        except Exception as error:  # noqa: BLE001 - a model the converter rejects is reported, not fatal
            problems.append(f"float32 conversion failed: {type(error).__name__}: {error}"[:500])
    return made, problems


def child_verify(request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """Score every flatbuffer of ``request["files"]`` on its task's test split (run in the sandbox, no submission)."""
    from effbench.registry import TASKS

    load_tasks()
    folder = Path(request["folder"])
    results = []
    splits: dict[str, Any] = {}
    for item in request["files"]:
        content = (folder / item["file"]).read_bytes()
        task = TASKS.get(item["task"]).factory()
        if task.spec.kind == "classification" and item["task"] not in splits:
            splits[item["task"]] = task.load()
        split = splits.get(item["task"])
        results.append({"file": item["file"], "metrics": measure(content, item["variant"], split)})
    return {"results": results}, []


def load_tasks() -> None:
    """Register the built-in tasks, and nothing else (no suite, no track: nothing the verifier needs not)."""
    import importlib
    import pkgutil

    import effbench.tasks

    for info in pkgutil.walk_packages(effbench.tasks.__path__, prefix="effbench.tasks."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)


def measure(content: bytes, variant: str, splits: Any | None) -> list[dict[str, Any]]:
    """The verified metrics of one flatbuffer, as JSON objects (scope = ``variant``)."""
    metrics = [{"metric": "file_bytes", "value": len(content), "unit": "byte", "scope": variant}]
    if splits is not None:
        try:
            outputs = predict(content, splits.x_test, variant)
        except Exception as error:  # noqa: BLE001 - a flatbuffer the interpreter cannot run is a result
            metrics.append({"metric": "run_error", "value": f"{type(error).__name__}: {error}"[:500],
                            "unit": "text", "scope": variant})  # fmt: skip
            return metrics
        top1 = float(np.mean(outputs.argmax(axis=1) == splits.y_test.astype(int)))
        metrics.append({"metric": "top1", "value": top1, "unit": "ratio", "scope": variant})
    return metrics


def predict(content: bytes, x: np.ndarray, variant: str) -> np.ndarray:
    """Outputs of the flatbuffer for every input of ``x``: LCE's interpreter for ``lce``, else LiteRT."""
    if variant == LCE:
        from larq_compute_engine.tflite.python.interpreter import Interpreter as LceInterpreter

        return np.asarray(LceInterpreter(content, num_threads=1, use_xnnpack=False).predict(x.astype(np.float32)))
    return litert_predict(content, x, threads=1)


def headline_metrics(scoped: list[Metric]) -> list[Metric]:
    """The whole-model ``top1`` and ``file_bytes``: those of the first variant of :data:`HEADLINE` measured."""
    variants = {metric.scope for metric in scoped}
    chosen = next((variant for variant in HEADLINE if variant in variants), None)
    if chosen is None:
        return []
    whole = [Metric(m.name, m.value, m.unit) for m in scoped if m.scope == chosen and m.name in ("top1", "file_bytes")]
    return [*whole, Metric("verified_variant", chosen, "text")]
