"""The registries: one decorator registers, duplicates and unknown slugs are clear errors, and every track
says what each metric it records means."""

from types import SimpleNamespace

import numpy as np
import pytest

from effbench.benchmark_log import DEVICE_METRICS, benchmark_model_metrics
from effbench.method import MethodRef
from effbench.registry import (
    METHODS,
    TASKS,
    TRACKS,
    MetricSpec,
    Paper,
    RegistryError,
    find_metric,
    register_method,
    register_track,
)
from effbench.tf import keras
from effbench.track import MeasureContext, Metric
from tests.conftest import TOY_PAPER
from tracks._timing import TimingPolicy


def test_registered_method_is_found_by_slug_and_pattern(toy_methods):
    assert METHODS.get("toy-dense").spec.kind == "architecture"
    assert [e.spec.slug for e in METHODS.select("toy-*")] == ["toy-broken", "toy-dense", "toy-halved"]
    assert [e.spec.slug for e in METHODS.select(suite="toys", pattern="*dense")] == ["toy-dense"]


def test_duplicate_slug_is_an_error_naming_both_modules(toy_methods):
    with pytest.raises(RegistryError, match="'toy-dense' is registered twice"):
        register_method("toy-dense", suite="toys", kind="training", paper=TOY_PAPER, summary="x")(type("X", (), {}))


def test_unknown_slug_suggests_close_matches(toy_methods):
    with pytest.raises(RegistryError, match="unknown method 'toy-dens'.*did you mean toy-dense"):
        METHODS.get("toy-dens")


@pytest.mark.parametrize("slug", ["Upper", "has space", "a:b", "", "a*b", "-lead"])
def test_invalid_slugs_are_rejected(slug):
    with pytest.raises(RegistryError, match="invalid"):
        register_method(slug, suite="s", kind="training", paper=Paper("t", 2020, "u"), summary="x")


def test_bad_kind_and_scale_are_rejected():
    with pytest.raises(RegistryError, match="kind 'magic'"):
        register_method("x-kind", suite="s", kind="magic", paper=TOY_PAPER, summary="x")
    with pytest.raises(RegistryError, match="scale 'huge'"):
        register_method("x-scale", suite="s", kind="training", paper=TOY_PAPER, summary="x", scale="huge")


def test_method_options_parse_and_unknown_options_are_rejected(toy_methods):
    ref = MethodRef.parse("toy-dense:units=32")
    assert ref.options == (("units", 32),) and ref.variant == "units=32" and str(ref) == "toy-dense:units=32"
    assert ref.create().options == {"units": 32}
    with pytest.raises(RegistryError, match="has no option width"):
        MethodRef.parse("toy-dense:width=2").create()
    with pytest.raises(ValueError, match="key=value"):
        MethodRef.parse("toy-dense:units")


def test_an_option_value_with_commas_or_a_plus_is_written_in_parentheses():
    text = "qat-4bit:backbone=(resnet-cifar:depth=8,width=0.5),bits=2+kd:teacher=vgg-small:width=0.5"
    ref = MethodRef.parse(text)
    assert MethodRef.parse(text.replace("teacher=vgg-small:width=0.5", "teacher=(vgg-small:width=0.5)")) == ref
    assert ref.options == (("backbone", "resnet-cifar:depth=8,width=0.5"), ("bits", 2))
    assert ref.modifiers[0].options == (("teacher", "vgg-small:width=0.5"),)
    assert str(ref) == text and MethodRef.parse(str(ref)) == ref
    assert MethodRef.parse(ref.options[0][1]) == MethodRef("resnet-cifar", (("depth", 8), ("width", 0.5)))
    # One option without commas reads as before, so the config hashes of existing runs do not move.
    assert str(MethodRef.parse("qat-4bit:backbone=resnet-cifar:depth=8")) == "qat-4bit:backbone=resnet-cifar:depth=8"
    with pytest.raises(ValueError, match="unbalanced"):
        MethodRef.parse("qat-4bit:backbone=(resnet-cifar:depth=8")


def test_builtin_entries_are_registered():
    assert {"digits", "mnist1d", "mnist", "fashion_mnist", "cifar10", "cifar100"} <= {e.spec.slug for e in TASKS}
    assert {"accuracy", "complexity"} <= {e.spec.slug for e in TRACKS}
    assert {"mlp", "vgg-small", "resnet-cifar", "mobilenetv2", "simplenet"} <= {
        e.spec.slug for e in METHODS.select(suite="architectures")
    }


# ---------------------------------------------------------------------------- what a track's metrics mean


def test_a_metric_pattern_stands_for_one_name_part_per_placeholder():
    spec = MetricSpec("keras_<dev>_b<batch>_median_ms", "ms", "lower", "cost")
    assert spec.matches("keras_cpu_b1_median_ms") and spec.matches("keras_gpu0_b64_median_ms")
    assert not spec.matches("keras_cpu_b1_p90_ms") and not spec.matches("keras_cpu_x_b1_median_ms")
    assert MetricSpec("top1", "ratio", "higher", "quality").matches("top1")
    assert not MetricSpec("top1", "ratio", "higher", "quality").matches("top1_relative")


