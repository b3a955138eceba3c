"""The sensitivity sub-track of training cost: how much a method's accuracy depends on the recipe.

BiBench's protocol (Qin et al., "BiBench: Benchmarking and Analyzing Network Binarization", ICML 2023,
https://arxiv.org/abs/2301.11233): retrain the same method on the same task and seed under every
combination of {SGD lr 0.1, SGD lr 0.01, Adam lr 1e-3, Adam lr 1e-4} x {cosine, step} schedules, with
the run's recipe otherwise unchanged (epochs, batch size, augmentation, weight decay), and score each
retrained model's top-1 on the test split. Metrics: ``top1`` per setting (scope ``sgd-0.1-cosine``,
...), and ``top1_mean``, ``top1_std`` (population), ``top1_min``, ``top1_max`` over the eight, plus
``total_seconds`` of the eight trainings. It costs eight trainings, so it is a track of its own.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import MetricSpec, register_track
from effbench.track import MeasureContext, Metric, Track
from tracks.accuracy import EVAL_BATCH, probabilities, top_k_accuracy

OPTIMIZER_SETTINGS = (("sgd", 0.1), ("sgd", 0.01), ("adam", 1e-3), ("adam", 1e-4))
SCHEDULES = ("cosine", "step")
METRICS = (
    MetricSpec("top1_mean", "ratio", "higher", "quality"),
    # A method whose accuracy depends less on the recipe is the better one (BiBench).
    MetricSpec("top1_std", "ratio", "lower", "quality"),
    MetricSpec("top1_min", "ratio", "higher", "quality"),
    MetricSpec("top1_max", "ratio", "higher", "quality"),
    MetricSpec("top1", "ratio", "higher", "quality", ("setting",)),
    MetricSpec("total_seconds", "s", "lower", "cost"),
)


def sensitivity_recipes(base: Recipe) -> dict[str, Recipe]:
    """The eight BiBench settings, keyed ``<optimizer>-<lr>-<schedule>``."""
    return {
        f"{optimizer}-{rate:g}-{schedule}": replace(base, optimizer=optimizer, learning_rate=rate, schedule=schedule)
        for optimizer, rate in OPTIMIZER_SETTINGS
        for schedule in SCHEDULES
    }


def summary_metrics(top1_by_setting: dict[str, float], seconds: float) -> list[Metric]:
    values = np.array(list(top1_by_setting.values()))
    return [
        *(Metric("top1", value, "ratio", scope=setting) for setting, value in top1_by_setting.items()),
        Metric("top1_mean", float(values.mean()), "ratio"),
        Metric("top1_std", float(values.std()), "ratio"),
        Metric("top1_min", float(values.min()), "ratio"),
        Metric("top1_max", float(values.max()), "ratio"),
        Metric("total_seconds", seconds, "s"),
    ]


@register_track(
    "sensitivity",
    summary="BiBench recipe sensitivity: top-1 over {SGD 0.1, SGD 0.01, Adam 1e-3, Adam 1e-4} x {cosine, step}",
    needs_task_data=True,
    metrics=METRICS,
)
class SensitivityTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        if context.retrain is None or context.recipe is None or context.splits is None:
            raise ValueError("the sensitivity track retrains a method: use `effbench run`, not a model file")
        started = time.perf_counter()
        top1_by_setting = {}
        for setting, recipe in sensitivity_recipes(context.recipe).items():
            model = context.retrain(recipe).model
            outputs = model.predict(context.splits.x_test, batch_size=EVAL_BATCH, verbose=0)
            top1_by_setting[setting] = top_k_accuracy(probabilities(outputs), context.splits.y_test.astype(int), 1)
        return summary_metrics(top1_by_setting, time.perf_counter() - started)
