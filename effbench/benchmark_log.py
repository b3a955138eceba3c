"""The output of TFLite's ``benchmark_model``, as metrics: what ``effbench device-result`` records.

A user measures a converted ``.tflite`` model (kept beside its edge record) on their own device with TFLite's
``benchmark_model`` (or LCE's ``lce_benchmark_model``, which prints the same lines) and hands its output back;
:func:`benchmark_model_metrics` turns it into ``device_*`` metrics scoped by the converted variant, and
:data:`DEVICE_METRICS` says what each means. Plain text parsing: nothing here needs TensorFlow.
"""

from __future__ import annotations

import re

from effbench.registry import MetricSpec
from effbench.track import Metric

# "count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442 [p5=.. median=.. p95=..]",
# after any log prefix ("INFO: ", "I tflite  : "); values in microseconds, avg may be "2.95034e+06".
_NUMBER = r"[0-9.]+(?:e[+-]?[0-9]+)?"
_STATS_LINE = re.compile(rf"(?:^|[\s:])count=(?P<count>\d+)\s+first=.*\savg=(?P<avg>{_NUMBER})")
_STAT_FIELD = re.compile(rf"\b(first|curr|min|max|avg|std|p5|median|p95)=({_NUMBER})")
_SUMMARY_LINE = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first_inference>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup_avg>{_NUMBER}), Inference \(avg\): (?P<inference_avg>{_NUMBER})"
)
_MEMORY_LINE = re.compile(rf"\(MB\): init=(?P<init>{_NUMBER}) overall=(?P<overall>{_NUMBER})")


def parse_benchmark_model_output(text: str) -> dict[str, float]:
    """The numbers of one ``benchmark_model`` run.

    Keys: ``count`` and ``first_us``, ``curr_us``, ``min_us``, ``max_us``, ``avg_us``, ``std_us`` (plus
    ``p5_us``, ``median_us``, ``p95_us`` from newer versions) of the timed runs; ``init_us``,
    ``first_inference_us``, ``warmup_avg_us``, ``inference_avg_us`` of the summary line; and
    ``memory_init_mb``, ``memory_overall_mb`` when printed. The tool prints a ``count=`` line for the
    warm-up runs, then one for the timed runs, then the summary: the timed runs' line is the last
    ``count=`` line before the summary (op profiling, when enabled, prints more after it).
    """
    found: dict[str, float] = {}
    stats_line = None
    for line in text.splitlines():
        summary = _SUMMARY_LINE.search(line)
        if summary:
            found.update({f"{key}_us": float(value) for key, value in summary.groupdict().items()})
            break
        if _STATS_LINE.search(line):
            stats_line = line
    if stats_line is None and "inference_avg_us" not in found:
        raise ValueError("no benchmark_model timings found: expected 'count=... avg=...' or 'Inference timings in us'")
    if stats_line is not None:
        found["count"] = float(_STATS_LINE.search(stats_line).group("count"))
        found.update({f"{key}_us": float(value) for key, value in _STAT_FIELD.findall(stats_line)})
    memory = _MEMORY_LINE.search(text)
    if memory:
        found.update({f"memory_{key}_mb": float(value) for key, value in memory.groupdict().items()})
    return found


_CONVERSION = ("conversion",)


def _time(name: str) -> MetricSpec:
    return MetricSpec(name, "ms", "lower", "cost", _CONVERSION)


# Parsed key -> (the metric it becomes, scale from the parsed unit).
_DEVICE_METRICS: dict[str, tuple[MetricSpec, float]] = {
    "avg_us": (_time("device_avg_ms"), 1e-3),
    # The spread and the number of timed runs describe the measurement, not the model.
    "std_us": (MetricSpec("device_std_ms", "ms", "none", "info", _CONVERSION), 1e-3),
    "min_us": (_time("device_min_ms"), 1e-3),
    "max_us": (_time("device_max_ms"), 1e-3),
    "median_us": (_time("device_median_ms"), 1e-3),
    "p95_us": (_time("device_p95_ms"), 1e-3),
    "count": (MetricSpec("device_count", "count", "none", "info", _CONVERSION), 1),
    "init_us": (_time("device_init_ms"), 1e-3),
    "first_inference_us": (_time("device_first_ms"), 1e-3),
    "memory_overall_mb": (MetricSpec("device_memory_mb", "MB", "lower", "cost", _CONVERSION), 1),
}
# What each metric of :func:`benchmark_model_metrics` means.
DEVICE_METRICS: tuple[MetricSpec, ...] = tuple(spec for spec, _ in _DEVICE_METRICS.values())


def benchmark_model_metrics(text: str, variant: str) -> list[Metric]:
    """``device_*`` metrics (scope ``variant``) from a ``benchmark_model`` output.

    ``device_avg_ms`` is the mean of the timed runs; when only the summary line was kept it is the
    summary's ``Inference (avg)``, the same number.
    """
    parsed = parse_benchmark_model_output(text)
    parsed.setdefault("avg_us", parsed.get("inference_avg_us"))
    metrics = []
    for key, (spec, scale) in _DEVICE_METRICS.items():
        if parsed.get(key) is not None:
            value = int(parsed[key]) if spec.unit == "count" else parsed[key] * scale
            metrics.append(Metric(spec.name, value, spec.unit, variant))
    return metrics
