"""The training_cost track: what it took to train the run's model.

Read from the training the run already did (nothing is retrained):

- ``train_seconds``: wall time of the method's own training, validation passes included (s).
- ``upstream_train_seconds``: wall time of the upstream trainings the method starts from (``Method.requires``:
  a trained model to compress, a teacher), transitively, each counted once; the FP32 twin as a mere reference
  is not counted. ``total_train_seconds``: the sum of both, what a user pays end to end (s).
- ``epochs``; ``epoch_seconds_median``: median wall time of one epoch, validation excluded (s).
- ``samples_per_s``: training examples per epoch / ``epoch_seconds_median``.
- ``peak_rss_bytes``: peak resident memory of the process during training (Linux ``VmHWM``, reset just
  before the method runs; it includes the loaded dataset and TensorFlow itself); ``peak_gpu_bytes``:
  TensorFlow's peak GPU allocation, where a GPU is present.
- A method that only transforms a trained upstream (no epochs) gets ``epochs`` = 0 and none of the per-epoch
  metrics below.
- ``target_accuracy``: the task's declared validation top-1 target; ``target_reached`` (1 or 0); when
  reached, ``epochs_to_target`` (the first epoch whose validation top-1 is at least the target) and
  ``seconds_to_target`` (the sum of epoch times up to and including it).
"""

from __future__ import annotations

import statistics

from effbench.registry import MetricSpec, register_track
from effbench.track import MeasureContext, Metric, Track

METRICS = (
    MetricSpec("train_seconds", "s", "lower", "cost"),
    MetricSpec("total_train_seconds", "s", "lower", "cost"),
    MetricSpec("upstream_train_seconds", "s", "lower", "cost"),
    MetricSpec("epoch_seconds_median", "s", "lower", "cost"),
    MetricSpec("samples_per_s", "samples/s", "higher", "cost"),
    MetricSpec("peak_rss_bytes", "byte", "lower", "cost"),
    MetricSpec("peak_gpu_bytes", "byte", "lower", "cost"),
    MetricSpec("seconds_to_target", "s", "lower", "cost"),
    MetricSpec("epochs_to_target", "epoch", "lower", "cost"),
    MetricSpec("target_reached", "bool", "higher", "info"),
    # Set by the task and its recipe, not by the method.
    MetricSpec("epochs", "epoch", "none", "info"),
    MetricSpec("target_accuracy", "ratio", "none", "info"),
)


def target_metrics(val_accuracy: list[float], epoch_seconds: list[float], target: float) -> list[Metric]:
    metrics = [Metric("target_accuracy", target, "ratio")]
    reached = next((epoch for epoch, accuracy in enumerate(val_accuracy) if accuracy >= target), None)
    metrics.append(Metric("target_reached", int(reached is not None), "bool"))
    if reached is not None:
        metrics += [
            Metric("epochs_to_target", reached + 1, "epoch"),
            Metric("seconds_to_target", sum(epoch_seconds[: reached + 1]), "s"),
        ]
    return metrics


@register_track(
    "training_cost",
    summary="train time, time per epoch, samples/s, peak memory, epochs and seconds to the task's target",
    needs_task_data=True,
    metrics=METRICS,
)
class TrainingCostTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        artifact = context.artifact
        if artifact is None or context.task is None:
            raise ValueError("the training_cost track measures a training run: use `effbench run`, not a model file")
        upstream = sum(artifact.upstream_seconds.values())
        stats = artifact.train_stats
        metrics = [
            Metric("train_seconds", artifact.train_seconds, "s"),
            Metric("upstream_train_seconds", upstream, "s"),
            Metric("total_train_seconds", artifact.train_seconds + upstream, "s"),
            Metric("peak_rss_bytes", stats["peak_rss_bytes"], "byte"),
        ]
        if "peak_gpu_bytes" in stats:
            metrics.append(Metric("peak_gpu_bytes", stats["peak_gpu_bytes"], "byte"))
        # A method that transforms a trained upstream without training (post-training) has no epochs.
        epoch_seconds = artifact.history.get("epoch_seconds", [])
        metrics.append(Metric("epochs", len(epoch_seconds), "epoch"))
        if not epoch_seconds:
            return metrics
        median_epoch = statistics.median(epoch_seconds)
        metrics += [
            Metric("epoch_seconds_median", median_epoch, "s"),
            Metric("samples_per_s", stats["train_samples"] / median_epoch, "samples/s"),
        ]
        val_accuracy = artifact.history.get("val_accuracy", [])
        return metrics + target_metrics(val_accuracy, epoch_seconds, context.task.spec.target_accuracy)
