"""The architectures suite's runs: each sized architecture costs within 10% of its reference on its task."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from effbench.matching import TOLERANCE, model_cost
from effbench.registry import TASKS
from suites.architectures.protocol import SIZED_RUNS, runs_by_task

REPO = Path(__file__).resolve().parent.parent
SIZED = [run for run in SIZED_RUNS if run.reference]


@pytest.mark.parametrize("run", SIZED, ids=[f"{run.method}@{run.task}" for run in SIZED])
def test_a_sized_architecture_costs_what_its_reference_costs_on_the_task(run):
    spec = TASKS.get(run.task).spec
    ratio = model_cost(run.method, spec, run.measure) / model_cost(run.reference, spec, run.measure)
    assert abs(ratio - 1) <= TOLERANCE, f"{run.method}: {run.measure} {ratio:.3f}x {run.reference}'s on {run.task}"


def test_every_reference_runs_on_the_same_task_so_the_records_hold_what_the_ratio_is_taken_to():
    plan = runs_by_task()
    assert all(run.reference in plan[run.task] for run in SIZED)


def test_make_architectures_reads_one_line_per_task_with_its_methods():
    printed = subprocess.run([sys.executable, "-m", "suites.architectures.protocol"], capture_output=True, text=True,
                             check=True, cwd=REPO).stdout.splitlines()  # fmt: skip
    assert [line.split() for line in printed] == [[task, *methods] for task, methods in runs_by_task().items()]
