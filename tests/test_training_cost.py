"""training_cost reads the run's own training; sensitivity retrains under BiBench's eight recipes."""

import numpy as np
import pytest

from effbench.cli import main
from effbench.recipe import Recipe
from effbench.records import ResultStore
from tracks.sensitivity import sensitivity_recipes
from tracks.training_cost import target_metrics


def metrics_of(store_dir, track):
    (record,) = [r for r in ResultStore(store_dir).records() if r.track == track]
    return {(m.name, m.scope): m.value for m in record.metrics}


def test_time_to_target_is_the_first_epoch_at_or_above_it():
    found = {m.name: m.value for m in target_metrics([0.5, 0.9, 0.95, 0.97], [2.0, 1.0, 1.0, 1.0], 0.95)}
    assert found == {"target_accuracy": 0.95, "target_reached": 1, "epochs_to_target": 3, "seconds_to_target": 4.0}
    missed = {m.name: m.value for m in target_metrics([0.5, 0.6], [1.0, 1.0], 0.95)}
    assert missed == {"target_accuracy": 0.95, "target_reached": 0}


def test_training_cost_of_a_run(tmp_path, toy_methods):
    assert main(["run", "--method", "toy-dense", "--task", "digits", "--track", "training_cost",
                 "--budget", "smoke", "--out", str(tmp_path)]) == 0  # fmt: skip
    found = metrics_of(tmp_path, "training_cost")
    assert found[("epochs", "")] == 1 and found[("train_seconds", "")] >= found[("epoch_seconds_median", "")] > 0
    assert found[("samples_per_s", "")] == pytest.approx(256 / found[("epoch_seconds_median", "")])
    assert found[("peak_rss_bytes", "")] > 50e6  # TensorFlow alone is far above 50 MB
    assert found[("target_accuracy", "")] == 0.95


def test_the_eight_bibench_settings_change_only_optimizer_rate_and_schedule():
    base = Recipe(epochs=7, batch_size=32, weight_decay=1e-4)
    recipes = sensitivity_recipes(base)
    assert sorted(recipes) == sorted(
        f"{o}-{r}-{s}" for o, r in (("sgd", "0.1"), ("sgd", "0.01"), ("adam", "0.001"), ("adam", "0.0001"))
        for s in ("cosine", "step")
    )
    assert {(r.epochs, r.batch_size, r.weight_decay) for r in recipes.values()} == {(7, 32, 1e-4)}
    assert recipes["sgd-0.01-step"].optimizer == "sgd" and recipes["sgd-0.01-step"].learning_rate == 0.01


def test_sensitivity_retrains_eight_times_and_summarises(tmp_path, toy_methods):
    assert main(["run", "--method", "toy-dense", "--task", "digits", "--track", "sensitivity",
                 "--budget", "smoke", "--out", str(tmp_path)]) == 0  # fmt: skip
    found = metrics_of(tmp_path, "sensitivity")
    per_setting = [value for (name, scope), value in found.items() if name == "top1" and scope]
    assert len(per_setting) == 8
    assert found[("top1_min", "")] == min(per_setting) and found[("top1_max", "")] == max(per_setting)
    assert found[("top1_mean", "")] == pytest.approx(sum(per_setting) / 8)


def test_model_file_tracks_that_need_a_training_run_say_so(tmp_path, capsys):
    from tests.conftest import tiny_dense_model

    path = tmp_path / "m.keras"
    tiny_dense_model((8, 8, 1), 10).save(path)
    for track in ("training_cost", "sensitivity"):
        assert main(["measure", "--track", track, "--model", str(path), "--task", "digits"]) == 2
        assert "use `effbench run`" in capsys.readouterr().err


def test_sensitivity_scores_each_retrained_model_by_the_task_kinds_primary_metric():
    from types import SimpleNamespace

    from effbench.registry import TASKS
    from tracks.sensitivity import primary_quality, summary_metrics

    spec = TASKS.get("ctr-synth").spec
    labels = np.array([0, 1, 0, 1])
    # Click logit minus no-click logit: -2, 1, -0.5, 0.2: both clicks score above both non-clicks.
    outputs = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5], [0.2, 0.4]])
    context = SimpleNamespace(task=SimpleNamespace(spec=spec), splits=SimpleNamespace(y_test=labels))
    assert spec.quality.primary == "auc"
    assert primary_quality(context, outputs) == pytest.approx(1.0)
    assert primary_quality(context, outputs[:, ::-1]) == pytest.approx(0.0)
    found = {(m.name, m.scope): m.value for m in summary_metrics({"sgd-0.1-cosine": 0.6, "adam-0.001-step": 0.8},
                                                                 1.0, "auc")}  # fmt: skip
    assert found[("auc_mean", "")] == pytest.approx(0.7) and found[("auc", "sgd-0.1-cosine")] == 0.6
    assert not any(name.startswith("top1") for name, _ in found)
