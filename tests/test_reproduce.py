"""``effbench reproduce``: recorded runs are re-run elsewhere and judged metric by metric."""

import dataclasses
import hashlib

import pytest

from effbench.cli import main
from effbench.method import MethodRef
from effbench.records import Record, ResultStore
from effbench.reproduce import (
    EXACT,
    HARDWARE_DIFFERS,
    MISMATCH,
    NOT_COMPARED,
    NOT_REPRODUCIBLE,
    OK,
    SEED_BAND,
    TIMING,
    Outcome,
    judge,
    paired_scopes,
    prepare,
    rule_for,
    seed_spreads,
    select_records,
)
from effbench.tasks.embedded import Digits
from effbench.track import Metric


def record_runs(root, *methods, tracks=("accuracy", "complexity")):
    code = main(["run", "--method", *methods, "--task", "digits", "--track", *tracks, "--budget", "smoke",
                 "--out", str(root)])  # fmt: skip
    assert code == 0


def snapshot(root):
    """Every file under ``root`` with its content hash: what 'nothing written' is checked against."""
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def output_lines(text, *words):
    return [line for line in text.splitlines() if all(word in line.split() for word in words)]


def test_recorded_runs_reproduce_into_another_folder_and_paper_records_are_left_out(tmp_path, toy_methods, capsys):
    results, out = tmp_path / "results", tmp_path / "out"
    record_runs(results, "toy-dense", "toy-halved")
    store = ResultStore(results)
    (measured,) = [r for r in store.records() if r.method == "toy-dense" and r.track == "accuracy"]
    store.save(dataclasses.replace(measured, config_hash="feedfacefeedface", source="paper: Toy et al. 2024"))
    before = snapshot(results)
    capsys.readouterr()

    assert main(["reproduce", "--results", str(results), "--out", str(out), "--full"]) == 0
    text = capsys.readouterr().out
    assert "reproducing 4 recorded run(s)" in text and "4 ok" in text and MISMATCH not in text
    assert output_lines(text, "toy-halved", "accuracy", "fp32_top1", OK)
    assert output_lines(text, "toy-dense", "complexity", "macs", EXACT, OK)
    assert snapshot(results) == before
    assert {r.config_hash for r in ResultStore(out).records()} == {r.config_hash for r in store.records()} - {
        "feedfacefeedface"
    }


def test_a_value_changed_beyond_tolerance_is_a_mismatch(tmp_path, toy_methods, capsys):
    results = tmp_path / "results"
    record_runs(results, "toy-dense")
    store = ResultStore(results)
    for record in store.records():
        altered = {"top1": 0.1, "macs": 1}  # top1 far outside its 0.02 floor; a count off by one
        metrics = [
            dataclasses.replace(m, value=m.value + altered[m.name]) if m.name in altered and not m.scope else m
            for m in record.metrics
        ]
        store.save(dataclasses.replace(record, metrics=metrics))
    before = snapshot(results)
    capsys.readouterr()

    assert main(["reproduce", "--results", str(results), "--task", "digits", "--full"]) == 1
    text = capsys.readouterr().out
    assert output_lines(text, "accuracy", "top1", MISMATCH) and output_lines(text, "complexity", "macs", MISMATCH)
    assert output_lines(text, "accuracy", "loss", OK) and "2 MISMATCH" in text
    assert snapshot(results) == before


def test_a_recipe_changed_since_recording_is_reported_as_config_changed(tmp_path, toy_methods, capsys, monkeypatch):
    results = tmp_path / "results"
    record_runs(results, "toy-dense", tracks=("complexity",))
    longer = dataclasses.replace(Digits.recipes["smoke"], epochs=2)
    monkeypatch.setitem(Digits.recipes, "smoke", longer)
    capsys.readouterr()

    assert main(["reproduce", "--results", str(results)]) == 1
    text = capsys.readouterr().out
    assert "config changed" in text and "recipe.epochs: 1 -> 2" in text
    # Nothing was re-run: today's recipe would measure something else.
    assert not any(line.startswith("training ") for line in text.splitlines())


def make_record(method="toy-dense", variant="", suite="toys", task="digits", track="accuracy", seed=0,
                budget="smoke", source="measured", top1=0.5) -> Record:  # fmt: skip
    options = dict(item.split("=") for item in filter(None, variant.split(",")))
    return Record(
        run_id="r", config_hash=f"{method}-{variant}-{task}-{track}-{seed}-{budget}-{source}", training_hash="t",
        config={"method": method, "options": options}, method=method, variant=variant, suite=suite, task=task,
        track=track, seed=seed, budget=budget, division="closed", hardware={"cpu": "x"}, versions={}, git_commit="abc",
        timestamp="2026-01-01T00:00:00+00:00", metrics=[Metric("top1", top1, "ratio")], source=source,
    )  # fmt: skip


