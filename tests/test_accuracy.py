"""The accuracy track's formulas on inputs whose answers are known by hand."""

import numpy as np
import pytest

from tracks.accuracy import (
    accuracy_metrics,
    cross_entropy,
    expected_calibration_error,
    probabilities,
    top_k_accuracy,
)

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
LABELS = np.array([0, 2, 1, 2])


def test_top_k():
    assert top_k_accuracy(PROBS, LABELS, 1) == 0.5
    assert top_k_accuracy(PROBS, LABELS, 2) == 1.0


def test_cross_entropy_is_the_mean_negative_log_likelihood():
    assert cross_entropy(PROBS, LABELS) == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.4, 0.5])))


def test_ece_by_hand():
    # Confidences 0.7, 0.6, 0.5, 0.5 fall in three 1/15-wide bins; hits 1, 0, 0, 1.
    # Bin (0.667, 0.733]: |1 - 0.7| * 1/4; (0.533, 0.6]: |0 - 0.6| * 1/4; (0.467, 0.533]: |0.5 - 0.5| * 2/4.
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(0.3 / 4 + 0.6 / 4)


def test_perfectly_confident_and_right_is_calibrated():
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_logits_are_turned_into_probabilities_and_probabilities_are_kept():
    logits = np.log(PROBS) + 3.0
    assert np.allclose(probabilities(logits), PROBS)
    assert probabilities(PROBS) is not None and np.allclose(probabilities(PROBS), PROBS)


def test_top5_only_for_tasks_with_more_than_ten_classes():
    assert "top5" not in {m.name for m in accuracy_metrics(PROBS, LABELS, 10)}
    assert "top5" in {m.name for m in accuracy_metrics(PROBS, LABELS, 100)}


def test_the_generalization_gap_is_top1_on_the_training_split_minus_top1_on_the_test_split():
    from types import SimpleNamespace

    from effbench.tasks.base import Splits
    from effbench.track import MeasureContext
    from tracks.accuracy import generalization_metrics

    x_train, y_train = np.arange(4, dtype=np.float32)[:, None], np.array([0, 1, 0, 0])
    # Predicts the class of x mod 2: right on 3 of the 4 training inputs.
    model = SimpleNamespace(predict=lambda x, batch_size, verbose: np.eye(2)[x[:, 0].astype(int) % 2])
    splits = Splits(x_train, y_train, x_train[:1], y_train[:1], x_train[:1], y_train[:1])
    metrics = {m.name: m.value for m in generalization_metrics(MeasureContext(model=model, splits=splits), 0.5)}
    assert metrics == {"train_top1": 0.75, "generalization_gap": 0.25}
