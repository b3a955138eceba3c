"""Leaderboard tables: each function specified on small hand-made records."""

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from effbench.hashing import stable_hash
from effbench.protocol import SuiteProtocol
from effbench.records import Record, ResultStore, tidy_rows
from effbench.track import Metric
from leaderboard import tables


def make_record(method="mlp", top1=0.9, seed=0, task="digits", track="accuracy", source="measured",
                suite="architectures", cpu="cpu-a", budget="quick", division="closed", variant="",
                metrics=None, curves=None) -> Record:  # fmt: skip
    """A record whose config hash follows from its fields, so records that differ get files of their own."""
    fields = {"method": method, "variant": variant, "suite": suite, "task": task, "track": track, "seed": seed,
              "budget": budget, "division": division, "source": source, "cpu": cpu}  # fmt: skip
    if metrics is None:
        metrics = [Metric("top1", top1, "ratio")] if track == "accuracy" else []
    return Record(
        run_id=f"run-{seed}", config_hash=stable_hash(fields), training_hash="0" * 16, config={"recipe": fields},
        method=method, variant=variant, suite=suite, task=task, track=track, seed=seed, budget=budget,
        division=division, hardware={"cpu": cpu, "cpu_threads": 2, "gpu": "none", "platform": "Linux"},
        versions={"tensorflow": "2.21.0", "effbench": "0.1.0"}, git_commit="abc123", timestamp="2026-01-01T00:00:00",
        metrics=metrics, curves=curves or {}, source=source,
    )  # fmt: skip


def complexity_record(method="mlp", macs=1000.0, seed=0, **fields) -> Record:
    metrics = [Metric("macs", macs, "count"), Metric("params", macs / 10, "count"),
               Metric("macs", macs * 0.75, "count", "conv"), Metric("macs", macs * 0.25, "count", "logits"),
               Metric("params", 7, "count", "conv")]  # fmt: skip
    return make_record(method, seed=seed, track="complexity", metrics=metrics, **fields)


def save_all(root: Path, records: list[Record]) -> ResultStore:
    store = ResultStore(root)
    for record in records:
        store.save(record)
    return store


# ------------------------------------------------------------------------------------------- loading


def test_tidy_frame_is_tidy_rows_with_a_hardware_label_and_float_numbers():
    record = make_record(metrics=[Metric("top1", 0.5, "ratio"), Metric("test_samples", 359, "count"),
                                  Metric("converter", "failed", "text", "int8")])  # fmt: skip
    frame = tables.records_frame([record])
    expected = pd.DataFrame(list(tidy_rows(record)))
    assert list(frame.drop(columns="hardware").columns) == list(expected.columns)
    assert frame["value"].tolist() == [0.5, 359.0, "failed"] and isinstance(frame["value"][1], float)
    assert frame.drop(columns=["hardware", "value"]).equals(expected.drop(columns="value"))
    assert set(frame["hardware"]) == {"cpu-a, 2 threads"}


def test_hardware_label_names_gpus():
    runs = pd.DataFrame({"hw_cpu": ["x", "x"], "hw_cpu_threads": [2, 8], "hw_gpu": ["none", "H100"]})
    assert tables.hardware_labels(runs).tolist() == ["x, 2 threads", "x, 8 threads, H100"]


def test_runs_hold_config_and_curves_are_one_row_per_epoch():
    record = make_record(curves={"loss": [0.9, 0.5], "val_accuracy": [0.6, 0.8]})
    frames = tables.record_frames([record, make_record("vgg-small")])
    assert len(frames.runs) == 2 and json.loads(frames.runs.loc[0, "config"]) == record.config
    curves = frames.curves
    assert curves[["curve", "epoch", "value"]].values.tolist() == [["loss", 1, 0.9], ["loss", 2, 0.5],
                                                                   ["val_accuracy", 1, 0.6], ["val_accuracy", 2, 0.8]]
    assert set(curves["method"]) == {"mlp"} and set(curves["config_hash"]) == {record.config_hash}
    assert tables.method_curves(curves, "mlp")["run"].iloc[0] == "digits · quick · seed 0"


def test_no_records_give_empty_frames(tmp_path):
    frames = tables.load_frames(tmp_path / "missing", tmp_path)
    assert frames.tidy.empty and frames.runs.empty and frames.curves.empty
    assert not (tmp_path / tables.CACHE_DIR).exists()
    assert tables.overview_table(frames.tidy).empty and tables.track_table(frames.tidy, "edge").empty


# --------------------------------------------------------------------------------------------- cache


