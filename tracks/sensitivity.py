"""The sensitivity sub-track of training cost: how much a method's accuracy depends on the recipe.

BiBench's protocol (Qin et al., "BiBench: Benchmarking and Analyzing Network Binarization", ICML 2023,
https://arxiv.org/abs/2301.11233): retrain the same method on the same task and seed under every
combination of {SGD lr 0.1, SGD lr 0.01, Adam lr 1e-3, Adam lr 1e-4} x {cosine, step} schedules, with
the run's recipe otherwise unchanged (epochs, batch size, augmentation, weight decay), and score each
retrained model's quality on the test split: the primary metric of the task's kind (``top1`` for
classification, ``miou``, ``psnr_y``, ``auc``, ``rmse``: :data:`effbench.registry.TASK_KINDS`). Metrics, with
``<p>`` that primary: ``<p>`` per setting (scope ``sgd-0.1-cosine``, ...), and ``<p>_mean``, ``<p>_std``
(population), ``<p>_min``, ``<p>_max`` over the eight, plus ``total_seconds`` of the eight trainings. It costs
eight trainings, so it is a track of its own.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TASK_KINDS, MetricSpec, register_track
from effbench.track import MeasureContext, Metric, Track
from tracks.accuracy import EVAL_BATCH, PRIMARY_UNITS, kind_metrics, probabilities, top_k_accuracy

OPTIMIZER_SETTINGS = (("sgd", 0.1), ("sgd", 0.01), ("adam", 1e-3), ("adam", 1e-4))
SCHEDULES = ("cosine", "step")
METRICS = (
    *(
        spec
        for kind in TASK_KINDS.values()
        for spec in (
            MetricSpec(f"{kind.primary}_mean", PRIMARY_UNITS[kind.primary], kind.direction, "quality"),
            # A method whose quality depends less on the recipe is the better one (BiBench).
            MetricSpec(f"{kind.primary}_std", PRIMARY_UNITS[kind.primary], "lower", "quality"),
            MetricSpec(f"{kind.primary}_min", PRIMARY_UNITS[kind.primary], kind.direction, "quality"),
            MetricSpec(f"{kind.primary}_max", PRIMARY_UNITS[kind.primary], kind.direction, "quality"),
            MetricSpec(kind.primary, PRIMARY_UNITS[kind.primary], kind.direction, "quality", ("setting",)),
        )
    ),
    MetricSpec("total_seconds", "s", "lower", "cost"),
)


def sensitivity_recipes(base: Recipe) -> dict[str, Recipe]:
    """The eight BiBench settings, keyed ``<optimizer>-<lr>-<schedule>``."""
    return {
        f"{optimizer}-{rate:g}-{schedule}": replace(base, optimizer=optimizer, learning_rate=rate, schedule=schedule)
        for optimizer, rate in OPTIMIZER_SETTINGS
        for schedule in SCHEDULES
    }


def summary_metrics(quality_by_setting: dict[str, float], seconds: float, primary: str = "top1") -> list[Metric]:
    """The ``primary`` metric per setting, its mean, population std, min and max, and the trainings' time."""
    values, unit = np.array(list(quality_by_setting.values())), PRIMARY_UNITS[primary]
    return [
        *(Metric(primary, value, unit, scope=setting) for setting, value in quality_by_setting.items()),
        Metric(f"{primary}_mean", float(values.mean()), unit),
        Metric(f"{primary}_std", float(values.std()), unit),
        Metric(f"{primary}_min", float(values.min()), unit),
        Metric(f"{primary}_max", float(values.max()), unit),
        Metric("total_seconds", seconds, "s"),
    ]


def primary_quality(context: MeasureContext, outputs: np.ndarray) -> float:
    """The task kind's primary metric of a retrained model's test ``outputs``.

    Top-1 directly for classification: the accuracy track's classification metrics also score the run's own
    model (train split, permuted sets), which is not the retrained one.
    """
    spec = context.task.spec
    if spec.kind == "classification":
        return top_k_accuracy(probabilities(outputs), context.splits.y_test.astype(int), 1)
    return next(metric.value for metric in kind_metrics(context, outputs) if metric.name == spec.quality.primary)


@register_track(
    "sensitivity",
    summary="BiBench recipe sensitivity: the task's quality (top-1, mIoU, ...) over {SGD 0.1, SGD 0.01, "
    "Adam 1e-3, Adam 1e-4} x {cosine, step}",
    needs_task_data=True,
    metrics=METRICS,
)
class SensitivityTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        if context.retrain is None or context.recipe is None or context.splits is None:
            raise ValueError("the sensitivity track retrains a method: use `effbench run`, not a model file")
        started = time.perf_counter()
        quality_by_setting = {}
        for setting, recipe in sensitivity_recipes(context.recipe).items():
            model = context.retrain(recipe).model
            outputs = model.predict(context.splits.x_test, batch_size=EVAL_BATCH, verbose=0)
            quality_by_setting[setting] = primary_quality(context, outputs)
        seconds = time.perf_counter() - started
        return summary_metrics(quality_by_setting, seconds, context.task.spec.quality.primary)
