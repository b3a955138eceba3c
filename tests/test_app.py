"""The leaderboard app, page by page and filter by filter (Streamlit's AppTest), and `effbench leaderboard`.

The app reads its result folders from ``$EFFBENCH_RESULTS`` here: under AppTest, ``sys.argv`` is pytest's.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from effbench.cli import build_parser
from effbench.records import Record
from effbench.track import Metric
from leaderboard import command, tables
from leaderboard.app import PAGES
from tests.test_leaderboard_tables import complexity_record, grid_records, make_record, save_all

APP = Path(__file__).resolve().parent.parent / "leaderboard" / "app.py"
PAPER = "paper: He et al. 2016"
SUBMITTED = {"suite": "submissions", "kind": "operator", "scale": "full", "summary": "sign, with a *tanh* gradient",
             "paper": {"title": "IR-Net", "year": 2020, "url": "https://arxiv.org/abs/1909.10788"},
             "taxonomy": {"weight_bits": 1, "activation_bits": 1, "applied": "training", "data": "labelled",
                          "structured": None, "dynamic": False},
             "submission": {"folder": "tanh-sign-binarizer", "team": "Binary Lab", "licence": "MIT",
                            "division": "closed", "open_tags": [], "paper": {"title": "IR-Net", "year": 2020,
                                                                            "url": "https://x.org"}}}  # fmt: skip


def latency_record(method: str, ms: float, seed: int, cv: float = 0.1) -> Record:
    metrics = [Metric("keras_cpu_b1_median_ms", ms, "ms"), Metric("keras_cpu_b1_cv", cv, "ratio")]
    return make_record(method, seed=seed, track="latency", metrics=metrics)


def leaderboard_records() -> list[Record]:
    """Three suites, two tasks, two seeds, three tracks, a compressed method, a submitted one, a paper's values,
    a smoke run and a noisy timing."""
    records = []
    for method, top1, macs, ms in (("mlp", 0.96, 84_480.0, 0.3), ("resnet-cifar", 0.98, 2.5e6, 2.4)):
        for seed in (0, 1):
            curves = {"loss": [1.0, 0.4, 0.2], "accuracy": [0.5, 0.8, top1]}
            cv = 0.9 if (method, seed) == ("mlp", 1) else 0.1
            records += [make_record(method, top1 + 0.004 * seed, seed, curves=curves),
                        complexity_record(method, macs, seed), latency_record(method, ms, seed, cv)]  # fmt: skip
    compressed = [Metric("top1", 0.9, "ratio"), Metric("fp32_top1", 0.98, "ratio")]
    records += [make_record("resnet-cifar", 0.991, source=PAPER),
                complexity_record("resnet-cifar", 2.4e6, source=PAPER),
                make_record("bnn-toy", suite="binarization", metrics=compressed),
                complexity_record("bnn-toy", 3e4, suite="binarization"),
                replace(make_record("tanh-sign", 0.83, suite="submissions"), about=SUBMITTED),
                make_record("mlp", 0.7, task="mnist1d", budget="smoke", division="open", cpu="cpu-b")]  # fmt: skip
    return records


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    save_all(tmp_path, leaderboard_records())
    monkeypatch.setenv(tables.RESULTS_ENV, str(tmp_path))
    return tmp_path


def open_app(page: str = "Overview", query: dict | None = None) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=60)
    app.query_params.update(query or {})
    app.run()
    if page != "Overview":
        app.sidebar.radio(key="page").set_value(page).run()
    assert not app.exception, app.exception
    return app


def records_caption(app: AppTest) -> str:
    return next(caption.value for caption in app.caption if " records, from " in caption.value)


def captions(app: AppTest) -> list[str]:
    return [caption.value for caption in app.caption]


def test_overview_shows_each_suites_declared_columns_per_task_with_mean_and_std(results):
    app = open_app()
    assert [h.value for h in app.subheader] == ["Suite: architectures", "Suite: binarization", "Suite: submissions"]
    assert [m.value for m in app.markdown if m.value.startswith("**Task")] == [
        "**Task: digits**", "**Task: digits**", "**Task: digits**"]  # the smoke run on mnist1d is filtered out
    digits = app.dataframe[0].value
    # The architectures protocol's summary columns that the records hold, and no other metric.
    assert list(digits.columns) == ["method", "source", "W/A", "top1", "params", "macs", "keras_cpu_b1_ms", "seeds",
                                    "noisy timings"]  # fmt: skip
    assert digits["method"].tolist() == ["resnet-cifar", "resnet-cifar", "mlp"]
    assert digits["source"].tolist() == ["paper [1]", "ours", "ours"] and digits["W/A"].tolist() == ["32/32"] * 3
    assert digits["top1"].tolist() == ["0.991", "0.982 ± 0.003", "0.962 ± 0.003"]
    assert digits["noisy timings"].tolist() == ["", "", "keras_cpu_b1_ms (cv 0.9)"]
    assert "budget: **quick** · division: **closed** (every row)" in captions(app)
    assert "[1] He et al\\. 2016" in captions(app)
    assert app.dataframe[2].value["W/A"].tolist() == ["1/1"]  # the submitted method, from its records
    app.toggle(key="numbers").set_value(True).run()
    numbers = app.dataframe[0].value
    assert numbers["top1"].iloc[1] == pytest.approx(0.982) and "top1 std" in numbers.columns
    assert "params std" not in numbers.columns  # no run's params spread over seeds
    assert records_caption(app) == f"17 of 18 records, from {results}"


@pytest.mark.parametrize("track, column", [("accuracy", "top1"), ("complexity", "macs"),
                                           ("latency", "keras_cpu_b1_median_ms")])  # fmt: skip
def test_tracks_page_shows_the_chosen_tracks_whole_model_metrics(results, track, column):
    app = open_app("Tracks")
    app.selectbox(key="view_track").set_value(track).run()
    table = app.dataframe[0].value
    assert column in table.columns and not any("/" in c for c in table.columns)
    assert set(table["method"]) >= {"mlp", "resnet-cifar"}
    if track == "complexity":
        assert "Per-layer numbers are on the Method page." in captions(app)


def test_pareto_page_opens_on_data_and_plots_quality_against_each_cost_with_papers_marked(results):
    app = open_app("Pareto")
    assert app.selectbox(key="pareto_task").value == "digits"
    assert app.selectbox(key="cost").options == ["macs", "params", "keras_cpu_b1_median_ms"]
    assert app.selectbox(key="cost").value == "macs"
    assert len(app.get("vega_lite_chart")) == 1
    points = app.dataframe[0].value.set_index(["method", "source"])
    # The paper's point is cheaper and more accurate than our resnet-cifar, yet leaves our front as it is.
    assert points["on_front"].to_dict() == {("resnet-cifar", "paper [1]"): False, ("resnet-cifar", "ours"): True,
                                            ("mlp", "ours"): True, ("bnn-toy", "ours"): True}  # fmt: skip
    assert points.loc[("resnet-cifar", "ours"), "top1"] == "0.982 ± 0.003"
    app.selectbox(key="cost").set_value("keras_cpu_b1_median_ms").run()
    app.checkbox(key="log").uncheck().run()
    assert not app.exception and len(app.get("vega_lite_chart")) == 1


def test_pareto_chart_spreads_equal_costs_and_draws_error_bars(results):
    from leaderboard.app import pareto_chart

    table = tables.overview_table(tables.load_results(results), metrics=None)
    points = tables.pareto_points(table[table["task"] == "digits"], "macs", "top1")
    spec = pareto_chart(points, "macs", "top1", True, sorted(points["method"])).to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks.count("rule") == 2 and marks.count("point") == 2 and "text" in marks
    data = next(iter(spec["datasets"].values()))
    assert {"shown_cost", "cost", "low", "high", "label"} <= set(data[0])


def test_method_page_shows_registry_results_layers_curves_and_provenance(results):
    app = open_app("Method")
    app.selectbox(key="method").set_value("resnet-cifar").run()
    assert "Deep Residual Learning for Image Recognition" in app.markdown[0].value
    assert "`architecture`" in app.markdown[0].value
    assert [h.value for h in app.subheader] == ["Results", "Per-layer complexity", "Training curves", "Provenance",
                                                "Config"]  # fmt: skip
    assert app.dataframe[1].value["layer"].tolist() == ["conv", "logits"]
    assert len(app.get("vega_lite_chart")) == 1
    provenance = app.dataframe[2].value
    assert {"hardware", "git_commit", "v_tensorflow"} <= set(provenance.columns) and len(provenance) == 8
    assert provenance.loc[provenance["source"] == PAPER, "git_commit"].tolist() == [tables.NOT_RUN_HERE] * 2
    assert "recipe" in json.loads(app.json[0].value)


def test_the_record_shown_is_always_one_of_the_chosen_methods(results):
    """Issue 15, item 1: after switching methods, the record selector and its JSON belong to the new method."""
    app = open_app("Method")
    app.selectbox(key="method").set_value("resnet-cifar").run()
    record = app.selectbox(key="record_resnet-cifar")
    record.set_value(record.options[-1]).run()
    app.selectbox(key="method").set_value("mlp").run()
    mlp_records = {record.config_hash for record in leaderboard_records() if record.method == "mlp"}
    assert app.selectbox(key="record_mlp").value in mlp_records
    assert json.loads(app.json[0].value)["recipe"]["method"] == "mlp"


def test_a_submitted_method_shows_what_its_records_and_submission_say(results):
    app = open_app(query={"page": "Method", "method": "tanh-sign"})
    assert app.selectbox(key="method").value == "tanh-sign"
    header = app.markdown[0].value
    assert "sign, with a \\*tanh\\* gradient" in header and "IR\\-Net" in header and "`W1/A1`" in header
    submitted = next(m.value for m in app.markdown if m.value.startswith("Submitted by"))
    assert "**Binary Lab**" in submitted and "licence MIT" in submitted and "closed division" in submitted


def test_method_page_shows_the_bit_widths_and_calibration_each_deployable_recorded(tmp_path, monkeypatch):
    chosen = {"bit_widths": {"conv": [4, 8], "logits": [8, 8]}, "calibration": {"split": "train", "samples": 128}}
    records = [replace(make_record("mp-toy", 0.9, suite="quantization"), deployable="avg-bits=4", facts=chosen),
               make_record("mp-toy", 0.95, seed=1, suite="quantization")]  # fmt: skip
    save_all(tmp_path, records)
    monkeypatch.setenv(tables.RESULTS_ENV, str(tmp_path))
    app = open_app("Method")
    app.selectbox(key="method").set_value("mp-toy").run()
    assert "What the method chose" in [h.value for h in app.subheader]
    bits = app.dataframe[1].value
    assert bits[["deployable", "layer", "w_bits", "a_bits"]].values.tolist() == [
        ["avg-bits=4", "conv", 4, 8], ["avg-bits=4", "logits", 8, 8],
    ]  # fmt: skip
    facts = app.dataframe[2].value
    assert facts[["fact", "value"]].values.tolist() == [["calibration", '{"samples": 128, "split": "train"}']]


def test_method_page_of_a_method_nothing_describes(results):
    app = open_app("Method")
    app.selectbox(key="method").set_value("bnn-toy").run()
    assert any("Neither this checkout's registry nor the method's records" in c for c in captions(app))
    assert "Training curves" not in [h.value for h in app.subheader]


def chart_spec(app: AppTest) -> dict:
    (chart,) = app.get("vega_lite_chart")
    return json.loads(chart.proto.spec)


def marks(spec: dict) -> list[str]:
    """The mark types of a chart, inside its facet and layers."""
    spec = spec.get("spec", spec)
    layers = spec.get("layer", [spec])
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in layers]


def test_grid_page_draws_quality_as_a_heat_map_over_two_facts_one_panel_per_other_fact(tmp_path, monkeypatch):
    save_all(tmp_path, [*grid_records(), make_record("resnet-cifar")])
    monkeypatch.setenv(tables.RESULTS_ENV, str(tmp_path))
    app = open_app("Grid")
    assert app.selectbox(key="grid_method").options == ["grid-toy"]  # resnet-cifar has no deployables' facts
    spec = chart_spec(app)
    assert marks(spec) == ["rect", "text"] and spec["facet"]["column"]["field"] == "panel"
    table = app.dataframe[0].value
    assert list(table.columns) == ["deployable", "depth", "form", "width", "top1", "seeds"] and len(table) == 8
    row = table.set_index("deployable").loc["shallow-depth2-width32"]
    assert (row["depth"], row["width"], row["top1"]) == (2, 32, "0.743 ± 0.001")


def test_grid_page_draws_a_curve_over_the_one_fact_that_is_a_number(tmp_path, monkeypatch):
    records = [replace(record, facts={"depth": record.facts["depth"]}) for record in grid_records()
               if record.facts["form"] == "deep" and record.facts["width"] == 16]  # fmt: skip
    save_all(tmp_path, records)
    monkeypatch.setenv(tables.RESULTS_ENV, str(tmp_path))
    app = open_app("Grid")
    assert marks(chart_spec(app)) == ["line"]
    assert app.dataframe[0].value["depth"].tolist() == [1, 2]


def test_grid_page_says_when_no_method_ran_a_grid(results):
    app = open_app("Grid")
    assert "hold no grid" in app.info[0].value and not app.get("vega_lite_chart")


def test_compare_page_puts_two_to_four_methods_side_by_side(results):
    app = open_app("Compare")
    assert app.multiselect(key="compare").value == ["bnn-toy", "mlp"]
    app.multiselect(key="compare").set_value(["resnet-cifar", "mlp", "bnn-toy"]).run()
    table = app.dataframe[0].value
    assert table["metric"].tolist() == ["source", "top1", "top1_relative", "fp32_top1", "params", "macs",
                                        "keras_cpu_b1_median_ms", "seeds"]  # fmt: skip
    assert len(table.columns) == 5 and "resnet-cifar · digits · quick · closed · paper" in table.columns
    assert table.iloc[0].tolist()[1:] == ["paper [1]", "ours", "ours", "ours"]
    app.multiselect(key="compare").set_value(["mlp"]).run()
    assert "Choose 2 to 4 methods" in app.info[0].value


@pytest.mark.parametrize("column, value, records", [
    ("suite", "binarization", 2), ("task", "mnist1d", 0), ("track", "latency", 4), ("hardware", "cpu-b, 2 threads", 0),
    ("division", "open", 0), ("seed", 1, 6),
])  # fmt: skip
def test_each_filter_narrows_every_page(results, column, value, records):
    app = open_app()
    app.sidebar.multiselect(key=column).set_value([value]).run()
    assert records_caption(app) == f"{records} of 18 records, from {results}"
    for page in PAGES:
        app.sidebar.radio(key="page").set_value(page).run()
        assert not app.exception, (page, app.exception)


def test_the_budget_starts_on_the_most_common_one_and_clearing_it_shows_every_run(results):
    app = open_app()
    assert app.sidebar.multiselect(key="budget").value == ["quick"]
    app.sidebar.multiselect(key="budget").set_value([]).run()
    assert records_caption(app) == f"18 of 18 records, from {results}"
    app.sidebar.multiselect(key="task").set_value(["mnist1d"]).run()
    assert app.dataframe[0].value["method"].tolist() == ["mlp"]


def test_filters_that_match_nothing_warn(results):
    app = open_app()
    app.sidebar.multiselect(key="task").set_value(["mnist1d"]).run()
    assert "No record matches the filters" in app.warning[0].value


def test_the_url_opens_the_same_view(results):
    """Issue 15, item 10: page, filters and each page's choices are query parameters."""
    app = open_app(query={"page": "Pareto", "cost": "params", "suite": "architectures"})
    assert app.sidebar.radio(key="page").value == "Pareto"
    assert app.selectbox(key="cost").value == "params"
    assert app.sidebar.multiselect(key="suite").value == ["architectures"]
    app = open_app(query={"page": "Tracks", "view_track": "latency"})
    assert app.selectbox(key="view_track").value == "latency"


