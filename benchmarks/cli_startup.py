"""How long ``effbench list methods`` takes, against ``python -c "import tensorflow"``.

Both are whole processes started from this Python, alternated in each round (the order alternating between
rounds), timed by wall clock from start to exit. ``effbench list`` reads the index (``effbench/index.json``)
and should import neither TensorFlow nor the suites; the target is a ratio of medians (list / import) of at
most 0.2. Before the index, listing imported every suite and took about 0.8 of the TensorFlow import.

    python benchmarks/cli_startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 0.2


def effbench_command() -> list[str]:
    """The installed ``effbench`` script beside this Python, else the module (the same code)."""
    script = Path(sys.executable).with_name("effbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "effbench.cli"]


COMMANDS = {
    "effbench list methods": [*effbench_command(), "list", "methods"],
    "import tensorflow": [sys.executable, "-c", "import tensorflow"],
}


def wall_seconds(command: list[str]) -> float:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    return time.perf_counter() - started


def measure(rounds: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for command in COMMANDS.values():  # one untimed start each: the first reads the files from disk
        wall_seconds(command)
    for round_ in range(rounds):
        names = list(COMMANDS) if round_ % 2 == 0 else list(reversed(COMMANDS))
        for name in names:
            seconds[name].append(wall_seconds(COMMANDS[name]))
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    seconds = measure(args.rounds)
    for name, values in seconds.items():
        print(f"{name:<24} median {statistics.median(values):.3f} s  ({', '.join(f'{v:.3f}' for v in values)})")
    ratio = statistics.median(seconds["effbench list methods"]) / statistics.median(seconds["import tensorflow"])
    print(f"ratio of medians (list / import): {ratio:.3f} (target <= {TARGET})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
