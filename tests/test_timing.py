"""The shared timing loop: warm-up calls are not timed, repeats stop on the policy's bounds."""

import pytest

from tracks._timing import Timing, TimingPolicy, time_calls


def test_warmup_calls_are_not_timed_and_min_repeats_are_met():
    calls = []
    timing = time_calls(lambda: calls.append(1), TimingPolicy(warmup=3, min_repeats=7, min_seconds=0.0))
    assert len(calls) == 3 + 7 and timing.repeats == 7


def test_max_seconds_caps_a_slow_call():
    import time

    timing = time_calls(lambda: time.sleep(0.02), TimingPolicy(warmup=0, min_repeats=1000, max_seconds=0.1))
    assert 3 <= timing.repeats <= 10


def test_summary_statistics_and_metric_names():
    timing = Timing((0.001, 0.002, 0.003, 0.004, 0.010))
    assert timing.median == 0.003 and timing.p90 == pytest.approx(0.0076)
    names = {m.name: m.value for m in timing.metrics("keras_cpu_b1", batch=1)}
    assert names["keras_cpu_b1_median_ms"] == pytest.approx(3.0)
    assert names["keras_cpu_b1_samples_per_s"] == pytest.approx(1 / 0.003)
    assert names["keras_cpu_b1_repeats"] == 5 and 0 < names["keras_cpu_b1_cv"] < 1
