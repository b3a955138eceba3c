"""Timing shared by the latency and edge tracks: warm up, repeat until stable, summarise.

A callable is run ``warmup`` times untimed (first calls trace graphs, allocate buffers and fill
caches), then timed one call at a time with ``time.perf_counter`` until it has run at least
``min_repeats`` times *and* for at least ``min_seconds``, or until ``max_seconds`` have passed. The
summary is robust to the occasional slow call (a scheduler hiccup): the median and the 90th
percentile, plus the coefficient of variation (std / mean) so an unstable measurement is visible.

At the ``smoke`` budget (a check that every stage runs, in seconds, not numbers to compare) both tracks time
with :data:`SMOKE_POLICY` instead of their own (:func:`policy_for`): a handful of calls. Its records keep the
``_repeats`` count, so a smoke timing shows for what it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from effbench.registry import MetricSpec
from effbench.track import Metric


@dataclass(frozen=True)
class TimingPolicy:
    warmup: int = 5
    min_repeats: int = 20
    min_seconds: float = 1.0
    max_seconds: float = 10.0


@dataclass(frozen=True)
class Timing:
    """Seconds per call of ``repeats`` timed calls."""

    samples: tuple[float, ...]

    @property
    def repeats(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    @property
    def cv(self) -> float:
        mean = float(np.mean(self.samples))
        return float(np.std(self.samples) / mean) if mean > 0 else 0.0

    def metrics(self, prefix: str, scope: str = "", batch: int | None = None) -> list[Metric]:
        """``<prefix>_median_ms``, ``_p90_ms``, ``_cv``, ``_repeats`` and, with ``batch``, ``_samples_per_s``."""
        metrics = [
            Metric(f"{prefix}_median_ms", self.median * 1e3, "ms", scope),
            Metric(f"{prefix}_p90_ms", self.p90 * 1e3, "ms", scope),
            Metric(f"{prefix}_cv", self.cv, "ratio", scope),
            Metric(f"{prefix}_repeats", self.repeats, "count", scope),
        ]
        if batch is not None:
            metrics.append(Metric(f"{prefix}_samples_per_s", batch / self.median, "samples/s", scope))
        return metrics


SMOKE_POLICY = TimingPolicy(warmup=1, min_repeats=5, min_seconds=0.0, max_seconds=0.2)


def policy_for(budget: str | None, policy: TimingPolicy) -> TimingPolicy:
    """``policy``, or :data:`SMOKE_POLICY` for a run at the smoke budget."""
    return SMOKE_POLICY if budget == "smoke" else policy


def timing_specs(prefix: str, scopes: tuple[str, ...] = ("",), batch: bool = False) -> tuple[MetricSpec, ...]:
    """What :meth:`Timing.metrics` records under ``prefix`` (a name pattern, e.g. ``keras_<dev>_b<batch>``)."""
    specs = (
        MetricSpec(f"{prefix}_median_ms", "ms", "lower", "cost", scopes),
        MetricSpec(f"{prefix}_p90_ms", "ms", "lower", "cost", scopes),
        # How steady the measurement was, and how many calls it took: about the timing, not the model.
        MetricSpec(f"{prefix}_cv", "ratio", "none", "info", scopes),
        MetricSpec(f"{prefix}_repeats", "count", "none", "info", scopes),
    )
    if batch:
        specs += (MetricSpec(f"{prefix}_samples_per_s", "samples/s", "higher", "cost", scopes),)
    return specs


def time_calls(call: Callable[[], object], policy: TimingPolicy = TimingPolicy()) -> Timing:
    """Time ``call`` as the module docstring says; ``call`` must block until its work is done."""
    for _ in range(policy.warmup):
        call()
    samples: list[float] = []
    started = time.perf_counter()
    while True:
        before = time.perf_counter()
        call()
        samples.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - started
        enough = len(samples) >= policy.min_repeats and elapsed >= policy.min_seconds
        if enough or elapsed >= policy.max_seconds:
            return Timing(tuple(samples))