def test_second_load_reads_the_cache_and_equals_the_first(tmp_path, monkeypatch):
    save_all(tmp_path, [make_record(curves={"loss": [1.0, 0.5]}), complexity_record(),
                        make_record(metrics=[Metric("converter", "boom", "text", "int8")], track="edge")])
    cold = tables.load_frames(tmp_path)
    assert (tmp_path / ".cache" / "tidy.parquet").is_file()
    monkeypatch.setattr(tables, "record_frames", lambda records: pytest.fail("the cache was not used"))
    warm = tables.load_frames(tmp_path)
    for name in ("tidy", "runs", "curves"):
        pd.testing.assert_frame_equal(getattr(warm, name), getattr(cold, name))
    assert tables.load_results(tmp_path)["value"].tolist() == cold.tidy["value"].tolist()
    assert tables.load_curves(tmp_path)["value"].tolist() == [1.0, 0.5]


@pytest.mark.parametrize("change", ["rewrite", "add", "remove"])
def test_a_changed_added_or_removed_record_invalidates_the_cache(tmp_path, change):
    store = save_all(tmp_path, [make_record("mlp", 0.5), make_record("vgg-small", 0.6)])
    tables.load_frames(tmp_path)
    if change == "rewrite":  # the same file, the same size: only its content, mtime and inode differ
        store.save(make_record("mlp", 0.7))
        expected = {"mlp": 0.7, "vgg-small": 0.6}
    elif change == "add":
        store.save(make_record("resnet-cifar", 0.8))
        expected = {"mlp": 0.5, "vgg-small": 0.6, "resnet-cifar": 0.8}
    else:
        store.path_for(make_record("vgg-small")).unlink()
        expected = {"mlp": 0.5}
    tidy = tables.load_results(tmp_path)
    assert dict(zip(tidy["method"], tidy["value"], strict=True)) == expected


def test_a_corrupt_cache_is_rebuilt_and_an_unwritable_one_only_warns(tmp_path):
    save_all(tmp_path, [make_record()])
    tables.load_frames(tmp_path)
    tables.cache_path(tmp_path, "tidy").write_bytes(b"not parquet")
    assert tables.load_results(tmp_path)["value"].tolist() == [0.9]
    assert tables.cache_path(tmp_path, "tidy").read_bytes()[:4] == b"PAR1"
    other = tmp_path / "other"
    save_all(other, [make_record()])
    (other / ".cache").write_text("a file where the cache folder would go")
    with pytest.warns(UserWarning, match="cannot write the leaderboard cache"):
        assert tables.load_results(other)["value"].tolist() == [0.9]


def test_several_folders_are_concatenated(tmp_path):
    save_all(tmp_path / "a", [make_record("mlp")])
    save_all(tmp_path / "b", [make_record("vgg-small")])
    assert tables.load_results(tmp_path / "a", tmp_path / "b")["method"].tolist() == ["mlp", "vgg-small"]


def test_result_dirs_come_from_arguments_then_the_environment_then_the_repository(tmp_path):
    (tmp_path / "submissions" / "team" / "results").mkdir(parents=True)
    (tmp_path / "submissions" / "empty").mkdir()
    for folder in ("binarization", "demo", "baselines"):
        (tmp_path / "results" / folder).mkdir(parents=True)
    env = {tables.RESULTS_ENV: os.pathsep.join(["e1", "e2"])}
    assert tables.result_dirs(["-q", "--results", "a", "b"], env, tmp_path) == [Path("a"), Path("b")]
    assert tables.result_dirs(["--res", "x"], env, tmp_path) == [Path("e1"), Path("e2")]
    assert tables.result_dirs([], {}, tmp_path) == [tmp_path / "results" / "baselines",
                                                    tmp_path / "results" / "binarization",
                                                    tmp_path / "submissions" / "team" / "results"]  # fmt: skip


# --------------------------------------------------------------------------------------------- views


def test_overview_gives_mean_and_std_over_seeds_best_first():
    records = [make_record("mlp", top1, seed) for seed, top1 in enumerate((0.97, 0.98, 0.99))]
    records.append(make_record("vgg-small", 0.995))
    table = tables.overview_table(tables.records_frame(records))
    assert table["method"].tolist() == ["vgg-small", "mlp"]
    mlp = table.iloc[1]
    assert mlp["top1"] == pytest.approx(0.98) and mlp["top1 std"] == pytest.approx(0.01) and mlp["seeds"] == 3
    assert math.isnan(table.iloc[0]["top1 std"])
    assert list(table.columns) == [*tables.ROW_KEYS, "top1", "top1 std", "seeds"]
    assert tables.format_overview(table)["top1"].tolist() == ["0.995", "0.98 ± 0.01"]


@pytest.mark.parametrize("mean, std, text", [
    (0.977, 0.004, "0.977 ± 0.004"), (0.97712, float("nan"), "0.9771"), (12.34, 1.6, "12 ± 2"),
    (84480.0, 120.0, "84.48K ± 120"), (0.5, 0.0, "0.5"), (float("nan"), float("nan"), ""),
])  # fmt: skip
def test_mean_std_text(mean, std, text):
    assert tables.mean_std_text(mean, std) == text


