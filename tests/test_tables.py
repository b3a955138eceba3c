"""Results tables from records: one row per (method, variant, task), metrics averaged over seeds."""

import pandas as pd

from effbench.track import Metric
from leaderboard.tables import format_table, human_number, records_frame, results_table
from tests.test_records import make_record


def record(seed, top1, method="mlp"):
    r = make_record(config_hash=f"{seed:016x}", value=top1)
    r.seed, r.method = seed, method
    r.metrics.append(Metric("converter", "failed: op not supported", "outcome"))
    return r


def test_tidy_frame_has_one_row_per_metric_with_provenance_columns():
    frame = records_frame([record(0, 0.5)])
    assert len(frame) == 3
    assert {"hw_cpu", "hw_gpu", "v_tensorflow", "git_commit", "config_hash", "unit", "scope"} <= set(frame.columns)


def test_results_table_averages_seeds_and_skips_layer_rows_and_strings():
    table = results_table(records_frame([record(0, 0.5), record(1, 0.7), record(0, 0.9, method="vgg-small")]))
    assert list(table["method"]) == ["mlp", "vgg-small"]
    assert table.loc[0, "top1"] == 0.6 and table.loc[0, "seeds"] == 2 and table.loc[1, "seeds"] == 1
    assert "macs" not in table.columns and "converter" not in table.columns


def test_empty_records_give_an_empty_table():
    assert results_table(pd.DataFrame()).empty


def test_human_numbers():
    assert [human_number(v) for v in (0.96661, 359, 84_480, 2_270_000, 5.239e10)] == [
        "0.9666", "359", "84.48K", "2.27M", "52.39G",
    ]


def test_csv_keeps_full_precision_and_markdown_is_a_table():
    table = results_table(records_frame([record(0, 0.123456789)]))
    assert "0.123456789" in format_table(table, "csv")
    assert format_table(table, "markdown").splitlines()[1].startswith("|:")


def test_track_view_turns_scoped_metrics_into_columns():
    r = record(0, 0.5)
    r.track = "edge"
    r.metrics = [Metric("size_bytes", 1000, "byte", "int8"), Metric("size_bytes", 4000, "byte", "float32"),
                 Metric("converter_error", "boom", "text", "lce")]  # fmt: skip
    other = record(0, 0.9)
    table = results_table(records_frame([r, other]), track="edge")
    assert list(table.columns) == ["method", "variant", "deployable", "task", "budget", "division",
                                   "float32/size_bytes", "int8/size_bytes", "seeds"]  # fmt: skip
    assert table.loc[0, "int8/size_bytes"] == 1000


def test_paper_values_are_not_averaged_into_measured_results():
    paper = record(1, 0.99)
    paper.source = "paper: He et al. 2016"
    table = results_table(records_frame([record(0, 0.5), paper]))
    assert table.loc[0, "top1"] == 0.5 and table.loc[0, "seeds"] == 1
