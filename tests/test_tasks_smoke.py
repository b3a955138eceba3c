"""Every offline task family trains its default backbone at the smoke budget, end to end through `effbench run`'s
runner, and every track reports what the task's kind calls for: the kind's own quality metrics, agreement after
conversion as the kind measures it, and "not applicable" where the robustness track has no corruptions."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.records import ResultStore
from effbench.registry import TASKS, TRACKS, find_metric
from effbench.runner import execute_plan, make_plan
from effbench.tf import keras

# Each new task, its default backbone, and the accuracy-track metrics its kind must report.
NEW_TASKS = {
    "shapes32": {"top1", "loss", "ece"},
    "texture-patches": {"top1", "loss", "ece"},
    "seg-shapes": {"miou", "pixel_accuracy", "loss"},
    "sr-photos-x2": {"psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y"},
    "sr-photos-x3": {"psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y"},
    "digit-sets": {"top1", "permuted_top1", "permutation_agreement"},
    "digits-seq": {"top1", "loss"},
    "mnist1d-seq": {"top1", "loss"},
    "breast_cancer": {"top1", "loss"},
    "ctr-synth": {"auc", "logloss"},
    "listops-short": {"top1", "loss"},
    "listops-long": {"top1", "loss"},
}


def run_tracks(tmp_path, task: str, tracks: list[str], method: str | None = None) -> dict[str, dict]:
    """Train ``method`` (the task's default backbone) at the smoke budget; track -> {(scope, name): value}."""
    store = ResultStore(tmp_path)
    backbone = method or TASKS.get(task).spec.default_backbone
    jobs = make_plan([MethodRef.parse(backbone)], [task], [0], tracks, "smoke", store)
    results = execute_plan(jobs, store, log=lambda _: None)
    assert [failure for result in results for failure in result.failures] == []
    by_track = {}
    for record in (record for result in results for record in result.records):
        declared = TRACKS.get(record.track).spec.metrics
        for metric in record.metrics:
            spec = find_metric(declared, metric.name, bool(metric.scope))
            assert spec is not None and spec.unit == metric.unit, (record.track, metric)
        by_track[record.track] = {(metric.scope, metric.name): metric.value for metric in record.metrics}
    return by_track


@pytest.mark.parametrize("task", sorted(NEW_TASKS))
def test_default_backbone_trains_at_smoke_budget_and_reports_the_kinds_metrics(task, tmp_path):
    metrics = run_tracks(tmp_path, task, ["accuracy"])["accuracy"]
    names = {name for _, name in metrics}
    assert NEW_TASKS[task] <= names
    assert metrics[("", "test_samples")] == len(TASKS.get(task).factory().load().y_test)
    spec = TASKS.get(task).spec
    primary = metrics[("", spec.quality.primary)]
    if spec.kind == "super-resolution":
        assert 10.0 < primary < 60.0 and 20.0 < metrics[("", "bicubic_psnr_y")] < 45.0
    else:
        assert 0.0 <= primary <= 1.0


def test_segmentation_edge_measures_pixel_agreement_and_robustness_says_not_applicable(tmp_path):
    metrics = run_tracks(tmp_path, "seg-shapes", ["edge-lce", "robustness"])
    edge, robustness = metrics["edge-lce"], metrics["robustness"]
    assert edge[("float32", "converted")] == 1
    assert edge[("float32", "agreement")] > 0.99  # float32 TFLite decides (almost) every pixel as Keras does
    assert 0.0 <= edge[("float32", "miou")] <= 1.0
    assert robustness[("", "applicable")] == 0 and "segmentation" in robustness[("", "not_applicable")]


def test_super_resolution_edge_measures_psnr_between_keras_and_tflite(tmp_path):
    edge = run_tracks(tmp_path, "sr-photos-x2", ["edge-lce"])["edge-lce"]
    assert edge[("float32", "converted")] == 1
    assert edge[("float32", "agreement_psnr")] > 60.0  # float32 TFLite reproduces Keras's images
    assert 10.0 < edge[("float32", "psnr_y")] < 60.0


def test_ctr_edge_measures_click_agreement_and_robustness_has_no_corruptions_for_ids(tmp_path):
    metrics = run_tracks(tmp_path, "ctr-synth", ["edge-lce", "robustness"])
    assert metrics["edge-lce"][("float32", "agreement")] > 0.99 and 0 <= metrics["edge-lce"][("float32", "auc")] <= 1
    assert metrics["robustness"][("", "applicable")] == 0
    assert "categorical" in metrics["robustness"][("", "not_applicable")]


def test_a_real_valued_sequence_task_is_corrupted_with_vector_noise(tmp_path):
    robustness = run_tracks(tmp_path, "mnist1d-seq", ["robustness"])["robustness"]
    assert ("", "applicable") not in robustness
    assert {scope for scope, _ in robustness if scope} >= {"gaussian_noise", "uniform_noise/s5"}


# ------------------------------------------------------------------------- the backbones of the new kinds


def test_fcn_small_heads_follow_the_task_kind_and_round_trip_through_a_keras_file(tmp_path):
    fcn = MethodRef.parse("fcn-small:width=4").create()
    segmenter = fcn.build_for(TASKS.get("seg-shapes").spec)
    assert segmenter.output_shape == (None, 64, 64, 7) and segmenter.layers[-1].name == "logits"
    upscaler = fcn.build_for(TASKS.get("sr-photos-x3").spec)
    assert upscaler.input_shape == (None, 16, 16, 3) and upscaler.output_shape == (None, 48, 48, 3)
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    upscaler.save(tmp_path / "sr.keras")
    reloaded = keras.models.load_model(tmp_path / "sr.keras", compile=False)
    np.testing.assert_allclose(reloaded(x, training=False), upscaler(x, training=False), atol=1e-6)


def test_fcn_small_starts_from_smooth_upsampling():
    upscaler = MethodRef.parse("fcn-small").create().build_for(TASKS.get("sr-photos-x2").spec)
    subpixel = upscaler.get_layer("subpixel")
    subpixel.set_weights([np.zeros_like(w) for w in subpixel.get_weights()])  # no residual: bilinear upsampling
    flat = np.full((1, 24, 24, 3), 0.25, np.float32)
    np.testing.assert_allclose(upscaler(flat, training=False), 0.25, atol=1e-6)


def test_embedding_mlp_embeds_the_tasks_ids_and_is_the_mlp_on_real_inputs():
    embedding_mlp = MethodRef.parse("embedding-mlp").create()
    spec = TASKS.get("ctr-synth").spec
    model = embedding_mlp.build_with(spec.input_shape, spec.num_classes, spec.vocabulary)
    assert model.get_layer("embedding").input_dim == spec.vocabulary == 1898
    plain = embedding_mlp.build((40,), 10)
    assert "embedding" not in [layer.name for layer in plain.layers]