def test_relative_accuracy_is_recorded_or_computed_against_the_fp32_twin():
    recorded = [Metric("top1", 0.8, "ratio"), Metric("fp32_top1", 0.9, "ratio"), Metric("top1_relative", 0.5, "ratio")]
    computed = [Metric("top1", 0.45, "ratio"), Metric("fp32_top1", 0.9, "ratio")]
    records = [make_record("bnn", metrics=recorded), make_record("xnor", metrics=computed), make_record("mlp", 0.9)]
    table = tables.overview_table(tables.records_frame(records)).set_index("method")
    assert table.loc["bnn", "top1_relative"] == 0.5  # what the track recorded wins
    assert table.loc["xnor", "top1_relative"] == pytest.approx(0.5)
    assert math.isnan(table.loc["mlp", "top1_relative"])


def test_paper_values_are_rows_of_their_own_never_averaged_with_ours():
    records = [make_record("resnet-cifar", 0.90), make_record("resnet-cifar", 0.95, source="paper: He et al. 2016")]
    tidy = tables.records_frame(records)
    table = tables.overview_table(tidy)
    assert table[["source", "top1"]].values.tolist() == [["paper: He et al. 2016", 0.95], ["measured", 0.90]]
    assert tables.is_reference(table).tolist() == [True, False]
    track = tables.track_table(tidy, "accuracy")
    assert track[["source", "top1"]].values.tolist() == [["measured", 0.90], ["paper: He et al. 2016", 0.95]]


def test_split_by_gives_one_table_per_value():
    table = tables.overview_table(tables.records_frame([make_record(task="digits"), make_record(task="mnist1d")]))
    parts = tables.split_by(table, "task")
    assert list(parts) == ["digits", "mnist1d"] and "task" not in parts["digits"].columns


def edge_record(method="mlp", seed=0, cv=0.1, **fields) -> Record:
    metrics = [Metric("converted", 1, "bool", "float32"), Metric("litert_t1_median_ms", 0.2, "ms", "float32"),
               Metric("litert_t1_cv", cv, "ratio", "float32"), Metric("litert_t1_median_ms", 0.1, "ms", "int8"),
               Metric("litert_t1_cv", 0.05, "ratio", "int8"), Metric("converter", "TFLite", "text")]  # fmt: skip
    return make_record(method, seed=seed, track="edge", metrics=metrics, **fields)


def test_track_view_leaves_per_layer_numbers_to_the_method_page():
    tidy = tables.records_frame([complexity_record(), make_record()])
    table = tables.track_table(tidy, "complexity")
    assert list(table.columns) == [*tables.RUN_KEYS, "source", "params", "macs", "seeds"]
    assert tables.is_layer_row(tidy).sum() == 3 and tables.scoped_metrics(tidy, "complexity") == []


def test_track_view_shows_scoped_metrics_of_variants_as_columns_or_one_metric_across_scopes():
    tidy = tables.records_frame([edge_record("mlp"), edge_record("vgg-small")])
    assert "float32/litert_t1_median_ms" in tables.track_table(tidy, "edge").columns
    assert list(tables.track_table(tidy, "edge", scoped=False).columns) == [*tables.RUN_KEYS, "source", "seeds"]
    assert tables.scoped_metrics(tidy, "edge") == ["litert_t1_median_ms", "litert_t1_cv", "converted"]  # declared order
    per_variant = tables.scoped_table(tidy, "edge", "litert_t1_median_ms")
    assert list(per_variant.columns) == [*tables.RUN_KEYS, "source", "float32", "int8", "seeds"]
    assert per_variant["float32"].tolist() == [0.2, 0.2] and per_variant["int8"].tolist() == [0.1, 0.1]


def test_filters_keep_the_chosen_values_and_empty_choices_keep_all():
    records = [make_record("mlp", seed=0), make_record("mlp", seed=1, cpu="cpu-b"), make_record("bnn", suite="bnn",
               task="mnist1d", budget="smoke", division="open"), complexity_record()]  # fmt: skip
    frames = tables.record_frames(records)
    options = tables.filter_options(frames.tidy)
    assert options == {"suite": ["architectures", "bnn"], "task": ["digits", "mnist1d"],
                       "track": ["accuracy", "complexity"], "hardware": ["cpu-a, 2 threads", "cpu-b, 2 threads"],
                       "division": ["closed", "open"], "budget": ["quick", "smoke"], "seed": [0, 1]}  # fmt: skip
    assert len(tables.apply_filters(frames.tidy, {column: [] for column in options})) == len(frames.tidy)
    expected = {"suite": ("bnn", 1), "task": ("mnist1d", 1), "track": ("complexity", 1),
                "hardware": ("cpu-b, 2 threads", 1), "division": ("open", 1), "budget": ("smoke", 1), "seed": (1, 1)}
    for column, (value, runs) in expected.items():
        filtered = tables.filter_frames(frames, {column: [value]})
        assert len(filtered.runs) == runs and set(filtered.tidy[column]) == {value}, column
    assert len(tables.apply_filters(frames.runs, {"track": ["accuracy"], "seed": [0]})) == 2