def test_selection_by_method_variant_suite_task_budget_and_track_skips_paper_records():
    records = [
        make_record(),
        make_record(variant="units=8"),
        make_record(method="mlp", suite="architectures"),
        make_record(task="mnist1d", track="complexity", budget="quick"),
        make_record(source="paper: Toy et al. 2024"),
    ]

    def chosen(**filters):
        return [(r.method, r.variant, r.task, r.track) for r in select_records(records, **filters)]

    assert len(chosen()) == 4
    assert chosen(methods=[MethodRef.parse("mlp")]) == [("mlp", "", "digits", "accuracy")]
    assert chosen(methods=[MethodRef.parse("toy-dense:units=8")]) == [("toy-dense", "units=8", "digits", "accuracy")]
    assert len(chosen(methods=[MethodRef.parse("toy-dense")])) == 3
    assert chosen(suite="architectures") == [("mlp", "", "digits", "accuracy")]
    assert chosen(tasks=["mnist1d"]) == chosen(budget="quick") == chosen(tracks=["complexity"])
    assert chosen(tasks=["mnist1d"]) == [("toy-dense", "", "mnist1d", "complexity")]


def test_phone_timings_are_listed_as_not_reproducible():
    outcome = prepare(make_record(track="edge_device"))
    assert isinstance(outcome, Outcome) and outcome.status == NOT_REPRODUCIBLE


@pytest.mark.parametrize(
    ("metric", "unit", "kind"),
    [
        ("top1", "ratio", SEED_BAND), ("agreement", "ratio", SEED_BAND), ("sparsity", "ratio", EXACT),
        ("macs", "count", EXACT), ("size_bytes", "byte", EXACT), ("converted", "bool", EXACT),
        ("converter_error", "text", EXACT), ("keras_cpu_device", "text", NOT_COMPARED),
        ("runtime", "text", NOT_COMPARED), ("converter", "text", NOT_COMPARED), ("litert_t1_cv", "ratio", NOT_COMPARED),
        ("litert_t1_median_ms", "ms", TIMING), ("litert_t1_repeats", "count", TIMING),
        ("peak_rss_bytes", "byte", TIMING), ("train_seconds", "s", TIMING),
    ],
)  # fmt: skip
def test_tolerance_rules(metric, unit, kind):
    assert rule_for(metric, unit).kind == kind


def test_judging_bands_and_hardware():
    top1 = rule_for("top1", "ratio")
    assert judge(top1, 0.90, 0.915, None, True) == ("±0.02 (floor)", OK)
    assert judge(top1, 0.90, 0.93, None, True)[1] == MISMATCH
    assert judge(top1, 0.90, 0.93, 0.011, True) == ("±0.033 (3 sigma of seeds)", OK)
    assert judge(top1, 0.90, None, None, True)[1] == MISMATCH
    assert judge(rule_for("loss", "nat"), 0.40, 0.49, None, True) == ("±0.1 (25% of recorded)", OK)
    timing = rule_for("litert_t1_median_ms", "ms")
    assert judge(timing, 1.0, 1.9, None, True)[1] == OK and judge(timing, 1.0, 2.1, None, True)[1] == MISMATCH
    assert judge(timing, 1.0, 9.0, None, False)[1] == HARDWARE_DIFFERS
    assert judge(rule_for("target_reached", "bool"), 1, 0, None, True)[1] == MISMATCH


def test_layers_keras_numbered_differently_are_paired_in_order():
    def layers(*names):
        return [Metric("macs", 1, "count", scope) for scope in ("", *names)]

    assert paired_scopes(layers("dense_1", "logits"), layers("dense_3", "logits")) == {"dense_3": "dense_1"}
    assert paired_scopes(layers("dense_1", "logits"), layers("dense_3", "dense_4", "logits")) == {}


def test_seed_spreads_need_two_seeds():
    spreads = seed_spreads([make_record(seed=0, top1=0.5), make_record(seed=1, top1=0.7), make_record(task="mnist1d")])
    assert list(spreads.values()) == [pytest.approx(0.1414, abs=1e-4)]


def test_out_inside_the_results_folder_is_refused(tmp_path, capsys):
    (tmp_path / "records").mkdir()
    assert main(["reproduce", "--results", str(tmp_path), "--out", str(tmp_path / "again")]) == 2
    assert "never write there" in capsys.readouterr().err


def test_the_report_lists_what_did_not_reproduce_and_counts_the_rest_unless_full(capsys):
    from effbench.reproduce import Check, print_report
    from tests.test_records import make_record

    checks = [Check("", "top1", "ratio", 0.9, 0.5, "±0.02", MISMATCH), Check("", "macs", "count", 10, 10, EXACT, OK),
              Check("", "loss", "nat", 0.3, 0.31, "x0.75..x1.25", OK)]  # fmt: skip
    print_report([Outcome(make_record(), MISMATCH, checks=checks)])
    text = capsys.readouterr().out
    assert "2 metric(s) ok (--full lists every compared metric)" in text
    assert output_lines(text, "top1", MISMATCH) and not output_lines(text, "macs", EXACT, OK)
    print_report([Outcome(make_record(), MISMATCH, checks=checks)], full=True)
    assert output_lines(capsys.readouterr().out, "macs", EXACT, OK)
