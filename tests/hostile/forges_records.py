# ruff: noqa: E402, I001 - the attack runs first, then the operator that lets the check reach its end
"""Writes a record with a valid content hash (top1 0.999, source measured) into its own results and into the
repository's results/baselines, as if EffBench had measured it."""

from pathlib import Path

import effbench
from effbench.records import Record, ResultStore
from effbench.track import Metric

FORGED = Record(
    run_id="forged", config_hash="f0f0f0f0f0f0f0f0", training_hash="f0f0f0f0f0f0f0f0", config={"forged": True},
    method="hostile-sign", variant="", suite="submissions", task="digits", track="accuracy", seed=0,
    budget="smoke", division="closed", hardware={}, versions={}, git_commit="none",
    timestamp="2026-01-01T00:00:00+00:00", metrics=[Metric("top1", 0.999, "ratio")],
)
for root in (Path(__file__).parent / "results", Path(effbench.__file__).parents[1] / "results" / "baselines"):
    try:
        ResultStore(root).save(FORGED)
    except OSError:
        pass

from effbench.registry import Paper, register_method
from suites.binarization.operators import OperatorMethod


@register_method("hostile-sign", suite="submissions", kind="operator",
                 paper=Paper("A hostile toy", 2024, "https://example.org/hostile"), summary="sign with the STE")
class HostileSign(OperatorMethod):
    def input_quantizer(self):
        return "ste_sign"

    def kernel_quantizer(self):
        return "ste_sign"

