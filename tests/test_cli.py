"""`effbench list`, `effbench measure` and the command line itself, as a user calls them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from effbench.cli import build_parser, main, record_lines
from effbench.registry import METHODS
from effbench.tf import keras
from effbench.track import Metric
from tests.test_records import make_record
from tracks.complexity import count_complexity

REPO = Path(__file__).resolve().parent.parent


def free_size_cnn() -> keras.Model:
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def test_measure_complexity_of_a_keras_applications_model_as_json(tmp_path, capsys):
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10)
    path = tmp_path / "mobilenetv2.keras"
    model.save(path)
    assert main(["measure", "--track", "complexity", "--model", str(path), "--format", "json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    report = count_complexity(model)
    assert measured["params"] == model.count_params()
    assert {k: measured[k] for k in ("macs", "flops", "bops", "size_bits")} == {
        m.name: m.value for m in report.metrics() if m.name in ("macs", "flops", "bops", "size_bits") and not m.scope
    }
    assert measured["Conv1/macs"] == 48 * 48 * 3 * 3 * 3 * 16


def test_measure_needs_an_input_shape_for_models_saved_without_one(tmp_path, capsys):
    path = tmp_path / "free.keras"
    free_size_cnn().save(path)
    assert main(["measure", "--track", "complexity", "--model", str(path)]) == 2
    assert "pass --input-shape" in capsys.readouterr().err
    assert main(["measure", "--track", "complexity", "--model", str(path), "--input-shape", "16,16,3",
                 "--format", "json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["macs"] == 16 * 16 * 27 * 8 + 8 * 4


def test_measure_prints_a_summary_and_the_per_layer_values_with_full(tmp_path, capsys):
    path = tmp_path / "free.keras"
    free_size_cnn().save(path)
    argv = ["measure", "--track", "complexity", "--model", str(path), "--input-shape", "16,16,3"]
    assert main(argv) == 0
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].split()[0] == "params" and not any("/" in line.split()[0] for line in summary[:-1])
    assert summary[-1].startswith("(+") and "per-layer values of 3 layers: --full lists them" in summary[-1]
    assert main([*argv, "--full"]) == 0
    full = capsys.readouterr().out.splitlines()
    assert any(line.split()[0].endswith("/macs") for line in full) and not full[-1].startswith("(+")


def test_measure_reports_missing_and_unreadable_files(tmp_path, capsys):
    assert main(["measure", "--track", "complexity", "--model", str(tmp_path / "none.keras")]) == 2
    assert "no such model file" in capsys.readouterr().err
    broken = tmp_path / "broken.keras"
    broken.write_text("not a model")
    assert main(["measure", "--track", "complexity", "--model", str(broken)]) == 2
    assert "could not load" in capsys.readouterr().err


def test_measure_accuracy_needs_a_task(tmp_path, capsys):
    path = tmp_path / "m.keras"
    free_size_cnn().save(path)
    assert main(["measure", "--track", "accuracy", "--model", str(path), "--input-shape", "8,8,3"]) == 2
    assert "needs task data: pass --task" in capsys.readouterr().err


def test_list_shows_one_row_per_entry_slug_first(capsys):
    assert main(["list", "methods", "--suite", "architectures"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "slug"
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == sorted(entry.spec.slug for entry in METHODS.select(suite="architectures"))
    assert {"embedding-mlp", "fcn-small", "lstm", "mlp", "mobilenetv2", "resnet-cifar", "simplenet",
            "tiny-transformer", "vgg-small", "evonorm", "selu-snn"} <= set(listed)  # fmt: skip
    assert main(["list", "tasks", "cifar*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["cifar10", "cifar100"]
    assert main(["list", "tracks"]) == 0
    assert {"accuracy", "complexity"} <= {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    assert main(["list", "methods", "zzz*"]) == 1


def test_table_of_a_suite_prints_its_summary_and_with_a_track_the_track_table(tmp_path, capsys):
    from tests.test_leaderboard_tables import binarization_runs, save_all

    save_all(tmp_path, binarization_runs("bnn", [0.8, 0.9]))
    assert main(["table", "--out", str(tmp_path), "--suite", "binarization", "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()[-2:]
    assert header.startswith("task,method,variant,division,W/A,top1,fp32_top1,top1_relative,bops,ops,packed_bytes,")
    assert row.startswith("digits,bnn,,closed,1/1,0.85 ± 0.07,0.98,")
    assert main(["table", "--out", str(tmp_path), "--suite", "binarization", "--track", "edge", "--format", "csv"]) == 0
    assert "lce/lce_t1_median_ms" in capsys.readouterr().out.splitlines()[0]


# ------------------------------------------------------------------------------- a light command line


@pytest.mark.parametrize("argv", [["list", "methods"], ["list", "tracks", "edge*"], ["--help"]])
def test_help_and_listing_import_neither_tensorflow_nor_the_suites_nor_the_tracks(argv):
    check = (f"import sys\nfrom effbench.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tf_keras', 'suites', 'tracks'}))")
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_help_names_every_command_without_building_their_parsers():
    assert build_parser("").format_help() == build_parser().format_help()
    assert build_parser("list").format_help() == build_parser().format_help()


def test_an_unknown_command_is_rejected_with_the_commands_there_are(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["lsit", "methods"])
    assert exit_.value.code == 2
    assert "invalid choice: 'lsit'" in capsys.readouterr().err


def test_a_run_prints_one_line_per_record_with_its_whole_model_numbers():
    record = make_record(value=0.91234)
    record.metrics.append(Metric("converter", "TensorFlow 2.21", "text"))
    assert record_lines([record]) == ["mlp · digits · accuracy · seed 0: top1 0.9123, +1 scoped"]


def test_table_without_folders_reads_the_projects_committed_results_and_says_so(tmp_path, monkeypatch, capsys):
    from tests.test_leaderboard_tables import make_record, save_all

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()  # a project of its own: its folders, not the checkout's, are the default
    assert main(["table"]) == 1
    assert "give --out DIR" in capsys.readouterr().err
    save_all(tmp_path / "results" / "baselines", [make_record("mlp", 0.9), make_record("vgg-small", 0.95)])
    save_all(tmp_path / "submissions" / "team" / "results", [make_record("mine", 0.5, budget="smoke")])
    assert main(["table", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("method,variant,task,division,top1")  # one budget: said once, on stderr
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == ["mlp", "vgg-small"]
    assert f"2 rows from {tmp_path / 'results' / 'baselines'}, {tmp_path / 'submissions' / 'team' / 'results'}" in err
    assert "budget quick (1 runs of other budgets left out: --budget all shows them)" in err
    assert main(["table", "--budget", "all", "--format", "csv"]) == 0
    assert "budget" in capsys.readouterr().out.splitlines()[0]  # two budgets mixed: a column


def test_table_flags_noisy_timings(tmp_path, capsys):
    from tests.test_leaderboard_tables import edge_record, save_all

    save_all(tmp_path, [edge_record("mlp", cv=4.0), edge_record("vgg-small", cv=0.1)])
    assert main(["table", "--out", str(tmp_path), "--track", "edge", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].endswith("float32/litert_t1_median_ms (cv 4)") and "noisy: timings whose" in err


def test_verbose_is_taken_anywhere_on_the_line_and_lets_tensorflow_log(monkeypatch):
    from effbench.cli import verbosity
    from effbench.console import VERBOSE_ENV

    monkeypatch.setenv(VERBOSE_ENV, "")  # restored after the test, whatever verbosity sets
    assert verbosity(["list", "methods"]) == ["list", "methods"] and os.environ[VERBOSE_ENV] == ""
    assert verbosity(["run", "--verbose", "--task", "digits"]) == ["run", "--task", "digits"]
    assert os.environ[VERBOSE_ENV] == "1"