def test_the_search_box_finds_a_method_by_paper_title_and_opens_its_page(results):
    app = open_app()
    app.sidebar.text_input(key="search").input("residual learning").run()
    found = [button for button in app.sidebar.button if button.key.startswith("found_")]
    assert [button.label for button in found] == ["resnet-cifar · architectures"]
    found[0].click().run()
    assert app.sidebar.radio(key="page").value == "Method"
    assert app.selectbox(key="method").value == "resnet-cifar"
    app.sidebar.text_input(key="search").input("no such method").run()
    assert any("No method of the filtered records matches" in c for c in captions(app))


def test_the_view_and_the_filtered_records_can_be_downloaded(results):
    app = open_app()
    labels = [button.proto.label for button in app.sidebar.get("download_button")]
    assert labels == ["Download this view (CSV)", "Download the filtered records (tidy CSV)"]


def test_an_empty_folder_gives_a_friendly_message(tmp_path, monkeypatch):
    monkeypatch.setenv(tables.RESULTS_ENV, str(tmp_path / "nothing-yet"))
    app = open_app()
    assert "No records yet in" in app.info[0].value and "effbench run" in app.info[0].value


def test_a_hand_edited_record_is_an_error_not_a_wrong_table(results):
    path = next((results / "records").rglob("*.json"))
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 7'))
    app = open_app()
    assert "cannot be read" in app.error[0].value and "content_hash" in app.error[0].value


