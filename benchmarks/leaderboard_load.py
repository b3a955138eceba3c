"""How long the leaderboard takes to load and pivot 100,000 metric records.

Target: loading and pivoting 100,000 records (tidy rows, one per metric) in under 2 seconds.

Generates a realistic result folder in a temporary directory: 50 methods x 5 tasks x 5 seeds x 4 tracks =
5,000 record files with 20 metrics each on average (accuracy 5-7 and training curves, complexity 8 whole-model
plus 12 per-layer, latency 11, robustness 45), written as ``ResultStore`` writes them (same paths and JSON,
without the fsync). Then, several times each:

- ``cold load``: ``load_frames`` with the folder's cache removed: lists, reads and validates every record
  file (the OS file cache is warm), builds the frames and writes the Parquet cache;
- ``warm load``: ``load_frames`` through the cache (fingerprints the 5,000 files, reads the Parquet files);
- ``fingerprint``: the part of the warm load that checks the cache is current (one ``stat`` per file);
- ``pivot``: ``results_table`` and ``overview_table`` (mean and std over seeds) of the loaded tidy frame;
- ``warm load + both pivots``: what opening the leaderboard costs once the cache exists.

    python benchmarks/leaderboard_load.py [--files 5000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from effbench.records import Record, ResultStore
from effbench.track import Metric
from leaderboard.tables import CACHE_DIR, fingerprint, load_frames, overview_table, results_table

TRACKS = ("accuracy", "complexity", "latency", "robustness")
TASKS = ("digits", "mnist1d", "mnist", "cifar10", "cifar100")
SEEDS = 5
CORRUPTIONS = ("gaussian_noise", "shot_noise", "gaussian_blur", "brightness", "contrast", "pixelate", "jpeg")


def track_metrics(track: str, method: int, seed: int) -> list[Metric]:
    """Metrics shaped like the real tracks', with values that differ by method and seed."""
    top1 = 0.6 + 0.3 * method / 50 + 0.002 * seed
    if track == "accuracy":
        metrics = [Metric("top1", top1, "ratio"), Metric("loss", 1 - top1, "nat"), Metric("ece", 0.02, "ratio"),
                   Metric("test_samples", 10000, "count"), Metric("top5", min(1.0, top1 + 0.1), "ratio")]  # fmt: skip
        if method % 2:  # compressed methods carry their FP32 twin's accuracy
            metrics += [Metric("fp32_top1", 0.92, "ratio"), Metric("top1_relative", top1 / 0.92, "ratio")]
        return metrics
    if track == "complexity":
        whole = [Metric(name, 1000.0 * (method + 1) * (i + 1), "count") for i, name in enumerate(
            ("params", "params_trainable", "params_nonzero", "macs", "flops", "bops", "size_bits", "size_bytes"))]
        layers = [Metric(name, 100.0 * (method + 1), "count", f"layer_{i}")
                  for i in range(3) for name in ("params", "macs", "bops", "size_bits")]  # fmt: skip
        return whole + layers
    if track == "latency":
        timings = [Metric(f"keras_cpu_b{b}_{stat}", 0.1 * (method + 1) * b + 0.01 * seed, "ms")
                   for b in (1, 64) for stat in ("median_ms", "p90_ms", "cv", "repeats", "samples_per_s")]  # fmt: skip
        return [*timings, Metric("keras_cpu_device", "Intel Xeon, 2 threads", "text")]
    per_severity = [Metric("top1", top1 - 0.02 * s, "ratio", f"{c}/s{s}") for c in CORRUPTIONS for s in range(1, 6)]
    per_corruption = [Metric("corruption_top1", top1 - 0.06, "ratio", c) for c in CORRUPTIONS]
    mean = Metric("mean_corruption_top1", top1 - 0.06, "ratio")
    return [Metric("clean_top1", top1, "ratio"), mean, Metric("relative_drop", 0.06 / top1, "ratio"),
            *per_corruption, *per_severity]  # fmt: skip


def make_record(method: int, task: str, seed: int, track: str, index: int) -> Record:
    curves = {name: [0.5 + 0.02 * e for e in range(20)] for name in ("accuracy", "loss", "val_accuracy", "val_loss")}
    return Record(
        run_id=f"run-{index}", config_hash=f"{index:016x}", training_hash=f"{index // len(TRACKS):016x}",
        config={"method": f"method-{method}", "task": task, "seed": seed, "track": track, "budget": "quick",
                "recipe": {"optimizer": "sgd", "learning_rate": 0.1, "epochs": 20, "batch_size": 128}},
        method=f"method-{method}", variant="", suite=f"suite-{method % 5}", task=task, track=track, seed=seed,
        budget="quick", division="closed",
        hardware={"cpu": "Intel Xeon", "cpu_threads": 2, "gpu": "none", "platform": "Linux x86_64"},
        versions={"python": "3.11.7", "effbench": "0.1.0", "tensorflow": "2.21.0", "numpy": "1.26.4"},
        git_commit="0" * 40, timestamp="2026-11-21T00:00:00+00:00", metrics=track_metrics(track, method, seed),
        curves=curves if track == "accuracy" else {},
    )  # fmt: skip


def generate(root: Path, files: int) -> int:
    """Writes ``files`` records; returns the number of metric rows."""
    store = ResultStore(root)
    rows = 0
    combos = ((m, t, s, k) for m in range(10**6) for t in TASKS for s in range(SEEDS) for k in TRACKS)
    for index, (method, task, seed, track) in zip(range(files), combos, strict=False):
        record = make_record(method, task, seed, track, index)
        path = store.path_for(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The bytes write_json_atomically writes, without its fsync per file (only the reading is measured).
        path.write_text(json.dumps(record.to_json(), indent=1, sort_keys=True, allow_nan=False) + "\n")
        rows += len(record.metrics)
    return rows


def timed(action: Callable[[], object], repeats: int, before: Callable[[], None] = lambda: None) -> list[float]:
    seconds = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return seconds


def load_and_pivot(root: Path) -> None:
    """What the leaderboard does on opening: load the folder, pivot the results and the overview."""
    tidy = load_frames(root).tidy
    results_table(tidy)
    overview_table(tidy)


def report(name: str, seconds: list[float]) -> None:
    print(f"{name:<28} median {statistics.median(seconds):7.3f} s   "
          f"[{', '.join(f'{s:.3f}' for s in seconds)}]")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        rows = generate(root, args.files)
        print(f"{args.files} record files, {rows} metric rows")
        cold = timed(lambda: load_frames(root), args.repeats, lambda: shutil.rmtree(root / CACHE_DIR, True))
        warm = timed(lambda: load_frames(root), args.repeats)
        tidy = load_frames(root).tidy
        assert len(tidy) == rows
        report("cold load (no cache)", cold)
        report("warm load (cache)", warm)
        report("  of which fingerprint", timed(lambda: fingerprint(root), args.repeats))
        report("pivot: results_table", timed(lambda: results_table(tidy), args.repeats))
        report("pivot: overview_table", timed(lambda: overview_table(tidy), args.repeats))
        report("warm load + both pivots", timed(lambda: load_and_pivot(root), args.repeats))


if __name__ == "__main__":
    main()
