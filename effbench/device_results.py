"""Records of edge latencies measured on a user's own device with TFLite's ``benchmark_model``.

The ``edge`` track keeps every converted ``.tflite`` file beside its record. A user pushes one to a
phone, runs ``benchmark_model`` there, and hands the tool's output back with a hardware label; this
module turns it into a record of track ``edge_device`` tied to the exact file measured (its SHA-256 is
part of the config, so the same file on the same device and threads is one measurement).
"""

from __future__ import annotations

from effbench.benchmark_log import DEVICE_METRICS, benchmark_model_metrics
from effbench.config import RunConfig, TrainingConfig, stable_hash
from effbench.records import Record, ResultStore
from effbench.registry import TrackSpec
from effbench.runner import build_record

DEVICE_TRACK = "edge_device"
# Not a registered track (nothing here measures: a user does, on their device), but its records are read like
# any track's, so it says what its metrics mean in the same way (the index lists it among recorded_tracks).
DEVICE_TRACK_SPEC = TrackSpec(
    DEVICE_TRACK, summary="benchmark_model timings of a converted model, measured on a user's own device",
    needs_task_data=False, metrics=DEVICE_METRICS,
)  # fmt: skip


def converted_file_sha256(store: ResultStore, training: TrainingConfig, division: str, variant: str) -> str:
    edge = store.find(RunConfig(training, "edge", division).hash)
    if edge is None:
        raise ValueError(
            f"no edge record for {training.method} on {training.task} (seed {training.seed}, {training.budget}) "
            f"in {store.root}: run `effbench run ... --track edge` first, then measure its .tflite on the device"
        )
    name = f"{variant}.tflite"
    if name not in edge.files:
        available = ", ".join(sorted(f.removesuffix(".tflite") for f in edge.files)) or "none"
        raise ValueError(f"the edge record has no {name} (converted variants: {available})")
    return edge.files[name]["sha256"]


def device_record(
    store: ResultStore,
    training: TrainingConfig,
    division: str,
    variant: str,
    device: str,
    threads: int,
    benchmark_output: str,
) -> Record:
    """A record of ``benchmark_model``'s timings of one converted variant on ``device``."""
    run = RunConfig(training, DEVICE_TRACK, division)
    config = {
        **run.as_dict(),
        "variant": variant,
        "device": device,
        "threads": threads,
        "tflite_sha256": converted_file_sha256(store, training, division, variant),
    }
    record = build_record(run, training.method.create(), benchmark_model_metrics(benchmark_output, variant), {})
    record.config, record.config_hash = config, stable_hash(config)
    record.hardware = {"cpu": device, "cpu_threads": threads, "gpu": "none", "platform": "user-reported device"}
    return record
