"""The fidelity track: how closely the deployed model computes what its FP32 twin computes.

A quantized or binarized model can keep its top-1 while deciding differently on many inputs; fidelity says
how far it moved from the float network it came from. On the task's test split, with ``y`` the deployable's
outputs (its flatbuffer's on LiteRT where that is the deployment, as in the accuracy track) and ``r`` the
twin's Keras outputs, both flattened per example:

- ``twin_agreement``: the fraction of decisions equal to the twin's (arg-max per example for classification,
  per pixel for segmentation, click > 0.5 for CTR; absent for super-resolution and regression);
- ``output_snr_db``: :math:`10 \\log_{10} (\\sum r^2 / \\sum (y - r)^2)` over the whole split, the
  signal-to-quantization-noise ratio of the outputs (capped at ``MAX_SNR_DB`` for identical outputs);
- ``output_cosine``: the mean over examples of :math:`\\cos(y_i, r_i)`.

These are ai-edge-quantizer's output-tensor comparisons (SNR, cosine), measured against the twin rather than
against the same network's float flatbuffer, so methods that retrain (QAT, binarization) are judged alike.
The track needs the twin's trained model: it fails with a clear error for a method without a twin, or when
the twin's model is not cached (remove the twin's records to have it trained again).
"""

from __future__ import annotations

import numpy as np

from effbench.registry import MetricSpec, register_track
from effbench.track import MeasureContext, Metric, Track
from tracks import _quality
from tracks.accuracy import EVAL_BATCH, test_outputs

MAX_SNR_DB = 100.0
# Kinds whose outputs are decisions (class per example or pixel, click or not).
DECIDING_KINDS = ("classification", "segmentation", "ctr")
METRICS = (
    MetricSpec("twin_agreement", "ratio", "higher", "quality"),
    MetricSpec("output_snr_db", "dB", "higher", "quality"),
    MetricSpec("output_cosine", "ratio", "higher", "quality"),
)


def output_snr_db(outputs: np.ndarray, reference: np.ndarray) -> float:
    """``10 log10(sum r^2 / sum (y - r)^2)``, at most ``MAX_SNR_DB``."""
    noise = float(np.sum((outputs.astype(np.float64) - reference) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise <= signal * 10 ** (-MAX_SNR_DB / 10):
        return MAX_SNR_DB
    return 10.0 * np.log10(signal / noise)


def mean_cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean over examples of the cosine between the flattened outputs (1 where both are zero)."""
    y = outputs.reshape(len(outputs), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(y, axis=1) * np.linalg.norm(r, axis=1)
    dots = np.sum(y * r, axis=1)
    return float(np.mean(np.where(norms > 0, dots / np.maximum(norms, 1e-300), 1.0)))


def fidelity_metrics(kind: str, outputs: np.ndarray, reference: np.ndarray) -> list[Metric]:
    metrics = []
    if kind in DECIDING_KINDS:
        agreement = np.mean(_quality.decisions(kind, outputs) == _quality.decisions(kind, reference))
        metrics.append(Metric("twin_agreement", float(agreement), "ratio"))
    metrics += [
        Metric("output_snr_db", output_snr_db(outputs, reference), "dB"),
        Metric("output_cosine", mean_cosine(outputs, reference), "ratio"),
    ]
    return metrics


@register_track(
    "fidelity",
    summary="the deployed model against its FP32 twin on the test split: decision agreement, output SNR, cosine",
    needs_task_data=True,
    metrics=METRICS,
)
class FidelityTrack(Track):
    def measure(self, context: MeasureContext) -> list[Metric]:
        if context.splits is None or context.task is None:
            raise ValueError("the fidelity track needs a task: it compares outputs on the task's test split")
        twin = context.twin_model() if context.twin_model is not None else None
        if twin is None:
            raise ValueError(
                "the fidelity track needs the FP32 twin's trained model: this method has no twin, or the twin's "
                "model is not cached because its records already existed (remove them to train it again)"
            )
        reference = np.asarray(twin.predict(context.splits.x_test, batch_size=EVAL_BATCH, verbose=0))
        return fidelity_metrics(context.task.spec.kind, test_outputs(context), reference)
