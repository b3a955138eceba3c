"""How long the offline tasks take to build from nothing, and to load once built, against a 10 s target.

Each task is loaded twice in this process with an empty private cache (``EFFBENCH_CACHE`` set to a temporary
folder): the first ``Task.load()`` generates the data (or reads the bundled files), writes the cache and makes
the splits; the second reads the cache. Wall time and this process's CPU time are reported for both; the
target is a cold build under ``TARGET_SECONDS`` (wall) at the size the task has, on 2 cores. Importing the
registries (TensorFlow, the suites) happens once, before any timing.

    python benchmarks/task_generation.py [--tasks shapes32 seg-shapes ...] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

TARGET_SECONDS = 10.0
TASKS = ("shapes32", "seg-shapes", "sr-photos-x2", "sr-photos-x3", "digit-sets", "digits-seq", "ctr-synth",
         "breast_cancer", "listops-short", "listops-long", "mnist1d-seq", "texture-patches",
         "noisy-signals")  # fmt: skip


def timed_load(slug: str) -> tuple[float, float]:
    """(wall s, CPU s) of one ``load()`` of a fresh instance of task ``slug``."""
    from effbench.registry import TASKS as REGISTRY

    task = REGISTRY.get(slug).factory()
    wall, cpu = time.perf_counter(), time.process_time()
    task.load()
    return time.perf_counter() - wall, time.process_time() - cpu


def clear_memoised_sources() -> None:
    """Forget the photos and texture tiles kept in memory, so a cold build reads and cuts them again."""
    from effbench.tasks import _digits, _images, _shapes

    for cached in (_images.photo, _shapes.texture_bank, _digits.digit_pools):
        cached.cache_clear()


def measure(slug: str, repeats: int) -> dict[str, float]:
    cold, cold_cpu, warm = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="effbench-generation-") as folder:
            os.environ["EFFBENCH_CACHE"] = folder
            clear_memoised_sources()
            wall, cpu = timed_load(slug)
            cold.append(wall)
            cold_cpu.append(cpu)
            warm.append(timed_load(slug)[0])
    return {"cold": statistics.median(cold), "cold_cpu": statistics.median(cold_cpu), "cached": statistics.median(warm)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from effbench.registry import load_builtin_entries

    load_builtin_entries()
    print(f"{'task':<15} {'cold s':>8} {'cold CPU s':>11} {'cached s':>9}  target < {TARGET_SECONDS:g} s")
    failed = []
    for slug in args.tasks:
        result = measure(slug, args.repeats)
        verdict = "ok" if result["cold"] < TARGET_SECONDS else "SLOW"
        if verdict != "ok":
            failed.append(slug)
        print(f"{slug:<15} {result['cold']:8.2f} {result['cold_cpu']:11.2f} {result['cached']:9.2f}  {verdict}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
