"""``effbench plot``: a quality against another metric per method, mean and spread over seeds, from the records."""

from __future__ import annotations

import pytest

from effbench.cli import main
from effbench.hashing import stable_hash
from effbench.records import ResultStore
from effbench.track import Metric
from leaderboard.figures import curve_points, draw, series_name
from leaderboard.tables import records_frame
from tests.test_records import make_record


def pruning_run(method: str, variant: str, seed: int, sparsity: float, top1: float) -> list:
    """The accuracy and complexity records of one pruned run."""
    records = []
    for track, metrics in (
        ("accuracy", [Metric("top1", top1, "ratio"), Metric("fp32_top1", 0.98, "ratio")]),
        ("complexity", [Metric("sparsity", sparsity, "ratio"), Metric("size_bytes", 100, "byte", "deployed")]),
    ):
        record = make_record(config_hash=stable_hash({"run": [method, variant, seed, track]}), track=track)
        record.method, record.variant, record.suite, record.seed = method, variant, "pruning", seed
        record.budget = "quick"
        record.metrics = metrics
        records.append(record)
    return records


def curve_records() -> list:
    return [
        *pruning_run("gmp", "sparsity=0.5", 0, 0.50, 0.96), *pruning_run("gmp", "sparsity=0.5", 1, 0.50, 0.98),
        *pruning_run("gmp", "sparsity=0.9", 0, 0.90, 0.90), *pruning_run("gmp", "sparsity=0.9", 1, 0.91, 0.80),
        *pruning_run("random-erk", "sparsity=0.9", 0, 0.90, 0.95),
        *pruning_run("qat-4bit", "bits=2,backbone=resnet-cifar:depth=8", 0, 0.0, 0.7),
    ]  # fmt: skip


def test_each_point_is_a_run_at_its_mean_over_seeds_with_the_spread_and_the_twins_top1():
    points = curve_points(records_frame(curve_records()), "sparsity", "top1")
    gmp = points[points["series"] == "gmp"]
    assert gmp["sparsity"].tolist() == [0.5, 0.905] and gmp["top1"].tolist() == pytest.approx([0.97, 0.85])
    assert gmp["top1 std"].tolist() == pytest.approx([0.0141421, 0.0707107], rel=1e-5)
    assert gmp["seeds"].tolist() == [2, 2] and (points["fp32_top1"] == 0.98).all()
    assert set(points["series"]) == {"gmp", "random-erk", "qat-4bit"} and set(points["origin"]) == {"ours"}


def test_series_split_by_the_options_asked_for_and_scoped_metrics_are_axes():
    assert series_name("qat-4bit", "bits=2,backbone=resnet-cifar:depth=8", ["bits"]) == "qat-4bit bits=2"
    assert series_name("gmp", "", ["bits"]) == "gmp"
    points = curve_points(records_frame(curve_records()), "deployed/size_bytes", "top1", ["sparsity"])
    assert {"gmp sparsity=0.5", "gmp sparsity=0.9", "random-erk sparsity=0.9"} <= set(points["series"])
    assert (points["deployed/size_bytes"] == 100).all()


def test_a_metric_no_run_has_gives_no_points():
    assert curve_points(records_frame(curve_records()), "bops", "top1").empty


def test_the_figure_is_a_png(tmp_path):
    out = tmp_path / "curves.png"
    draw(curve_points(records_frame(curve_records()), "sparsity", "top1"), "sparsity", "top1", "pruning", out)
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 10_000


def test_the_command_plots_the_chosen_suite_and_says_what_it_drew(tmp_path, capsys):
    store = ResultStore(tmp_path / "results")
    for record in curve_records():
        store.save(record)
    out = tmp_path / "figure.png"
    assert main(["plot", str(out), "--x", "sparsity", "--out", str(tmp_path / "results"), "--suite", "pruning"]) == 0
    assert out.exists() and "4 points in 3 series" in capsys.readouterr().err
    assert main(["plot", str(out), "--x", "sparsity", "--out", str(tmp_path / "results"), "--method", "gmp",
                 "--front"]) == 0  # fmt: skip
    assert "2 points in 1 series" in capsys.readouterr().err
    assert main(["plot", str(out), "--x", "bops", "--out", str(tmp_path / "results")]) == 1
    assert "no run has both bops and top1" in capsys.readouterr().err