def test_csv_download_keeps_full_precision():
    tidy = tables.records_frame([make_record(top1=0.123456789)])
    assert "0.123456789" in tables.to_csv(tidy).decode()


# -------------------------------------------------------------------------------------------- pareto


def test_pareto_front_on_hand_picked_points():
    points = pd.DataFrame({
        "name": ["a", "b", "c", "d", "e", "f", "g", "h"],
        "macs": [1.0, 2.0, 3.0, 2.0, 4.0, 4.0, None, 0.5],
        "top1": [0.5, 0.7, 0.6, 0.7, 0.9, 0.8, 0.99, 0.1],
    })  # c: b is cheaper and better; d ties b (kept); f: e costs the same and is better; g has no cost
    front = tables.pareto_front(points, "macs", "top1")
    assert front["name"].tolist() == ["h", "a", "b", "d", "e"]


def test_pareto_points_mark_papers_which_do_not_move_our_front():
    records = [complexity_record("mlp", macs=100), make_record("mlp", 0.9),
               complexity_record("vgg-small", macs=1000), make_record("vgg-small", 0.95),
               complexity_record("big", macs=5000), make_record("big", 0.93),
               complexity_record("vgg-small", macs=900, source="paper: Simonyan 2015"),
               make_record("vgg-small", 0.99, source="paper: Simonyan 2015")]  # fmt: skip
    table = tables.overview_table(tables.records_frame(records), metrics=None)
    assert tables.cost_axes(table) == ["macs", "params"]
    points = tables.pareto_points(table, "macs", "top1").set_index(["method", "origin"])
    assert points["on_front"].to_dict() == {("vgg-small", "paper"): False, ("vgg-small", "ours"): True,
                                            ("big", "ours"): False, ("mlp", "ours"): True}  # fmt: skip


def test_latencies_of_converted_variants_are_pareto_costs():
    edge = make_record(track="edge", metrics=[Metric("litert_t1_median_ms", 0.2, "ms", "int8"),
                                              Metric("size_bytes", 10, "byte", "int8")])  # fmt: skip
    latency = make_record(track="latency", metrics=[Metric("keras_cpu_b1_median_ms", 0.5, "ms"),
                                                    Metric("keras_cpu_b1_cv", 0.1, "ratio")])  # fmt: skip
    table = tables.overview_table(tables.records_frame([edge, latency, make_record()]), None, tables.is_latency_metric)
    assert tables.cost_axes(table) == ["int8/litert_t1_median_ms", "keras_cpu_b1_median_ms"]


# ----------------------------------------------------------------------------------- method, compare


def test_method_page_tables():
    records = [complexity_record("mlp", seed=0), complexity_record("mlp", seed=1), make_record("mlp"),
               make_record("vgg-small")]  # fmt: skip
    frames = tables.record_frames(records)
    layers = tables.layer_table(frames.tidy, "mlp")
    assert layers["layer"].tolist() == ["conv", "logits"]  # graph order, not alphabetical
    assert layers.loc[0, "macs"] == 750 and layers.loc[0, "params"] == 7 and math.isnan(layers.loc[1, "params"])
    runs = tables.method_runs(frames.runs, "mlp")
    assert runs["track"].tolist() == ["accuracy", "complexity", "complexity"]
    assert {"hardware", "git_commit", "v_tensorflow", "config"} <= set(runs.columns)
    assert tables.layer_table(frames.tidy, "vgg-small").empty


def test_method_info_comes_from_the_registry_when_it_knows_the_method():
    info = tables.method_info("mlp")
    assert info["kind"] == "architecture" and info["year"] == 1986 and info["url"].startswith("https://")
    assert "W32/A32" in info["tags"] and info["scale"] == "full"
    assert tables.method_info("not-a-method") is None


