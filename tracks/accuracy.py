"""The accuracy track: the task's own quality metrics on its test split, and the ratio to the FP32 twin's.

What is measured follows the task's kind (``TaskSpec.kind``, :data:`effbench.registry.TASK_KINDS`); a
classification task gets what every record before task kinds has, under the same names.

**Classification.** For test inputs x_i with labels y_i and predicted class probabilities p_i = softmax(f(x_i)):

- ``top1``  = mean_i [argmax_k p_ik = y_i]; ``top5`` (tasks with more than 10 classes) counts a hit
  when y_i is among the five largest p_ik.
- ``loss``  = mean_i -log p_{i, y_i} (natural log; the training loss of every recipe).
- ``ece``   = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|, with 15 equal-width bins B_b of the top-1
  confidence max_k p_ik (Guo et al., "On Calibration of Modern Neural Networks", 2017).
- ``train_top1``: top-1 on the run's training split; ``generalization_gap`` = train_top1 - top1 (the gap
  "Pareto-optimal quantized ResNet is mostly 4-bit" reports beside accuracy).
- On a task whose inputs are sets (modality ``set``), the model is run again on the test split with the
  elements of every set in another order (a fixed permutation per set, seed ``PERMUTATION_SEED``):
  ``permuted_top1`` is its top-1, ``permutation_agreement`` the fraction of sets whose predicted class did not
  change (1 for a permutation-invariant model).

**Segmentation, super-resolution, regression, CTR, enhancement**: see :mod:`tracks._quality` (``miou``,
``pixel_accuracy``, ``loss``; ``psnr_y``, ``ssim_y`` and the bicubic reference's ``bicubic_psnr_y``,
``bicubic_ssim_y``; ``rmse``, ``mae``, ``r2``; ``auc``, ``logloss``; ``si_snr``, the noisy input's
``noisy_si_snr`` and the improvement ``si_snri``).

**FP32 twin.** When the method has one (the same backbone trained without the method on the same task, seed
and budget), ``fp32_<primary>`` is the twin's value of the kind's primary metric (``top1``, ``miou``,
``psnr_y``, ``rmse``, ``auc``, ``si_snr``) and ``<primary>_relative`` = value / twin's value (BiBench's
relative accuracy for ``top1``). It is better in the primary's direction: higher, except ``rmse_relative``.

A model whose outputs are already probabilities (non-negative rows summing to 1) is scored as such;
otherwise its outputs are taken as logits. A deployable whose deployment is a TFLite flatbuffer
(post-training quantization) is scored by running that flatbuffer on LiteRT, not its Keras source.
"""

from __future__ import annotations

import numpy as np

from effbench.registry import TASK_KINDS, MetricSpec, TaskSpec, register_track
from effbench.track import MeasureContext, Metric, Track
from tracks import _quality, _tflite