class FinishedServer:
    """Stands for the Streamlit process `effbench leaderboard` starts: records its command line, exits at once."""

    def __init__(self, argv: list[str], calls: list[list[str]]):
        calls.append(argv)

    def wait(self) -> int:
        return 0

    def poll(self) -> int:
        return 0


def test_leaderboard_command_runs_streamlit_on_the_app(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(command.subprocess, "Popen", lambda argv: FinishedServer(argv, calls))
    args = build_parser().parse_args(["leaderboard", "--results", str(tmp_path), "--port", "8600", "--headless"])
    assert args.handler(args) == 0
    assert calls[0][1:] == ["-m", "streamlit", "run", str(APP), "--server.port", "8600", "--server.headless", "true",
                            "--", "--results", str(tmp_path)]  # fmt: skip
    assert f"leaderboard of {tmp_path}" in capsys.readouterr().err


def test_leaderboard_defaults_to_the_current_projects_folders(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(command.subprocess, "Popen", lambda argv: FinishedServer(argv, calls))
    (tmp_path / "results" / "baselines").mkdir(parents=True)
    (tmp_path / "submissions" / "mine" / "results").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["leaderboard"])
    assert args.handler(args) == 0
    assert calls[0][-3:] == ["--results", str(tmp_path / "results" / "baselines"),
                             str(tmp_path / "submissions" / "mine" / "results")]  # fmt: skip
    assert calls[0][calls[0].index("--server.port") + 1] == "8501"


def test_the_leaderboard_never_imports_tensorflow_the_suites_or_the_tracks():
    import subprocess
    import sys

    check = ("import sys\nimport leaderboard.app, leaderboard.command, leaderboard.screenshot\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tf_keras', 'suites', 'tracks'}))")
    done = subprocess.run([sys.executable, "-c", check], cwd=APP.parent.parent, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
