"""The runner: plans, skips what is recorded, keeps going past failures, pairs methods with twins."""

import pytest

from effbench.cli import main
from effbench.method import MethodRef
from effbench.records import ResultStore
from effbench.runner import execute_plan, make_plan


def plan(store, methods, tracks=("accuracy", "complexity"), seeds=(0,), force=False):
    refs = [MethodRef.parse(m) for m in methods]
    return make_plan(refs, ["digits"], list(seeds), list(tracks), "smoke", store, force=force)


def test_plan_groups_tracks_of_one_training_and_skips_recorded_runs(tmp_path, toy_methods):
    store = ResultStore(tmp_path)
    jobs = plan(store, ["toy-dense"], seeds=(0, 1))
    assert [(str(j.training.method), j.training.seed, j.tracks) for j in jobs] == [
        ("toy-dense", 0, ["accuracy", "complexity"]),
        ("toy-dense", 1, ["accuracy", "complexity"]),
    ]
    results = execute_plan(jobs, store, log=lambda _: None)
    assert sum(len(r.records) for r in results) == 4 and not any(r.failures for r in results)
    assert plan(ResultStore(tmp_path), ["toy-dense"], seeds=(0, 1)) == []
    assert len(plan(ResultStore(tmp_path), ["toy-dense"], seeds=(0, 1), force=True)) == 2


def test_rerun_resumes_only_missing_tracks_and_reuses_the_trained_model(tmp_path, toy_methods):
    store = ResultStore(tmp_path)
    execute_plan(plan(store, ["toy-dense"], tracks=["accuracy"]), store, log=lambda _: None)
    messages = []
    jobs = plan(ResultStore(tmp_path), ["toy-dense"])
    assert [j.tracks for j in jobs] == [["complexity"]]
    results = execute_plan(jobs, ResultStore(tmp_path), log=messages.append)
    assert not any(m.startswith("training") for m in messages)
    assert [r.track for r in results[0].records] == ["complexity"]
    messages.clear()
    forced = plan(ResultStore(tmp_path), ["toy-dense"], force=True)
    execute_plan(forced, ResultStore(tmp_path), log=messages.append, force=True)
    assert any(m.startswith("training toy-dense") for m in messages)


def test_compressed_method_runs_after_its_twin_and_reports_the_ratio(tmp_path, toy_methods):
    store = ResultStore(tmp_path)
    jobs = plan(store, ["toy-halved"])
    assert [str(j.training.method) for j in jobs] == ["toy-dense", "toy-halved"]
    assert jobs[0].tracks == ["accuracy"]
    results = execute_plan(jobs, store, log=lambda _: None)
    halved = {m.name: m.value for m in results[1].records[0].metrics}
    twin = {m.name: m.value for m in results[0].records[0].metrics}
    assert halved["fp32_top1"] == twin["top1"]
    assert halved["top1_relative"] == pytest.approx(halved["top1"] / twin["top1"])
    assert "fp32_top1" not in twin


def test_a_failing_run_writes_no_record_and_the_others_still_run(tmp_path, toy_methods):
    store = ResultStore(tmp_path)
    results = execute_plan(plan(store, ["toy-broken", "toy-dense"]), store, log=lambda _: None)
    assert results[0].records == [] and "breaks on purpose" in results[0].failures[0]
    assert len(results[1].records) == 2
    assert {r.method for r in ResultStore(tmp_path).records()} == {"toy-dense"}


def test_records_carry_provenance(tmp_path, toy_methods):
    store = ResultStore(tmp_path)
    execute_plan(plan(store, ["toy-dense:units=8"], tracks=["accuracy"]), store, log=lambda _: None)
    (record,) = ResultStore(tmp_path).records()
    assert record.variant == "units=8" and record.config["options"] == {"units": 8}
    assert record.config["recipe"]["epochs"] == 1
    assert record.division == "open"  # the toys suite declares no protocol, so it has no closed division
    assert set(record.hardware) >= {"cpu", "cpu_threads", "gpu"}
    assert set(record.versions) >= {"python", "tensorflow", "tf_keras", "tfmot", "larq", "litert"}
    assert record.git_commit and record.timestamp.endswith("+00:00")
    assert set(record.curves) >= {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_cli_run_exits_non_zero_when_a_run_fails_and_prints_the_table(tmp_path, toy_methods, capsys):
    code = main(["run", "--method", "toy-dense", "toy-broken", "--task", "digits", "--track", "accuracy",
                 "--budget", "smoke", "--out", str(tmp_path)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    assert "toy-dense" in out and "top1" in out
    assert "1 run(s) failed" in err and "toy-broken" in err
    assert main(["table", "--out", str(tmp_path), "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    # One budget in the folder: `table` says it once on stderr instead of in a column.
    assert csv[0].startswith("method,variant,task,division,top1") and csv[1].startswith("toy-dense,")


def test_cli_rejects_unknown_names_with_a_clear_message(capsys):
    assert main(["run", "--method", "no-such", "--task", "digits", "--track", "accuracy"]) == 2
    assert "unknown method 'no-such'" in capsys.readouterr().err
    assert main(["run", "--method", "mlp", "--task", "digits", "--track", "speed"]) == 2
    assert "unknown track 'speed'" in capsys.readouterr().err


def test_a_recipe_can_train_under_a_mirrored_strategy(tmp_path, toy_methods, monkeypatch):
    """MirroredStrategy runs on the CPU when there is no GPU, so the whole path is exercised here."""
    from dataclasses import replace

    from effbench.registry import TASKS

    digits = TASKS.get("digits").factory
    mirrored = replace(digits.recipes["smoke"], distribution="mirrored")
    monkeypatch.setitem(digits.recipes, "smoke", mirrored)
    store = ResultStore(tmp_path)
    (result,) = execute_plan(plan(store, ["toy-dense"], tracks=["accuracy"]), store, log=lambda _: None)
    assert result.failures == [] and result.records[0].config["recipe"]["distribution"] == "mirrored"
    assert 0.0 <= {m.name: m.value for m in result.records[0].metrics}["top1"] <= 1.0