ECE_BINS = 15
EVAL_BATCH = 256
PERMUTATION_SEED = 0
# The unit of each kind's primary metric (its twin's value carries it too).
PRIMARY_UNITS = {"top1": "ratio", "miou": "ratio", "psnr_y": "dB", "rmse": "value", "auc": "ratio", "si_snr": "dB"}
METRICS = (
    MetricSpec("top1", "ratio", "higher", "quality"),
    MetricSpec("top5", "ratio", "higher", "quality"),
    MetricSpec("loss", "nat", "lower", "quality"),
    MetricSpec("ece", "ratio", "lower", "quality"),
    # Top-1 on the run's training split, and train_top1 - top1 (the generalization gap quantization papers report).
    MetricSpec("train_top1", "ratio", "none", "info"),
    MetricSpec("generalization_gap", "ratio", "lower", "quality"),
    MetricSpec("permuted_top1", "ratio", "higher", "quality"),
    MetricSpec("permutation_agreement", "ratio", "higher", "quality"),
    MetricSpec("miou", "ratio", "higher", "quality"),
    MetricSpec("pixel_accuracy", "ratio", "higher", "quality"),
    MetricSpec("psnr_y", "dB", "higher", "quality"),
    MetricSpec("ssim_y", "ratio", "higher", "quality"),
    MetricSpec("rmse", "value", "lower", "quality"),
    MetricSpec("mae", "value", "lower", "quality"),
    MetricSpec("r2", "ratio", "higher", "quality"),
    MetricSpec("auc", "ratio", "higher", "quality"),
    MetricSpec("logloss", "nat", "lower", "quality"),
    MetricSpec("si_snr", "dB", "higher", "quality"),
    MetricSpec("si_snri", "dB", "higher", "quality"),
    # The ratio to the FP32 twin, better in its primary metric's direction.
    *(MetricSpec(f"{kind.primary}_relative", "ratio", kind.direction, "quality") for kind in TASK_KINDS.values()),
    MetricSpec("test_samples", "count", "none", "info"),
    # The reference every super-resolution method must beat, scored on the same test images.
    MetricSpec("bicubic_psnr_y", "dB", "none", "info"),
    MetricSpec("bicubic_ssim_y", "ratio", "none", "info"),
    # The reference every enhancement method must beat: the unprocessed noisy input.
    MetricSpec("noisy_si_snr", "dB", "none", "info"),
    # The FP32 twin's value: the reference the method is compared with, not the method's own quality.
    *(MetricSpec(f"fp32_{kind.primary}", PRIMARY_UNITS[kind.primary], "none", "info") for kind in TASK_KINDS.values()),
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


def relative_metrics(value: float, reference: dict[str, float], primary: str = "top1") -> list[Metric]:
    """The twin's ``primary`` value and ``value`` / it (0 when the twin's is not positive)."""
    twin = reference[primary]
    relative = value / twin if twin > 0 else 0.0
    return [Metric(f"fp32_{primary}", twin, PRIMARY_UNITS[primary]), Metric(f"{primary}_relative", relative, "ratio")]


def outputs_on(context: MeasureContext, x: np.ndarray) -> np.ndarray:
    """The model's outputs on ``x``: the deployed flatbuffer's on LiteRT where that is the deployable."""
    if context.tflite is not None:
        return np.asarray(_tflite.litert_predict(context.tflite, x, TFLITE_THREADS))
    return np.asarray(context.model.predict(x, batch_size=EVAL_BATCH, verbose=0))


def test_outputs(context: MeasureContext) -> np.ndarray:
    """The model's outputs on the test split."""
    return outputs_on(context, context.splits.x_test)


def permuted_sets(x: np.ndarray) -> np.ndarray:
    """Every set (axis 1 holds its elements) in another order: one fixed permutation per set."""
    rng = np.random.default_rng(PERMUTATION_SEED)
    order = np.argsort(rng.random(x.shape[:2]), axis=1)
    return np.take_along_axis(x, order.reshape(*order.shape, *([1] * (x.ndim - 2))), axis=1)


def permutation_metrics(context: MeasureContext, outputs: np.ndarray, labels: np.ndarray) -> list[Metric]:
    permuted = outputs_on(context, permuted_sets(context.splits.x_test)).argmax(axis=1)
    return [
        Metric("permuted_top1", float(np.mean(permuted == labels)), "ratio"),
        Metric("permutation_agreement", float(np.mean(permuted == outputs.argmax(axis=1))), "ratio"),
    ]


def generalization_metrics(context: MeasureContext, test_top1: float) -> list[Metric]:
    """Top-1 on the run's training split, and the generalization gap ``train_top1 - top1``."""
    train = outputs_on(context, context.splits.x_train).argmax(axis=1)
    train_top1 = float(np.mean(train == context.splits.y_train.astype(int)))
    return [Metric("train_top1", train_top1, "ratio"), Metric("generalization_gap", train_top1 - test_top1, "ratio")]


def classification_metrics(context: MeasureContext, outputs: np.ndarray) -> list[Metric]:
    labels = context.splits.y_test.astype(int)
    metrics = accuracy_metrics(probabilities(outputs), labels, context.task.spec.num_classes)
    metrics += generalization_metrics(context, metrics[0].value)
    if context.task.spec.modality == "set":
        metrics += permutation_metrics(context, outputs, labels)
    return metrics


def sr_scale(spec: TaskSpec) -> int:
    """The upscaling factor of a super-resolution task: output side / input side."""
    return spec.output_shape[0] // spec.input_shape[0]


def kind_metrics(context: MeasureContext, outputs: np.ndarray) -> list[Metric]:
    """The task kind's quality metrics of ``outputs`` on the test split."""
    spec, splits = context.task.spec, context.splits
    if spec.kind == "classification":
        return classification_metrics(context, outputs)
    if spec.kind == "segmentation":
        return _quality.segmentation_metrics(outputs, splits.y_test, spec.num_classes)
    if spec.kind == "super-resolution":
        reference, groups = context.task.reference_outputs(splits.x_test), context.task.test_groups()
        return _quality.super_resolution_metrics(outputs, splits.y_test, sr_scale(spec), reference, groups)
    if spec.kind == "regression":
        return _quality.regression_metrics(outputs, splits.y_test)
    if spec.kind == "enhancement":
        return _quality.enhancement_metrics(outputs, splits.y_test, context.task.reference_outputs(splits.x_test))
    return _quality.ctr_metrics(outputs, splits.y_test)


@register_track(
    "accuracy",
    summary="the task's quality (top-1, mIoU, PSNR/SSIM, AUC, SI-SNR, ...) on the test split; ratio to the FP32 twin",
    needs_task_data=True,
    metrics=METRICS,
)
class AccuracyTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        if context.splits is None or context.task is None:
            raise ValueError("the accuracy track needs a task (its test split): pass --task")
        metrics = kind_metrics(context, test_outputs(context))
        primary = context.task.spec.quality.primary
        if context.reference is not None and primary in context.reference:
            value = next(metric.value for metric in metrics if metric.name == primary)
            metrics += relative_metrics(value, context.reference, primary)
        return metrics