def test_a_metric_is_looked_up_for_the_whole_model_or_for_a_scope():
    per_layer = MetricSpec("params", "count", "lower", "cost", ("layer",))
    whole = MetricSpec("params", "count", "lower", "cost")
    assert find_metric([per_layer, whole], "params") is whole
    assert find_metric([per_layer, whole], "params", scoped=True) is per_layer
    assert find_metric([whole], "params", scoped=True) is None and find_metric([whole], "macs") is None


def test_metric_directions_and_roles_are_checked():
    with pytest.raises(RegistryError, match="direction 'up'"):
        MetricSpec("top1", "ratio", "up", "quality")
    with pytest.raises(RegistryError, match="role 'speed'"):
        MetricSpec("top1", "ratio", "higher", "speed")


def test_a_track_must_say_what_its_metrics_mean():
    with pytest.raises(RegistryError, match="track 'silent' declares no metrics"):
        register_track("silent", summary="x", needs_task_data=False, metrics=())


def undescribed(specs, metrics: list[Metric]) -> list[str]:
    """The metrics no spec describes with their unit, as '<scope>/<name> (<unit>)'."""
    return [f"{m.scope}/{m.name} ({m.unit})" for m in metrics
            if (spec := find_metric(specs, m.name, bool(m.scope))) is None or spec.unit != m.unit]  # fmt: skip


def declared(track: str):
    return TRACKS.get(track).spec.metrics


def tiny_cnn():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))


FAST = TimingPolicy(warmup=1, min_repeats=2, min_seconds=0, max_seconds=1)


def test_every_metric_of_the_model_tracks_is_declared(monkeypatch):
    from tracks import edge, latency

    monkeypatch.setattr(latency, "POLICY", FAST)
    monkeypatch.setattr(edge, "TIMING_POLICY", FAST)
    context = MeasureContext(model=tiny_cnn())
    for track in ("complexity", "latency", "edge-lce"):
        metrics = TRACKS.get(track).factory().measure(context)
        assert metrics and undescribed(declared(track), metrics) == [], track


def test_every_metric_of_the_edge_track_is_declared_failures_included():
    from tracks import _tflite, edge

    def rejected() -> bytes:
        raise RuntimeError("ERROR_NEEDS_FLEX_OPS")

    data = _tflite.Calibration(np.zeros((2, 4), np.float32), "noise")
    inputs = edge.Inputs(np.zeros(4, np.float32), np.zeros((2, 4), np.float32), np.array([0, 1]), np.array([0, 0]))
    scoring = edge.Backend("litert", None, lambda content, x, threads: np.eye(2)[[0, 1]])
    metrics = [*edge.runtime_metrics(with_lce=True), *edge.calibration_metrics(data),
               *edge.measure_variant("int8", rejected, edge.LITERT, inputs, MeasureContext(model=None)),
               *edge.accuracy_metrics(scoring, b"", inputs, "float32"),
               Metric("run_error", "cannot allocate", "text", "lce")]  # fmt: skip
    metrics += edge.deployed_metrics(metrics, MeasureContext(model=None, deployment="float32"), inputs)
    assert "deployed" in {m.scope for m in metrics} and undescribed(declared("edge"), metrics) == []


def test_every_metric_of_the_task_tracks_is_declared():
    from tracks import accuracy, robustness, sensitivity

    probs = np.full((4, 20), 0.05)
    produced = {
        "accuracy": [*accuracy.accuracy_metrics(probs, np.arange(4), 20),
                     *accuracy.relative_metrics(0.5, {"top1": 0.9})],
        "robustness": robustness.robustness_metrics(0.9, {"noise": [0.8, 0.7, 0.6, 0.5, 0.4]}),
        "sensitivity": [*sensitivity.summary_metrics({"sgd-0.1-cosine": 0.8, "adam-0.001-step": 0.7}, 12.0),
                        *sensitivity.summary_metrics({"sgd-0.1-cosine": 21.5}, 3.0, "psnr_y")],
    }
    for track, metrics in produced.items():
        assert undescribed(declared(track), metrics) == [], track


def test_every_metric_of_training_cost_is_declared():
    artifact = SimpleNamespace(history={"epoch_seconds": [2.0, 1.0], "val_accuracy": [0.5, 0.99]}, train_seconds=3.5,
                               train_stats={"train_samples": 64, "peak_rss_bytes": 10**8, "peak_gpu_bytes": 10**9},
                               upstream_seconds={"trained": 2.0})  # fmt: skip
    task = SimpleNamespace(spec=SimpleNamespace(target_accuracy=0.95))
    metrics = TRACKS.get("training_cost").factory().measure(MeasureContext(model=None, artifact=artifact, task=task))
    assert "seconds_to_target" in {m.name for m in metrics} and undescribed(declared("training_cost"), metrics) == []


def test_every_metric_of_a_device_measurement_is_declared():
    log = ("INFO: count=50 first=1201 curr=1188 min=1150 max=1320 avg=1204.5 std=31 p5=1160 median=1200 p95=1300\n"
           "INFO: Inference timings in us: Init: 2345, First inference: 2100, Warmup (avg): 1402.2, Inference (avg): "
           "1204.5\nINFO: Memory footprint delta from the start of the tool (MB): init=2.1 overall=5.75\n")
    metrics = benchmark_model_metrics(log, "int8")
    assert len(metrics) == len(DEVICE_METRICS) and undescribed(DEVICE_METRICS, metrics) == []
