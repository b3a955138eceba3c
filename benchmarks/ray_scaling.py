"""What running a sweep on Ray costs (or gains) over the local executor, on one machine.

The same 8-run plan (by default ``mlp`` on ``digits``, ``quick`` budget, accuracy track, seeds 0-7: eight
trainings of about 3 s each) runs two ways, each a whole ``effbench run`` process on a fresh result folder,
alternated so that drift on the machine hits both alike:

- ``local``: ``--executor local``, the jobs one after another in the process;
- ``ray``: ``--executor ray``, a Ray instance started on this machine with one CPU per core, the jobs as
  Ray tasks of one CPU each (so as many at once as there are cores), records written by the driver.

Both wall times include starting Python and importing TensorFlow; Ray's include starting the Ray instance
and its worker processes (each imports TensorFlow again). The ratio of the medians (Ray / local) is Ray's
overhead when above 1, its speed-up from running jobs side by side when below; the absolute difference is
printed too, since Ray's cost is mostly fixed per sweep.

    python benchmarks/ray_scaling.py [--repeats 3] [--method mlp] [--task digits] [--seeds 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def sweep_command(args: argparse.Namespace, executor: str, out: str) -> list[str]:
    effbench = str(Path(sys.executable).with_name("effbench"))
    seeds = [str(seed) for seed in range(args.seeds)]
    return [effbench, "run", "--method", args.method, "--task", args.task, "--track", "accuracy",
            "--budget", args.budget, "--seed", *seeds, "--executor", executor, "--quiet", "--out", out]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="mlp")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--seeds", type=int, default=8, help="seeds, hence trainings and runs, in the plan")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as scratch:
        timed(sweep_command(args, "local", f"{scratch}/warm-up"))  # warms the file and dataset caches
        for repeat in range(args.repeats):
            for executor, spent in times.items():
                spent.append(timed(sweep_command(args, executor, f"{scratch}/{executor}-{repeat}")))
            print(f"repeat {repeat + 1}: local {times['local'][-1]:.1f}s, ray {times['ray'][-1]:.1f}s", flush=True)
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"median local {local:.1f}s, ray {ray:.1f}s")
    print(f"ray / local: {ray / local:.3f}; {ray - local:+.1f}s per sweep of {args.seeds} runs")


if __name__ == "__main__":
    main()