def test_compare_puts_two_to_four_methods_side_by_side():
    records = [make_record("mlp", 0.9), make_record("vgg-small", 0.95, variant="width=2"),
               make_record("vgg-small", 0.97, source="paper: Simonyan 2015"), make_record("other", 0.5)]  # fmt: skip
    overview = tables.overview_table(tables.records_frame(records))
    table = tables.compare_table(overview, ["vgg-small", "mlp"])
    assert list(table.columns) == ["vgg-small · digits · quick · closed · paper",
                                   "vgg-small [width=2] · digits · quick · closed", "mlp · digits · quick · closed"]
    assert table.index.tolist() == ["source", "top1", "seeds"]
    assert table.loc["top1"].tolist() == ["0.97", "0.95", "0.9"]
    for wrong in (["mlp"], ["a", "b", "c", "d", "e"]):
        with pytest.raises(ValueError, match="2 to 4"):
            tables.compare_table(overview, wrong)


# ------------------------------------------------------------------------------------------- suite summary


def binarization_runs(method, top1s, lce_converted=True, lce_run_error=None, **fields):
    """Accuracy, complexity and edge records of one method over seeds, in the binarization suite."""
    records = []
    for seed, top1 in enumerate(top1s):
        accuracy = [Metric("top1", top1, "ratio"), Metric("fp32_top1", 0.98, "ratio"),
                    Metric("top1_relative", top1 / 0.98, "ratio")]  # fmt: skip
        complexity = [Metric("bops", 1.2e7, "count"), Metric("size_bytes", 49_000, "byte"),
                      Metric("bops", 5e6, "count", "conv")]  # fmt: skip
        edge = [Metric("converted", 1, "bool", "float32"), Metric("litert_t1_median_ms", 0.1, "ms", "float32"),
                Metric("converted", int(lce_converted), "bool", "lce")]  # fmt: skip
        if lce_converted:
            edge += [Metric("size_bytes", 64_000 + seed, "byte", "lce"), Metric("lce_t1_median_ms", 0.3, "ms", "lce"),
                     Metric("agreement", 1.0, "ratio", "lce")]  # fmt: skip
            if lce_run_error:
                edge = [m for m in edge if m.scope != "lce" or m.name in ("converted", "size_bytes")]
                edge.append(Metric("run_error", lce_run_error, "text", "lce"))
        else:
            edge.append(Metric("converter_error", "ternary weights are not binary", "text", "lce"))
        for track, metrics in (("accuracy", accuracy), ("complexity", complexity), ("edge", edge)):
            records.append(make_record(method, seed=seed, track=track, suite="binarization", metrics=metrics, **fields))
    return records


def test_suite_summary_gives_the_bibench_columns_per_method_best_relative_accuracy_first():
    records = [*binarization_runs("bnn", [0.80, 0.82, 0.84]), *binarization_runs("xnor", [0.90, 0.90, 0.90])]
    records += binarization_runs("bitnet158", [0.95], lce_converted=False)
    long_error = "RuntimeError: ERROR at wrapper.cc:57 : the following was false: AllocateTensors() == kTfLiteOk"
    records += binarization_runs("xnorpp", [0.5], lce_run_error=long_error)
    records.append(make_record("resnet-cifar", top1=0.98))  # the twin: another suite, not listed
    summary = tables.suite_summary(tables.records_frame(records), "binarization")
    assert summary["method"].tolist() == ["bitnet158", "xnor", "bnn", "xnorpp"]
    bnn = summary.set_index("method").loc["bnn"]
    assert bnn["top1"] == "0.82 ± 0.02" and bnn["fp32_top1"] == "0.98" and bnn["seeds"] == 3
    assert bnn["top1_relative"] == "0.84 ± 0.02"
    assert (bnn["bops"], bnn["packed_bytes"], bnn["lce_t1_ms"], bnn["float32_t1_ms"]) == ("12M", "49K", "0.3", "0.1")
    assert bnn["lce_bytes"] == "64K ± 1" and bnn["lce"] == "converted" and bnn["hardware"] == "cpu-a, 2 threads"
    bitnet = summary.set_index("method").loc["bitnet158"]
    assert bitnet["lce"] == "failed: ternary weights are not binary" and bitnet["lce_t1_ms"] == ""
    xnorpp = summary.set_index("method").loc["xnorpp"]
    assert xnorpp["lce"] == "run failed: …" + long_error[-60:]  # the end, where runtimes name the failed check
    assert (xnorpp["lce_bytes"], xnorpp["lce_t1_ms"]) == ("64K", "")


def test_suite_summary_leaves_paper_values_out_and_is_empty_for_an_unknown_suite():
    records = binarization_runs("bnn", [0.8]) + [make_record("bnn", top1=0.85, suite="binarization", source="paper: X")]
    frame = tables.records_frame(records)
    assert tables.suite_summary(frame, "binarization")["top1"].tolist() == ["0.8"]
    assert tables.suite_summary(frame, "pruning").empty
    untimed = tables.records_frame([make_record("biper", top1=0.6, suite="binarization", cpu="cpu-b")])
    assert tables.suite_summary(untimed, "binarization")["hardware"].tolist() == ["cpu-b, 2 threads"]


