"""Shared fixtures: toy methods registered for a test and removed after it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from effbench.method import ArchitectureMethod, Artifact, Method  # noqa: E402
from effbench.registry import METHODS, Paper, Taxonomy, register_method  # noqa: E402
from effbench.tf import keras  # noqa: E402
from effbench.training import TrainContext, fit  # noqa: E402

TOY_PAPER = Paper("A toy method for tests", 2024, "https://example.org/toy")


def tiny_dense_model(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(hidden))


@pytest.fixture
def toy_methods():
    """``toy-dense`` (an architecture), ``toy-halved`` (compresses it), ``toy-broken`` (always fails)."""

    @register_method("toy-dense", suite="toys", kind="architecture", paper=TOY_PAPER, summary="tiny MLP")
    class ToyDense(ArchitectureMethod):
        default_options = {"units": 16}

        def build(self, input_shape, num_classes):
            return tiny_dense_model(input_shape, num_classes)

    @register_method(
        "toy-halved",
        suite="toys",
        kind="compression",
        paper=TOY_PAPER,
        summary="halves the last layer",
        taxonomy=Taxonomy(weight_bits=16, applied="post-training"),
    )
    class ToyHalved(Method):
        def run(self, context: TrainContext) -> Artifact:
            model = tiny_dense_model(context.task.spec.input_shape, context.task.spec.num_classes)
            history, seconds = fit(model, context)
            logits = model.get_layer("logits")
            kernel, bias = logits.get_weights()
            logits.set_weights([kernel * 0.5, bias * 0.5])
            return Artifact(model, history, seconds)

        def fp32_twin(self, task_default_backbone: str) -> str:
            return "toy-dense"

    @register_method("toy-broken", suite="toys", kind="training", paper=TOY_PAPER, summary="raises")
    class ToyBroken(Method):
        def run(self, context: TrainContext) -> Artifact:
            raise RuntimeError("the toy method breaks on purpose")

    yield
    for slug in ("toy-dense", "toy-halved", "toy-broken"):
        METHODS.remove(slug)


# Result folders holding the accuracy record and trained model of FP32 twins already trained in this test
# session, per (twin, task): the operator tests share them, so each trains only its own method (the twin's
# smoke run is the same run every time).
_TWIN_RECORDS: dict[tuple[str, str], Path] = {}


def assert_operator_reports_ratio_to_fp32_twin(slug: str, store_dir, twin: str = "resnet-cifar", task: str = "digits"):
    """``slug`` runs on ``task`` after its FP32 ``twin`` and reports top1 / fp32_top1; returns its metrics.

    The twin trains once per session: its record is copied into ``store_dir`` for later calls, and the
    plan then holds the method's job only.
    """
    import atexit
    import shutil

    import pytest

    from effbench.method import MethodRef
    from effbench.records import ResultStore
    from effbench.runner import execute_plan, make_plan

    store = ResultStore(store_dir)
    cached = _TWIN_RECORDS.get((twin, task))
    if cached is not None:
        shutil.copytree(cached, Path(store_dir), dirs_exist_ok=True)
    jobs = make_plan([MethodRef.parse(slug)], [task], [0], ["accuracy"], "smoke", store)
    assert [str(job.training.method) for job in jobs] == ([slug] if cached else [twin, slug])
    results = execute_plan(jobs, store, log=lambda _: None)
    assert not any(result.failures for result in results)
    metrics = {m.name: m.value for m in results[-1].records[0].metrics}
    assert metrics["top1_relative"] == pytest.approx(metrics["top1"] / metrics["fp32_top1"])
    if cached is None:
        # The twin's record and trained model: a method that starts from the twin (pb-partial) loads it.
        keep = Path(tempfile.mkdtemp(prefix="effbench-twin-"))
        atexit.register(shutil.rmtree, keep, True)
        twin_store = ResultStore(keep)
        twin_store.save(results[0].records[0])
        twin_hash = results[0].records[0].training_hash
        shutil.copytree(store.artifact_dir(twin_hash), twin_store.artifact_dir(twin_hash))
        _TWIN_RECORDS[(twin, task)] = keep
    return metrics


def value_and_gradient(quantizer, x, upstream=None, **call_kwargs):
    """``quantizer(x)`` and its pseudo-gradient times ``upstream`` (ones by default), as NumPy arrays."""
    from effbench.tf import tf

    x = tf.constant(np.asarray(x, np.float32))
    upstream = tf.ones_like(x) if upstream is None else tf.constant(np.asarray(upstream, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x, **call_kwargs)
    return y.numpy(), tape.gradient(y, x, output_gradients=upstream).numpy()


def binary_layer_names(model) -> list[str]:
    """Names of the model's larq quantized conv / depthwise / dense layers (subclasses included)."""
    import larq

    binary = (larq.layers.QuantConv2D, larq.layers.QuantDepthwiseConv2D, larq.layers.QuantDense)
    return [layer.name for layer in model.layers if isinstance(layer, binary)]


def assert_saves_and_reloads(model, path):
    """``model`` saved to ``path`` (.keras) reloads without custom objects and predicts the same; the copy."""
    from effbench.tf import keras

    model.save(path)
    reloaded = keras.models.load_model(path)
    x = np.random.default_rng(1).standard_normal((3, *model.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    return reloaded

