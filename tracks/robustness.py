"""The robustness track: top-1 on the task's test split under common corruptions, severities 1..5.

The corruptions (``tracks/_corruptions.py``) are CIFAR-10-C's for images (Hendrycks & Dietterich,
ICLR 2019, https://arxiv.org/abs/1903.12261) and additive noise for vector inputs. For a clean test
set (x_i, y_i) and corruption c at severity s, with acc(X) the top-1 of the model on X:

- ``clean_top1``           = acc(x)
- ``top1``, scope ``c/s<s>`` = acc(c_s(x))
- ``corruption_top1``, scope ``c`` = mean_s acc(c_s(x))
- ``mean_corruption_top1`` = mean over all corruptions and severities (the mean corruption accuracy)
- ``relative_drop``        = (clean_top1 - mean_corruption_top1) / clean_top1 (0 when clean_top1 is 0)

The corrupted images depend only on the test split, the corruption, the severity and a fixed seed, so
every method and every run seed is scored on the same corrupted test sets.

The track corrupts what it has corruptions for: classification tasks whose inputs are images, or real-valued
vectors or sequences (``CORRUPTED_MODALITIES``). On any other task (ids, sets, frames; segmentation,
super-resolution, CTR) it measures nothing and says so, rather than failing: ``applicable`` = 0 and
``not_applicable`` (text) gives the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from effbench.registry import MetricSpec, TaskSpec, register_track
from effbench.tf import keras, tf
from effbench.track import MeasureContext, Metric, Track
from tracks._corruptions import SEVERITIES, corruptions_for

EVAL_BATCH = 256
METRICS = (
    MetricSpec("mean_corruption_top1", "ratio", "higher", "quality"),
    MetricSpec("clean_top1", "ratio", "higher", "quality"),
    MetricSpec("relative_drop", "ratio", "lower", "quality"),
    MetricSpec("corruption_top1", "ratio", "higher", "quality", ("corruption",)),
    MetricSpec("top1", "ratio", "higher", "quality", ("corruption/severity",)),
    MetricSpec("applicable", "bool", "none", "info"),
    MetricSpec("not_applicable", "text", "none", "info"),
)
# The input modalities the corruptions of tracks/_corruptions.py apply to (sequences take the vector noise).
CORRUPTED_MODALITIES = {"image": "image", "vector": "vector", "sequence": "vector"}


def classifier(model: keras.Model, input_shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """Predicted classes, in batches through one traced graph.

    The track classifies 1 + 5 x corruptions test sets; ``model.predict`` would build a new input
    pipeline for each, while this graph is traced once and only returns class indices.
    """

    @tf.function(input_signature=[tf.TensorSpec((None, *input_shape), tf.float32)])
    def predict(batch: tf.Tensor) -> tf.Tensor:
        return tf.argmax(model(batch, training=False), axis=-1)

    def classify(x: np.ndarray) -> np.ndarray:
        return np.concatenate([predict(x[i:i + EVAL_BATCH]).numpy() for i in range(0, len(x), EVAL_BATCH)])

    return classify


def not_applicable_reason(spec: TaskSpec) -> str | None:
    """Why the track measures nothing on this task, or None when it applies."""
    if spec.modality not in CORRUPTED_MODALITIES:
        return (f"no corruptions for '{spec.modality}' inputs (task '{spec.slug}'): only images and "
                f"real-valued vectors or sequences are corrupted")  # fmt: skip
    if spec.kind != "classification":
        return f"the robustness track scores classification; task '{spec.slug}' is {spec.kind}"
    return None


def not_applicable_metrics(reason: str) -> list[Metric]:
    return [Metric("applicable", 0, "bool"), Metric("not_applicable", reason, "text")]


def robustness_metrics(clean: float, corrupted: Mapping[str, Sequence[float]]) -> list[Metric]:
    """Metrics from the clean top-1 and, per corruption, its top-1 at severities 1..5."""
    means = {name: float(np.mean(per_severity)) for name, per_severity in corrupted.items()}
    overall = float(np.mean(list(means.values())))  # every corruption has all five severities
    drop = (clean - overall) / clean if clean > 0 else 0.0
    metrics = [
        Metric("clean_top1", clean, "ratio"),
        Metric("mean_corruption_top1", overall, "ratio"),
        Metric("relative_drop", drop, "ratio"),
    ]
    for name, per_severity in corrupted.items():
        metrics.append(Metric("corruption_top1", means[name], "ratio", scope=name))
        metrics += [
            Metric("top1", top1, "ratio", scope=f"{name}/s{severity}")
            for severity, top1 in zip(SEVERITIES, per_severity, strict=True)
        ]
    return metrics


@register_track(
    "robustness",
    summary="top-1 under CIFAR-10-C corruptions (images) or additive noise (vectors), severities 1-5; else n/a",
    needs_task_data=True,
    metrics=METRICS,
)
class RobustnessTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        if context.splits is None or context.task is None:
            raise ValueError("the robustness track needs a task (its test split): pass --task")
        reason = not_applicable_reason(context.task.spec)
        if reason is not None:
            return not_applicable_metrics(reason)
        x, labels = context.splits.x_test, context.splits.y_test.astype(int)
        classify = classifier(context.model, x.shape[1:])

        def top1(inputs: np.ndarray) -> float:
            return float(np.mean(classify(inputs) == labels))

        corrupted = {
            corruption.name: [top1(corruption(x, severity)) for severity in SEVERITIES]
            for corruption in corruptions_for(CORRUPTED_MODALITIES[context.task.spec.modality])
        }
        return robustness_metrics(top1(x), corrupted)
