"""The latency track on tiny models, with a small timing policy: metrics, inputs, tracing, devices."""

import types

import numpy as np
import pytest

from effbench.provenance import cpu_model
from effbench.tf import keras
from effbench.track import MeasureContext
from tests.conftest import tiny_dense_model
from tracks import latency
from tracks._timing import SMOKE_POLICY, TimingPolicy, time_calls

SMALL_POLICY = TimingPolicy(warmup=2, min_repeats=5, min_seconds=0.0, max_seconds=2.0)


@pytest.fixture(autouse=True)
def small_policy(monkeypatch):
    monkeypatch.setattr(latency, "POLICY", SMALL_POLICY)


class FakeDevice:
    """Stands in for TensorFlow's logical and physical device objects: only the name is read."""

    def __init__(self, name: str):
        self.name = name


FAKE_GPUS = [FakeDevice("/device:GPU:0"), FakeDevice("/device:GPU:1")]


def two_input_model() -> keras.Model:
    image, extra = keras.Input((4, 4, 1), name="image"), keras.Input((3,), name="extra")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
    return keras.Model([image, extra], keras.layers.Dense(2)(joined))


def measured(model: keras.Model, budget: str | None = None) -> dict[str, float | int | str]:
    metrics = latency.LatencyTrack().measure(MeasureContext(model=model, budget=budget))
    assert all(m.scope == "" for m in metrics)
    return {m.name: m.value for m in metrics}


def test_cpu_metrics_at_both_batches_are_consistent():
    values = measured(tiny_dense_model((8, 8, 1), 10))
    for batch in latency.BATCH_SIZES:
        prefix = f"keras_cpu_b{batch}"
        median = values[f"{prefix}_median_ms"]
        assert median > 0 and values[f"{prefix}_p90_ms"] >= median
        assert values[f"{prefix}_repeats"] >= SMALL_POLICY.min_repeats and values[f"{prefix}_cv"] >= 0
        assert values[f"{prefix}_samples_per_s"] == pytest.approx(batch / (median / 1e3))
    assert latency.BATCH_SIZES == (1, 64)


def test_a_smoke_run_is_timed_with_a_handful_of_calls_a_real_budget_with_the_tracks_own_policy(monkeypatch):
    calls = []
    monkeypatch.setattr(latency, "time_calls", lambda call, policy: calls.append(policy) or time_calls(call, policy))
    measured(tiny_dense_model((4,), 3), "smoke")
    measured(tiny_dense_model((4,), 3), "quick")
    assert calls == [SMOKE_POLICY] * 2 + [SMALL_POLICY] * 2  # batch 1 and 64, on the one CPU device


def test_device_label_names_the_cpu_and_its_threads():
    label = measured(tiny_dense_model((4,), 3))["keras_cpu_device"]
    assert label.startswith(cpu_model()) and label.endswith(" threads)")


def test_multi_input_model_gets_one_tensor_per_input():
    model = two_input_model()
    arrays = latency.random_inputs(model, 64)
    assert [a.shape for a in arrays] == [(64, 4, 4, 1), (64, 3)] and all(a.dtype == np.float32 for a in arrays)
    assert measured(model)["keras_cpu_b64_median_ms"] > 0


def test_inputs_are_seeded_and_free_dimensions_are_refused():
    model = tiny_dense_model((5,), 2)
    assert np.array_equal(latency.random_inputs(model, 3)[0], latency.random_inputs(model, 3)[0])
    sequence = keras.Input((None, 3))
    with pytest.raises(ValueError, match="free dimensions"):
        latency.random_inputs(keras.Model(sequence, keras.layers.Dense(2)(sequence)), 1)


def test_id_inputs_get_ids_inside_the_vocabulary():
    ids = keras.Input((10,))
    model = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(7, 3)(ids))))
    drawn = latency.random_inputs(model, 256, vocabulary=7)[0]
    assert drawn.dtype == np.float32 and set(np.unique(drawn)) == set(range(7))
    # An id task's spec gives the vocabulary: a standard-normal draw would hold negative ids, which fail.
    task = types.SimpleNamespace(spec=types.SimpleNamespace(vocabulary=7))
    metrics = latency.LatencyTrack().measure(MeasureContext(model=model, task=task, budget="smoke"))
    assert {m.name: m.value for m in metrics}["keras_cpu_b1_median_ms"] > 0


def test_forward_is_traced_once_not_per_call():
    model = tiny_dense_model((6,), 2)
    forward = latency.compiled_forward(model)
    call = latency.device_call(forward, "/CPU:0", latency.random_inputs(model, 4))
    timing = time_calls(call, SMALL_POLICY)
    assert timing.repeats >= SMALL_POLICY.min_repeats and forward.experimental_get_tracing_count() == 1
    assert np.allclose(call(), model.predict(latency.random_inputs(model, 4)[0], verbose=0), atol=1e-5)


def test_every_gpu_tensorflow_lists_gets_its_own_prefix(monkeypatch):
    listed = {"GPU": FAKE_GPUS}
    monkeypatch.setattr(latency.tf.config, "list_logical_devices", lambda kind: listed.get(kind, []))
    monkeypatch.setattr(latency.tf.config, "list_physical_devices", lambda kind: listed.get(kind, []))
    monkeypatch.setattr(
        latency.tf.config.experimental, "get_device_details", lambda device: {"device_name": f"Fake {device.name}"}
    )
    devices = latency.local_devices()
    assert [d.prefix for d in devices] == ["cpu", "gpu0", "gpu1"]
    assert devices[2] == latency.Device("gpu1", "/device:GPU:1", "Fake /device:GPU:1")
    assert not latency.tpu_attached()


def test_gpus_split_into_virtual_devices_are_labelled_by_their_tensorflow_name(monkeypatch):
    listed = {"GPU": FAKE_GPUS}
    monkeypatch.setattr(latency.tf.config, "list_logical_devices", lambda kind: listed.get(kind, []))
    monkeypatch.setattr(latency.tf.config, "list_physical_devices", lambda kind: listed.get(kind, [])[:1])
    monkeypatch.setattr(latency.tf.config.experimental, "get_device_details", lambda device: {"device_name": "Fake"})
    assert [d.label for d in latency.gpu_devices()] == ["/device:GPU:0", "/device:GPU:1"]


def test_the_track_times_every_listed_gpu_under_its_own_prefix(monkeypatch):
    # A stand-in "GPU" that is really the CPU: checks the track's wiring without needing a GPU.
    monkeypatch.setattr(latency, "gpu_devices", lambda: [latency.Device("gpu0", "/CPU:0", "Fake GPU")])
    values = measured(tiny_dense_model((4,), 3))
    assert values["keras_gpu0_device"] == "Fake GPU"
    assert values["keras_gpu0_b1_median_ms"] > 0 and values["keras_gpu0_b64_samples_per_s"] > 0
    assert "keras_cpu_b1_median_ms" in values