# ------------------------------------------------------------------------------------ reading a view


def test_the_default_budget_is_the_most_common_one_of_our_runs_plus_the_papers():
    runs = tables.record_frames([make_record("a", budget="quick"), make_record("b", budget="quick"),
                                 make_record("c", budget="smoke"),
                                 make_record("d", budget="paper", source="paper: X")]).runs  # fmt: skip
    assert tables.default_budgets(runs) == ["quick", "paper"]
    tie = tables.record_frames([make_record("a", budget="smoke"), make_record("b", budget="quick")]).runs
    assert tables.default_budgets(tie) == ["quick"] and tables.default_budgets(pd.DataFrame()) == []


def test_reading_view_says_constant_keys_once_and_cites_papers():
    records = [make_record("mlp", 0.9, seed=0), make_record("mlp", 0.92, seed=1),
               make_record("vgg-small", 0.97, source="paper: Simonyan and Zisserman 2015")]  # fmt: skip
    view = tables.reading_view(tables.overview_table(tables.records_frame(records)))
    assert view.constants == {"budget": "quick", "division": "closed"}
    assert list(view.table.columns) == ["method", "task", "source", "top1", "seeds"]
    assert view.table["source"].tolist() == ["paper [1]", "ours"] and view.citations == {
        1: "Simonyan and Zisserman 2015"}
    assert view.table["top1"].tolist() == ["0.97", "0.91 ± 0.01"]
    numbers = tables.reading_view(tables.overview_table(tables.records_frame(records)), as_text=False).table
    assert "top1 std" in numbers.columns  # mlp's seeds spread
    single = tables.reading_view(tables.overview_table(tables.records_frame(records[:1])), as_text=False).table
    assert "top1 std" not in single.columns and "source" not in single.columns  # no spread; every row ours


def test_timings_whose_calls_spread_are_flagged_per_run():
    tidy = tables.records_frame([edge_record("mlp", seed=0, cv=2.5), edge_record("mlp", seed=1, cv=0.1),
                                 edge_record("vgg-small", cv=0.2)])  # fmt: skip
    noisy = tables.noisy_timings(tidy)
    assert noisy[["method", "seed", "timing", "cv"]].values.tolist() == [
        ["mlp", 0, "float32/litert_t1_median_ms", 2.5]]
    table = tables.track_table(tidy, "edge")
    assert tables.noisy_column(table, noisy).tolist() == ["float32/litert_t1_median_ms (cv 2.5)", ""]
    named = tables.noisy_column(table.rename(columns={"float32/litert_t1_median_ms": "t1_ms"}), noisy,
                                {"t1_ms": "float32/litert_t1_median_ms"})  # fmt: skip
    assert named.tolist() == ["t1_ms (cv 2.5)", ""]


def test_suite_table_has_the_protocols_columns_bit_widths_and_papers_in_rows_of_their_own():
    protocol = SuiteProtocol("binarization", "test", summary_columns={
        "top1": ("", "top1"), "top1_relative": ("", "top1_relative"), "fp32_top1": ("", "fp32_top1"),
        "lce_t1_ms": ("lce", "lce_t1_median_ms")}, summary_outcomes=("lce",), summary_sort="top1_relative")
    records = [*binarization_runs("bnn", [0.80, 0.82]), *binarization_runs("xnor", [0.90])]
    records.append(make_record("bnn", metrics=[Metric("top1", 0.88, "ratio"), Metric("fp32_top1", 0.92, "ratio")],
                               suite="binarization", source="paper: Courbariaux 2016", budget="paper"))  # fmt: skip
    table = tables.suite_table(tables.records_frame(records), "binarization", protocol)
    assert table["method"].tolist() == ["bnn", "xnor", "bnn"]  # by relative accuracy: the paper's 0.957 first
    assert list(table.columns) == [*tables.ROW_KEYS, "W/A", "top1", "top1 std", "top1_relative", "top1_relative std",
                                   "fp32_top1", "fp32_top1 std", "lce_t1_ms", "lce_t1_ms std", "lce", "seeds"]
    assert table["W/A"].tolist() == ["1/1", "1/1", "1/1"] and table["seeds"].tolist() == [1, 1, 2]
    assert table.loc[0, "top1_relative"] == pytest.approx(0.88 / 0.92)  # computed for the paper
    assert table.loc[2, "top1 std"] == pytest.approx(0.01414, abs=1e-4) and table.loc[2, "lce"] == "converted"
    assert tables.suite_table(tables.records_frame(records), "pruning", protocol).empty


