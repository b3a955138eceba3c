"""Task kinds: a task declares what it is (classification, segmentation, super-resolution, regression, CTR), the
loaders are held to that declaration, and the accuracy, edge and robustness tracks measure what the kind calls
for, with formulas checked by hand or against scikit-learn / scikit-image."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from skimage.metrics import structural_similarity
from sklearn.metrics import log_loss, roc_auc_score

from effbench.registry import TASK_KINDS, TASKS, TRACKS, RegistryError, TaskSpec, check_task_spec, find_metric
from effbench.tasks.base import Splits, check_splits
from effbench.track import MeasureContext, Metric
from effbench.training import task_loss
from tracks import _quality, accuracy, edge, robustness

SEGMENTATION = TaskSpec("toy-seg", "toy", (4, 4, 3), 3, "fcn-small", "image", True, 0.5,
                        kind="segmentation", output_shape=(4, 4))  # fmt: skip
CLASSIFICATION = TaskSpec("toy-cls", "toy", (5,), 3, "mlp", "vector", True, 0.5)


def splits_of(x: np.ndarray, y: np.ndarray) -> Splits:
    return Splits(x, y, x, y, x, y)


def undescribed(track: str, metrics: list[Metric]) -> list[str]:
    declared = TRACKS.get(track).spec.metrics
    return [f"{m.scope}/{m.name} ({m.unit})" for m in metrics
            if (spec := find_metric(declared, m.name, bool(m.scope))) is None or spec.unit != m.unit]  # fmt: skip


# ------------------------------------------------------------------------------------------ declarations


def test_every_registered_task_declares_a_consistent_kind():
    for entry in TASKS:
        check_task_spec(entry.spec)  # raises on an inconsistent spec
        assert entry.spec.quality is TASK_KINDS[entry.spec.kind]


def test_old_task_specs_are_classification_with_a_class_label():
    digits = TASKS.get("digits").spec
    assert (digits.kind, digits.output_shape, digits.vocabulary) == ("classification", (), 0)
    assert digits.quality.primary == "top1" and digits.quality.direction == "higher"


@pytest.mark.parametrize("change, complaint", [
    ({"kind": "detection"}, "kind 'detection'"),
    ({"modality": "graph"}, "modality 'graph'"),
    ({"vocabulary": 16}, "vocabulary"),
    ({"kind": "super-resolution"}, "num_classes 3"),
    ({"output_shape": (4, 4)}, "output_shape must be ()"),
    ({"kind": "ctr"}, "num_classes 3"),
])  # fmt: skip
def test_inconsistent_specs_are_refused_with_the_reason(change, complaint):
    with pytest.raises(RegistryError, match=complaint):
        check_task_spec(replace(CLASSIFICATION, **change))


def test_segmentation_needs_a_label_per_pixel():
    with pytest.raises(RegistryError, match="output_shape"):
        check_task_spec(replace(SEGMENTATION, output_shape=()))


def test_a_lower_is_better_primary_declares_its_direction():
    assert TASK_KINDS["regression"].direction == "lower"
    relative = find_metric(TRACKS.get("accuracy").spec.metrics, "rmse_relative")
    assert relative.direction == "lower" and find_metric(TRACKS.get("accuracy").spec.metrics, "miou_relative")


# ------------------------------------------------------------------------------------- loader validation


def test_splits_that_match_the_spec_pass():
    x = np.zeros((2, 4, 4, 3), np.float32)
    check_splits(SEGMENTATION, splits_of(x, np.zeros((2, 4, 4), np.int32)))


@pytest.mark.parametrize("y, complaint", [
    (np.zeros((2,), np.int32), "shape"),
    (np.zeros((2, 4, 4), np.int64), "dtype int64"),
    (np.full((2, 4, 4), 3, np.int32), "labels outside 0..2"),
    (np.zeros((3, 4, 4), np.int32), "3 labels"),
])  # fmt: skip
def test_loaders_are_held_to_the_declared_labels(y, complaint):
    with pytest.raises(ValueError, match=complaint):
        check_splits(SEGMENTATION, splits_of(np.zeros((2, 4, 4, 3), np.float32), y))


def test_id_inputs_must_be_whole_ids_inside_the_vocabulary():
    spec = replace(CLASSIFICATION, modality="tokens", vocabulary=4)
    labels = np.zeros(1, np.int32)
    check_splits(spec, splits_of(np.array([[0, 1, 2, 3, 3]], np.float32), labels))
    for bad in ([[0, 1, 2, 3, 4]], [[0, 0.5, 0, 0, 0]]):
        with pytest.raises(ValueError, match="not ids"):
            check_splits(spec, splits_of(np.array(bad, np.float32), labels))


def test_non_finite_inputs_are_refused():
    x = np.array([[0, 1, np.nan, 0, 0]], np.float32)
    with pytest.raises(ValueError, match="NaN"):
        check_splits(CLASSIFICATION, splits_of(x, np.zeros(1, np.int32)))


def test_each_kind_trains_with_its_loss():
    assert task_loss(SEGMENTATION).get_config()["from_logits"]
    sr = replace(SEGMENTATION, kind="super-resolution", num_classes=0, output_shape=(8, 8, 3))
    assert type(task_loss(sr)).__name__ == "MeanSquaredError"


# ---------------------------------------------------------------------------------------- segmentation


def test_mean_iou_and_pixel_accuracy_by_hand():
    labels = np.array([[[0, 0], [1, 2]]])
    predicted = np.array([[[0, 1], [1, 2]]])
    outputs = np.eye(3)[predicted] * 10.0  # confident logits
    metrics = {m.name: m.value for m in _quality.segmentation_metrics(outputs, labels, 3)}
    # IoU: class 0 1/2 (one hit, a miss predicted 1), class 1 1/2 (one hit, one false positive), class 2 1.
    assert metrics["miou"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert metrics["pixel_accuracy"] == 0.75
    hit, miss = -np.log(np.exp(10) / (np.exp(10) + 2)), -np.log(1 / (np.exp(10) + 2))
    assert metrics["loss"] == pytest.approx((3 * hit + miss) / 4)


def test_classes_absent_from_labels_and_predictions_do_not_count():
    confusion = _quality.confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 1]), 5)
    assert _quality.mean_iou(confusion) == 1.0


# ------------------------------------------------------------------------------------ super-resolution


def test_luma_is_bt601_on_the_0_255_scale():
    assert _quality.luma(np.array([[[[1.0, 1.0, 1.0]]]]))[0, 0, 0] == pytest.approx(235.0)
    assert _quality.luma(np.array([[[[0.0, 0.0, 0.0]]]]))[0, 0, 0] == pytest.approx(16.0)
    assert _quality.luma(np.array([[[[1.0]]]]))[0, 0, 0] == pytest.approx(235.0)


def test_psnr_by_hand_and_ssim_equals_scikit_image():
    rng = np.random.default_rng(0)
    truth = rng.random((2, 20, 20))
    noisy = truth + rng.normal(0, 0.05, truth.shape)
    mse = np.mean((noisy - truth) ** 2, axis=(1, 2))
    assert _quality.psnr(noisy, truth, 1.0) == pytest.approx(10 * np.log10(1 / mse))
    reference = [structural_similarity(a, b, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False)
                 for a, b in zip(noisy * 255, truth * 255, strict=True)]  # fmt: skip
    assert _quality.ssim(noisy * 255, truth * 255, 255.0) == pytest.approx(reference, abs=1e-6)


def test_super_resolution_scores_shave_the_border_and_pool_patches_per_image():
    targets = np.full((3, 24, 24, 3), 0.5)
    outputs = targets.copy()
    outputs[:, :2] = 1.0  # wrong only inside the 2-pixel border
    psnr, ssim = _quality.super_resolution_scores(outputs, targets, scale=2)
    assert psnr == pytest.approx(10 * np.log10(255**2 / 1e-10)) and ssim == pytest.approx(1.0)
    outputs = targets + np.array([0, 0, 4 / 255])[:, None, None, None]  # patch 2 off by 4 levels
    y_error = (65.481 + 128.553 + 24.966) * 4 / 255
    per_image, _ = _quality.super_resolution_scores(outputs, targets, scale=0, groups=np.array([0, 0, 0]))
    assert per_image == pytest.approx(10 * np.log10(255**2 / (y_error**2 / 3)))


def test_bicubic_reference_is_scored_beside_the_model():
    targets = np.random.default_rng(1).random((2, 8, 8, 3))
    names = {m.name for m in _quality.super_resolution_metrics(targets, targets, 2, reference=targets * 0.9)}
    assert {"psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "test_samples"} == names


# ------------------------------------------------------------------------------------- regression and CTR


def test_regression_metrics_by_hand():
    predicted, truth = np.array([1.0, 2.0, 5.0]), np.array([1.0, 3.0, 5.0])
    metrics = {m.name: m.value for m in _quality.regression_metrics(predicted, truth)}
    assert metrics["rmse"] == pytest.approx(np.sqrt(1 / 3)) and metrics["mae"] == pytest.approx(1 / 3)
    assert metrics["r2"] == pytest.approx(1 - 1 / 8)


def test_auc_and_logloss_equal_scikit_learn_for_two_logits_and_for_one():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + labels[:, None] * np.array([0.0, 1.0])
    probability = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    metrics = {m.name: m.value for m in _quality.ctr_metrics(logits, labels)}
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probability))
    assert metrics["logloss"] == pytest.approx(log_loss(labels, probability))
    single = logits[:, 1:] - logits[:, :1]  # the click logit
    assert {m.name: m.value for m in _quality.ctr_metrics(single, labels)}["auc"] == pytest.approx(metrics["auc"])


def test_auc_counts_ties_as_one_half():
    assert _quality.roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5


# ----------------------------------------------------------------------------------------- the tracks


def context_for(spec: TaskSpec, splits: Splits, outputs: np.ndarray, reference=None, **task_methods) -> MeasureContext:
    model = SimpleNamespace(predict=lambda x, batch_size, verbose: outputs)
    task = SimpleNamespace(spec=spec, reference_outputs=lambda x: None, test_groups=lambda: None, **task_methods)
    return MeasureContext(model=model, task=task, splits=splits, reference=reference)


def test_accuracy_track_reports_a_segmentation_tasks_metrics_and_ratio_to_the_twin():
    labels = np.array([[[0, 1], [2, 2]]], np.int32)
    splits = splits_of(np.zeros((1, 2, 2, 3), np.float32), labels)
    spec = replace(SEGMENTATION, input_shape=(2, 2, 3), output_shape=(2, 2))
    context = context_for(spec, splits, np.eye(3)[labels] * 5.0, reference={"miou": 0.5, "top1": 0.9})
    metrics = {m.name: m for m in TRACKS.get("accuracy").factory().measure(context)}
    assert metrics["miou"].value == 1.0 and metrics["fp32_miou"].value == 0.5
    assert metrics["miou_relative"].value == 2.0 and "top1" not in metrics
    assert undescribed("accuracy", list(metrics.values())) == []


def test_accuracy_track_keeps_a_classification_records_names():
    splits = splits_of(np.zeros((2, 5), np.float32), np.array([0, 1], np.int32))
    context = context_for(CLASSIFICATION, splits, np.array([[3.0, 0, 0], [0, 0, 3.0]]), reference={"top1": 0.25})
    metrics = {m.name: m.value for m in TRACKS.get("accuracy").factory().measure(context)}
    assert metrics["top1"] == 0.5 and metrics["fp32_top1"] == 0.25 and metrics["top1_relative"] == 2.0


def test_set_tasks_are_scored_again_with_every_set_permuted():
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    permuted = accuracy.permuted_sets(x)
    assert permuted.shape == x.shape and not np.array_equal(permuted, x)
    for original, shuffled in zip(x, permuted, strict=True):  # the same elements, in another order
        assert sorted(map(tuple, original)) == sorted(map(tuple, shuffled))
    np.testing.assert_array_equal(permuted, accuracy.permuted_sets(x))  # a fixed permutation


def test_a_model_that_reads_the_first_element_is_caught_by_the_permutation_metrics():
    spec = replace(CLASSIFICATION, input_shape=(3, 1), num_classes=3, modality="set")
    x = np.array([[[0], [1], [2]]] * 6, np.float32) + np.zeros((6, 3, 1), np.float32)
    x = np.stack([np.roll(row, shift, axis=0) for shift, row in enumerate(x)])
    labels = x[:, 0, 0].astype(np.int32)  # a label the first element decides: not a function of the set
    model = SimpleNamespace(predict=lambda inputs, batch_size, verbose: np.eye(3)[inputs[:, 0, 0].astype(int)])
    task = SimpleNamespace(spec=spec)
    context = MeasureContext(model=model, task=task, splits=splits_of(x, labels))
    metrics = {m.name: m.value for m in accuracy.classification_metrics(context, model.predict(x, 0, 0))}
    assert metrics["top1"] == 1.0 and metrics["permutation_agreement"] < 1.0


def test_edge_agreement_is_per_pixel_for_segmentation_and_psnr_for_super_resolution():
    labels = np.array([[[0, 1], [2, 2]]])
    keras_outputs = np.eye(3)[labels]
    converted = keras_outputs.copy()
    converted[0, 0, 0] = [0, 0, 1]  # the converted model changes one pixel of four
    inputs = edge.Inputs(np.zeros((2, 2, 3)), np.zeros((1, 2, 2, 3)), labels, labels, keras_outputs,
                         replace(SEGMENTATION, input_shape=(2, 2, 3), output_shape=(2, 2)))  # fmt: skip
    scoring = edge.Backend("litert", None, lambda content, x, threads: converted)
    metrics = {m.name: m.value for m in edge.accuracy_metrics(scoring, b"", inputs, "int8")}
    assert metrics["agreement"] == 0.75 and metrics["miou"] == pytest.approx((0 + 1 + 2 / 3) / 3)

    sr = replace(SEGMENTATION, kind="super-resolution", num_classes=0, input_shape=(4, 4, 3), output_shape=(8, 8, 3))
    images = np.full((1, 8, 8, 3), 0.5)
    inputs = edge.Inputs(np.zeros((4, 4, 3)), np.zeros((1, 4, 4, 3)), images, None, images, sr)
    scoring = edge.Backend("litert", None, lambda content, x, threads: images + 0.01)
    metrics = edge.accuracy_metrics(scoring, b"", inputs, "int8")
    values = {m.name: m.value for m in metrics}
    assert values["agreement_psnr"] == pytest.approx(40.0) and {m.scope for m in metrics} == {"int8"}
    assert undescribed("edge", metrics) == []


def test_robustness_is_not_applicable_to_ids_sets_frames_and_dense_kinds():
    for slug in ("ctr-synth", "listops-short", "digit-sets", "digits-seq", "seg-shapes", "sr-photos-x2"):
        reason = robustness.not_applicable_reason(TASKS.get(slug).spec)
        assert reason and slug in reason
    for slug in ("digits", "mnist1d", "mnist1d-seq", "shapes32", "breast_cancer"):
        assert robustness.not_applicable_reason(TASKS.get(slug).spec) is None
    metrics = robustness.not_applicable_metrics("no corruptions")
    assert undescribed("robustness", metrics) == []
