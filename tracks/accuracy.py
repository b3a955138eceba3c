"""The accuracy track: top-1, top-5, cross-entropy and calibration on the task's test split.

For test inputs x_i with labels y_i and predicted class probabilities p_i = softmax(f(x_i)):

- ``top1``  = mean_i [argmax_k p_ik = y_i]; ``top5`` (tasks with more than 10 classes) counts a hit
  when y_i is among the five largest p_ik.
- ``loss``  = mean_i -log p_{i, y_i} (natural log; the training loss of every recipe).
- ``ece``   = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|, with 15 equal-width bins B_b of the top-1
  confidence max_k p_ik (Guo et al., "On Calibration of Modern Neural Networks", 2017).
- ``fp32_top1`` and ``top1_relative`` = top1 / fp32_top1 when the method has an FP32 twin: the same
  backbone trained without the method on the same task, seed and budget (BiBench's relative accuracy).

A model whose outputs are already probabilities (non-negative rows summing to 1) is scored as such;
otherwise its outputs are taken as logits. A deployable whose deployment is a TFLite flatbuffer
(post-training quantization) is scored by running that flatbuffer on LiteRT, not its Keras source.
"""

from __future__ import annotations

import numpy as np

from effbench.registry import MetricSpec, register_track
from effbench.track import MeasureContext, Metric, Track
from tracks import _tflite

ECE_BINS = 15
EVAL_BATCH = 256
METRICS = (
    MetricSpec("top1", "ratio", "higher", "quality"),
    MetricSpec("top5", "ratio", "higher", "quality"),
    MetricSpec("top1_relative", "ratio", "higher", "quality"),
    MetricSpec("loss", "nat", "lower", "quality"),
    MetricSpec("ece", "ratio", "lower", "quality"),
    MetricSpec("test_samples", "count", "none", "info"),
    # The FP32 twin's top-1: the reference the method is compared with, not the method's own quality.
    MetricSpec("fp32_top1", "ratio", "none", "info"),
)
TFLITE_THREADS = 2


def probabilities(outputs: np.ndarray) -> np.ndarray:
    outputs = outputs.astype(np.float64)
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4):
        return outputs
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = probs[np.arange(len(labels)), labels]
    return float(np.mean(-np.log(np.clip(picked, 1e-12, 1.0))))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # Right-closed bins (a, b], with confidence 0 in the first bin.
    bin_of = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = bin_of == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def accuracy_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> list[Metric]:
    metrics = [Metric("top1", top_k_accuracy(probs, labels, 1), "ratio")]
    if num_classes > 10:
        metrics.append(Metric("top5", top_k_accuracy(probs, labels, 5), "ratio"))
    metrics += [
        Metric("loss", cross_entropy(probs, labels), "nat"),
        Metric("ece", expected_calibration_error(probs, labels), "ratio"),
        Metric("test_samples", len(labels), "count"),
    ]
    return metrics


def relative_metrics(top1: float, reference: dict[str, float]) -> list[Metric]:
    fp32_top1 = reference["top1"]
    relative = top1 / fp32_top1 if fp32_top1 > 0 else 0.0
    return [Metric("fp32_top1", fp32_top1, "ratio"), Metric("top1_relative", relative, "ratio")]


def test_outputs(context: MeasureContext) -> np.ndarray:
    """The model's outputs on the test split: the deployed flatbuffer's on LiteRT where that is the deployable."""
    if context.tflite is not None:
        return _tflite.litert_predict(context.tflite, context.splits.x_test, TFLITE_THREADS)
    return context.model.predict(context.splits.x_test, batch_size=EVAL_BATCH, verbose=0)


@register_track(
    "accuracy",
    summary="top-1 (top-5 over 10 classes), loss, ECE on the test split; ratio to the FP32 twin",
    needs_task_data=True,
    metrics=METRICS,
)
class AccuracyTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        if context.splits is None or context.task is None:
            raise ValueError("the accuracy track needs a task (its test split): pass --task")
        outputs = test_outputs(context)
        probs = probabilities(np.asarray(outputs))
        labels = context.splits.y_test.astype(int)
        metrics = accuracy_metrics(probs, labels, context.task.spec.num_classes)
        if context.reference is not None:
            metrics += relative_metrics(metrics[0].value, context.reference)
        return metrics