def test_suite_summary_keeps_budgets_apart_and_flags_noisy_timings():
    records = binarization_runs("bnn", [0.8]) + binarization_runs("bnn", [0.1], budget="smoke")
    noisy = edge_record("bnn", suite="binarization", cv=3.0)
    records[2] = replace(noisy, metrics=[*records[2].metrics, Metric("litert_t1_cv", 3.0, "ratio", "float32")],
                         config_hash=records[2].config_hash)  # fmt: skip
    summary = tables.suite_summary(tables.records_frame(records), "binarization")
    assert summary[["budget", "top1"]].values.tolist() == [["quick", "0.8"], ["smoke", "0.1"]]
    assert summary["W/A"].tolist() == ["1/1", "1/1"]
    assert summary["noisy"].tolist() == ["float32_t1_ms (cv 3)", ""]


def test_pareto_opens_on_a_task_and_cost_with_runs_of_ours():
    records = [make_record("bnn", 0.9, task="cifar10", source="paper: X"), complexity_record("mlp", 10.0),
               make_record("mlp", 0.8), make_record("vgg-small", 0.9)]  # fmt: skip
    table = tables.overview_table(tables.records_frame(records), metrics=None)
    assert tables.pareto_defaults(table, ["params", "macs"], ["top1"]) == ("digits", "params", "top1")
    points = tables.pareto_points(table, "macs", "top1")
    assert {"macs std", "top1 std", "seeds", "origin", "on_front"} <= set(points.columns)


def test_points_of_equal_cost_and_close_quality_are_spread_sideways_others_stay():
    cost = pd.Series([10.0, 10.0, 10.0, 10.0, 1000.0])
    quality = pd.Series([0.50, 0.505, 0.51, 0.90, 0.70])
    shown = tables.spread_ties(cost, quality, log=True)
    assert shown[3] == pytest.approx(10.0) and shown[4] == pytest.approx(1000.0)  # alone at its cost and quality
    assert shown[0] < 10.0 < shown[2] and shown[1] == pytest.approx(10.0)  # three close ones, centred on their cost
    assert shown[2] / 10.0 == pytest.approx(10.0 / shown[0])


def test_every_method_gets_a_colour_and_shape_of_its_own():
    styles = tables.method_styles(f"method-{i}" for i in range(80))
    assert len(set(styles.values())) == 80
    assert tables.method_styles(["b", "a"]) == {"a": (tables.PALETTE[0], "circle"), "b": (tables.PALETTE[1], "square")}


def test_paper_values_name_no_threads_and_no_commit_and_dirty_records_are_counted():
    paper = make_record("resnet-cifar", source="paper: He 2016")
    paper = replace(paper, hardware={"cpu": "paper-reported", "cpu_threads": 0, "gpu": "none", "platform": "x"},
                    git_commit="none")  # fmt: skip
    dirty = replace(make_record("resnet-cifar", seed=1), git_commit="abc+dirty")
    frames = tables.record_frames([paper, dirty])
    runs = tables.method_runs(frames.runs, "resnet-cifar")
    assert runs["hardware"].tolist() == ["paper-reported", "cpu-a, 2 threads"]
    assert runs["git_commit"].tolist() == [tables.NOT_RUN_HERE, "abc+dirty"]
    assert tables.dirty_records(runs) == 1


def test_a_submitted_method_is_described_by_its_records_and_its_submission():
    about = {"suite": "submissions", "kind": "operator", "scale": "full", "summary": "sign with a tanh gradient",
             "paper": {"title": "IR-Net", "year": 2020, "url": "https://arxiv.org/abs/1909.10788"},
             "taxonomy": {"weight_bits": 1, "activation_bits": 1, "applied": "training", "data": "labelled",
                          "structured": None, "dynamic": False},
             "submission": {"folder": "tanh", "team": "Lab", "licence": "MIT", "division": "closed", "open_tags": [],
                            "paper": {"title": "IR-Net", "year": 2020, "url": "https://x"}}}  # fmt: skip
    record = replace(make_record("tanh-sign", suite="submissions"), about=about)
    runs = tables.record_frames([record]).runs
    info = tables.method_info("tanh-sign", runs)
    assert (info["summary"], info["paper"], info["kind"], info["declared_by"]) == (
        "sign with a tanh gradient", "IR-Net", "operator", "records")
    assert "W1/A1" in info["tags"] and info["submissions"] == [about["submission"]]
    assert tables.bits_label(tables.method_abouts(runs)["tanh-sign"]) == "1/1"
    assert tables.method_info("tanh-sign") is None


def test_records_without_about_fall_back_on_the_submission_yaml(tmp_path):
    folder = tmp_path / "submissions" / "team-x"
    (folder / "results").mkdir(parents=True)
    (folder / "submission.yaml").write_text("team: Team X\nmethods: [tanh-sign:beta=2]\nlicence: MIT\n"
                                            "division: closed\npaper: {title: T, year: 2020, url: 'https://t'}\n")
    found = tables.folder_submissions([folder / "results", tmp_path / "results" / "baselines"])
    assert found["tanh-sign"][0]["team"] == "Team X"
    runs = tables.record_frames([make_record("tanh-sign", suite="submissions")]).runs
    info = tables.method_info("tanh-sign", runs, found)
    assert (info["paper"], info["declared_by"], info["submissions"][0]["folder"]) == ("T", "submission", "team-x")


