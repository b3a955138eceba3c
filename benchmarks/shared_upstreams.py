"""How many trainings the shared upstreams saved: trainings run vs the trainings a naive plan would run.

A suite whose methods start from a trained twin (pruning, quantization, binarization) trains that twin once
per task, seed and budget, and every method and sparsity level starts from it (the runner's upstream graph).
A naive plan, as most pruning papers' code does it, retrains the dense model for every method run. This
script measures both from a folder of records:

- method trainings: the distinct ``training_hash`` of records that have upstreams;
- upstream trainings run: the distinct upstream hashes they name;
- naive: the sum over method trainings of how many upstreams each names (one retraining per method run);
- seconds: each method's ``training_cost`` record gives ``upstream_train_seconds``, the time its upstreams
  took; the naive plan pays it for every method training, the shared plan once per upstream.

    python benchmarks/shared_upstreams.py results/pruning [results/quantization ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effbench.records import ResultStore  # noqa: E402


def upstream_savings(root: Path) -> dict[str, float]:
    upstreams: dict[str, set[str]] = defaultdict(set)
    upstream_seconds: dict[str, list[float]] = defaultdict(list)
    for record in ResultStore(root).records():
        named = set((record.config.get("upstream") or {}).values())
        if record.source != "measured" or not named:
            continue
        upstreams[record.training_hash] |= named
        if record.track == "training_cost":
            value = {metric.name: metric.value for metric in record.metrics if not metric.scope}
            for name in named:
                if "upstream_train_seconds" in value:
                    upstream_seconds[name].append(float(value["upstream_train_seconds"]) / len(named))
    shared = set().union(*upstreams.values()) if upstreams else set()
    naive = sum(len(names) for names in upstreams.values())
    seconds_per_upstream = {name: max(values) for name, values in upstream_seconds.items()}
    return {
        "method_trainings": len(upstreams),
        "upstream_trainings_run": len(shared),
        "upstream_trainings_naive": naive,
        "upstream_trainings_saved": naive - len(shared),
        "upstream_seconds_run": sum(seconds_per_upstream.values()),
        "upstream_seconds_naive": sum(seconds_per_upstream.get(name, 0.0) for names in upstreams.values()
                                      for name in names),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    print("| folder | method trainings | upstream trainings run | a naive plan | saved | upstream s run | naive s |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.folders:
        s = upstream_savings(folder)
        print(f"| `{folder}` | {s['method_trainings']} | {s['upstream_trainings_run']} | "
              f"{s['upstream_trainings_naive']} | {s['upstream_trainings_saved']} | "
              f"{s['upstream_seconds_run']:.0f} | {s['upstream_seconds_naive']:.0f} |")


if __name__ == "__main__":
    main()