def test_search_finds_methods_by_slug_or_paper_title_across_suites():
    runs = tables.record_frames([make_record("mlp"), make_record("resnet-cifar"),
                                 make_record("bnn", suite="binarization")]).runs  # fmt: skip
    catalog = tables.method_catalog(runs)
    assert tables.search_methods(catalog, "resnet")["method"].tolist() == ["resnet-cifar"]
    assert tables.search_methods(catalog, "residual learning")["method"].tolist() == ["resnet-cifar"]
    assert tables.search_methods(catalog, "binar")["method"].tolist() == ["bnn"]  # suite and title
    assert tables.search_methods(catalog, "").empty and tables.search_methods(catalog, "zzz").empty


def test_the_project_in_the_current_folder_is_the_default_else_the_checkout(tmp_path):
    checkout = tmp_path / "checkout"
    assert tables.project_root(tmp_path, checkout) == checkout
    (tmp_path / "results").mkdir()
    assert tables.project_root(tmp_path, checkout) == tmp_path
    assert not tables.has_records(tmp_path / "results")
    save_all(tmp_path / "results" / "mine", [make_record()])
    assert tables.has_records(tmp_path / "results" / "mine")


# --------------------------------------------------------------------------------------------- grids


def grid_record(form: str, depth: int, width: int, top1: float, seed: int = 0, **facts) -> Record:
    """An accuracy record of one deployable of a depth x width grid, its coordinates as facts."""
    name = f"{form}-depth{depth}-width{width}"
    record = make_record("grid-toy", top1, seed)
    return replace(record, deployable=name, config_hash=stable_hash([record.config_hash, name]),
                   facts={"depth": depth, "width": width, "form": form, **facts})  # fmt: skip


def grid_top1(form: str, depth: int, width: int, seed: int) -> float:
    return 0.5 + 0.1 * depth + 0.001 * width + 0.01 * (form == "shallow") + 0.002 * seed


def grid_records() -> list[Record]:
    """Both forms at depths 1, 2 and widths 16, 32, two seeds each."""
    return [grid_record(form, depth, width, grid_top1(form, depth, width, seed), seed)
            for form in ("deep", "shallow") for depth in (1, 2) for width in (16, 32) for seed in (0, 1)]  # fmt: skip


def test_a_method_whose_deployables_record_numbers_that_vary_is_a_grid_on_its_task():
    runs = tables.record_frames([*grid_records(), make_record("mlp"),
                                 replace(make_record("one-point", seed=3), facts={"depth": 2, "form": "deep"})]).runs
    assert tables.grid_methods(runs) == {"grid-toy": ["digits"]}  # one point, or no facts, is no grid


def test_the_grid_places_each_deployable_at_its_facts_and_panels_it_by_the_facts_that_are_not_axes():
    frames = tables.record_frames(grid_records())
    grid = tables.grid(frames.tidy, frames.runs, "grid-toy", "digits")
    assert grid.facts == ["depth", "form", "width"] and grid.axes == ["depth", "width"]
    points = grid.points.set_index("deployable")
    assert len(points) == 8 and set(points["panel"]) == {"form=deep", "form=shallow"}
    point = points.loc["shallow-depth2-width32"]
    assert (point["depth"], point["width"], point["form"], point["seeds"]) == (2, 32, "shallow", 2)
    assert point["top1"] == pytest.approx(grid_top1("shallow", 2, 32, 0.5))  # the mean over the two seeds
    assert point["top1 std"] == pytest.approx(0.002 / math.sqrt(2))


def test_chosen_axes_put_every_other_varying_fact_in_the_panel():
    frames = tables.record_frames(grid_records())
    grid = tables.grid(frames.tidy, frames.runs, "grid-toy", "digits", ["depth"])
    assert grid.axes == ["depth"]
    assert grid.points.set_index("deployable").loc["deep-depth1-width16", "panel"] == "form=deep · width=16"


def test_booleans_and_texts_are_never_grid_axes():
    records = [replace(grid_record("deep", 1, 16, 0.5), facts={"pruned": True, "form": "deep"}),
               replace(grid_record("deep", 2, 16, 0.6), facts={"pruned": False, "form": "shallow"})]  # fmt: skip
    frames = tables.record_frames(records)
    assert tables.grid_methods(frames.runs) == {}
    assert tables.grid_axes(tables.deployable_facts(frames.runs), ["pruned", "form"]) == []
