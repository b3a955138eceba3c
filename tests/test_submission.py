"""`effbench submit`: every bad input is a clear error that writes nothing; a good folder runs and resumes."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from effbench.cli import main
from effbench.config import RunConfig, TrainingConfig
from effbench.method import MethodRef
from effbench.records import ResultStore, content_hash
from effbench.registry import METHODS
from effbench.runner import build_record
from effbench.submission import open_submission
from effbench.tf import tf
from effbench.track import Metric

# Submitted code runs in sandboxes that share one user's process limit: `make test` keeps them on one worker.
pytestmark = pytest.mark.xdist_group("sandbox")
EXAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "tanh-sign-binarizer"
TOY_SLUG = "toy-submitted-sign"
METHOD_PY = f'''
from suites.binarization.operators import OperatorMethod
from effbench.registry import Paper, register_method


@register_method("{TOY_SLUG}", suite="submissions", kind="operator",
                 paper=Paper("A toy", 2024, "https://example.org/toy"), summary="sign with the STE")
class ToySubmittedSign(OperatorMethod):
    def input_quantizer(self):
        return "ste_sign"

    def kernel_quantizer(self):
        return "ste_sign"
'''
VALID = {
    "team": "Toy Team", "contact": "toy@example.org", "methods": [TOY_SLUG],
    "paper": {"title": "A toy", "year": 2024, "url": "https://example.org/toy"}, "licence": "MIT",
    "division": "closed", "tasks": ["digits"], "seeds": [0], "tracks": ["accuracy", "complexity"], "budget": "smoke",
}  # fmt: skip


def make_folder(tmp_path: Path, method: str | None = METHOD_PY, **changes) -> Path:
    """A submission folder: VALID with ``changes`` (a value of None removes the field)."""
    folder = tmp_path / "toy-submission"
    folder.mkdir()
    fields = {key: value for key, value in {**VALID, **changes}.items() if value is not None}
    (folder / "submission.yaml").write_text(yaml.safe_dump(fields, sort_keys=False))
    if method is not None:
        (folder / "method.py").write_text(method)
    return folder


def snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(path.relative_to(folder)), path.lstat().st_mtime_ns) for path in folder.rglob("*"))


def rejected(folder: Path, capsys, *expected: str) -> str:
    """Run `submit`; it must fail with every ``expected`` text, write nothing, and leave nothing registered."""
    before = snapshot(folder)
    assert main(["submit", str(folder)]) == 2
    error = capsys.readouterr().err
    for text in expected:
        assert text in error
    assert snapshot(folder) == before
    assert TOY_SLUG not in METHODS
    return error


def yaml_path(folder: Path) -> str:
    return str(folder.resolve() / "submission.yaml")


def test_missing_and_mistyped_fields_are_all_reported_at_once(tmp_path, capsys):
    folder = make_folder(tmp_path, team=None, seeds="0", paper={"title": "A toy", "year": "2024", "url": "x"})
    rejected(
        folder, capsys, yaml_path(folder), "field 'team': missing",
        "field 'seeds': expected a non-empty list, found a string '0'",
        "field 'paper.year': expected a year such as 2025, found a string '2024'",
    )  # fmt: skip


def test_an_unknown_key_is_named_with_the_closest_field(tmp_path, capsys):
    folder = make_folder(tmp_path, licence=None, license="MIT")
    rejected(folder, capsys, yaml_path(folder), "field 'license': unknown field; did you mean 'licence'?")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("tasks", ["no-such-task"], "field 'tasks[0]': unknown task 'no-such-task'"),
        ("tracks", ["accuracy", "speed"], "field 'tracks[1]': unknown track 'speed'"),
        ("methods", ["no-such-method"], "field 'methods[0]': unknown method 'no-such-method'"),
        ("tasks", ["../../etc"], "field 'tasks[0]': expected a slug (lower-case letters, digits, '-', '_', '.'; not"),
    ],
)  # fmt: skip
def test_unknown_tasks_tracks_and_methods_and_path_like_values_are_rejected(tmp_path, capsys, field, value, expected):
    folder = make_folder(tmp_path, **{field: value})
    rejected(folder, capsys, yaml_path(folder), expected)


def test_a_slug_colliding_with_a_built_in_is_explained_and_nothing_stays_registered(tmp_path, capsys):
    colliding = METHOD_PY + """

@register_method("resnet-cifar", suite="submissions", kind="operator",
                 paper=Paper("A toy", 2024, "https://example.org/toy"), summary="a taken slug")
class Taken(ToySubmittedSign):
    pass
"""
    folder = make_folder(tmp_path, method=colliding)
    error = rejected(folder, capsys, f'File "{folder.resolve() / "method.py"}", line',
                     "method slug 'resnet-cifar' is registered twice", "`effbench list methods`")  # fmt: skip
    assert "Traceback" in error
    assert METHODS.get("resnet-cifar").module == "suites.architectures.resnet_cifar"


def test_a_method_file_that_fails_to_import_shows_its_traceback(tmp_path, capsys):
    folder = make_folder(tmp_path, method="import math\n\nraise RuntimeError('broken on purpose')\n")
    rejected(folder, capsys, str(folder.resolve() / "method.py"), "line 3", "RuntimeError: broken on purpose")


def test_the_closed_division_refuses_what_the_suite_protocol_does_not_take(tmp_path, capsys):
    folder = make_folder(tmp_path, methods=["mst", f"{TOY_SLUG}:backbone=mlp"])
    rejected(
        folder, capsys, yaml_path(folder),
        "field 'methods[0]': 'mst' is a method of kind 'compression'; the closed division of the binarization "
        "protocol takes methods of kind 'operator' only",
        f"field 'methods[1]': option backbone of '{TOY_SLUG}:backbone=mlp' is fixed by the closed division of the "
        "binarization protocol", "use division: open",
    )  # fmt: skip


def test_the_open_division_needs_tags_and_then_takes_any_method(tmp_path, capsys):
    folder = make_folder(tmp_path, division="open", methods=["mlp", f"{TOY_SLUG}:backbone=mlp"])
    rejected(folder, capsys, yaml_path(folder), "field 'open_tags': required in the open division")
    (folder / "submission.yaml").write_text(yaml.safe_dump({**VALID, "division": "open", "open_tags": ["mlp"],
                                                            "methods": ["mlp", f"{TOY_SLUG}:backbone=mlp"]}))
    assert main(["submit", str(folder), "--check"]) == 0
    assert "division  open [mlp]" in capsys.readouterr().out


def test_symbolic_links_leading_out_of_the_folder_are_rejected(tmp_path, capsys):
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of the submission")
    folder = make_folder(tmp_path)
    (folder / "data").mkdir()
    os.symlink(outside, folder / "data" / "notes.txt")
    rejected(folder, capsys, str(folder.resolve() / "data" / "notes.txt"), f"to {outside}, outside the submission")


def test_method_py_must_be_a_regular_file(tmp_path, capsys):
    folder = make_folder(tmp_path, method=None)
    (folder / "real.py").write_text(METHOD_PY)
    os.symlink(folder / "real.py", folder / "method.py")
    rejected(folder, capsys, str(folder.resolve() / "method.py"), "must be a regular file")


def test_a_yaml_bomb_is_refused_before_it_expands(tmp_path, capsys):
    folder = make_folder(tmp_path)
    bomb = 'a: &a ["lol", "lol", "lol"]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\n'
    (folder / "submission.yaml").write_text(bomb)
    rejected(folder, capsys, yaml_path(folder), "line 1: anchors and aliases ('&a', '*a') are not allowed")


@pytest.mark.parametrize(
    ("name", "size", "limit"), [("submission.yaml", 2**16, "64 KiB"), ("method.py", 2**20, "1 MiB")]
)
def test_huge_files_are_refused_naming_the_limit(tmp_path, capsys, name, size, limit):
    folder = make_folder(tmp_path)
    (folder / name).write_text("#" * (size + 1))
    rejected(folder, capsys, str(folder.resolve() / name), f"over the limit of {limit}")


def write_record(folder: Path, method: str = "resnet-cifar") -> Path:
    """A record as the runner writes it, of the FP32 twin (declared implicitly) unless ``method`` says."""
    run = RunConfig(TrainingConfig(MethodRef(method), "digits", 0, "smoke"), "accuracy", "closed")
    record = build_record(run, METHODS.get(method).factory(), [Metric("top1", 0.5, "ratio")], {})
    return ResultStore(folder / "results").save(record)


def edit_metric(data: dict) -> None:
    data["metrics"][0]["value"] = 0.99


def edit_config_and_rehash(data: dict) -> None:
    data["config"]["seed"] = 1
    data["content_hash"] = content_hash(data)


def make_nan(data: dict) -> None:
    data["metrics"][0]["value"] = float("nan")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (edit_metric, "its content does not match its content_hash"),
        (edit_config_and_rehash, "field 'config_hash'"),
        (make_nan, "field 'metrics[0].value': is NaN or infinite"),
    ],
)
def test_results_edited_by_hand_are_rejected(tmp_path, capsys, edit, expected):
    folder = make_folder(tmp_path)
    path = write_record(folder)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    rejected(folder, capsys, str(path.resolve()), expected)


def test_results_of_a_method_the_submission_does_not_declare_are_rejected(tmp_path, capsys):
    folder = make_folder(tmp_path)
    path = write_record(folder, "mlp")
    rejected(folder, capsys, str(path.resolve()), "field 'method': 'mlp' is not declared in submission.yaml")


def test_a_valid_folder_passes_check_with_a_summary_and_writes_nothing(tmp_path, capsys):
    folder = make_folder(tmp_path)
    write_record(folder)
    before = snapshot(folder)
    assert main(["submit", str(folder), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {yaml_path(folder)}")
    assert f"methods   {TOY_SLUG} (operator, method.py)" in out
    # The twin's accuracy is recorded already; its trained model is not, and the operator starts from it.
    assert "2 runs in 2 trainings" in out
    assert snapshot(folder) == before and TOY_SLUG not in METHODS


def test_submit_runs_into_the_folder_and_a_rerun_skips_everything(tmp_path, capsys):
    # mnist1d's twin is the mlp: the same runs as on digits' ResNet-20, in a third of the time.
    folder = make_folder(tmp_path, tasks=["mnist1d"])
    assert main(["submit", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "3 runs to do in 2 trainings" in out and "top1_relative" in out
    records = ResultStore(folder / "results").records()
    # method.py ran in the sandbox: its numbers (and its twin's, trained in the same process) say so, and
    # each deployable's flatbuffer was scored again by a process that never saw the submission.
    assert sorted((r.method, r.track, r.division, r.source) for r in records) == [
        ("mlp", "accuracy", "closed", "sandbox"), ("mlp", "verified", "closed", "verified"),
        (TOY_SLUG, "accuracy", "closed", "sandbox"), (TOY_SLUG, "complexity", "closed", "sandbox"),
        (TOY_SLUG, "verified", "closed", "verified"),
    ]  # fmt: skip
    assert main(["submit", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "0 runs to do in 0 trainings" in out and "training " not in out and TOY_SLUG in out


def test_submit_exits_non_zero_when_a_run_fails(tmp_path, capsys, toy_methods):
    folder = make_folder(tmp_path, method=None, division="open", open_tags=["toy"], methods=["toy-broken"],
                         tracks=["accuracy"])  # fmt: skip
    assert main(["submit", str(folder)]) == 1
    assert "1 run(s) failed" in capsys.readouterr().err


def test_the_example_submission_and_its_committed_records_validate(capsys):
    assert main(["submit", str(EXAMPLE), "--check"]) == 0
    assert "tanh-sign (operator, method.py)" in capsys.readouterr().out


def test_tanh_sign_is_the_sign_forward_and_the_derivative_of_tanh_backward():
    with open_submission(EXAMPLE):
        quantizer = METHODS.get("tanh-sign").factory(beta=2.0).kernel_quantizer()
    x = tf.constant(np.linspace(-3.0, 3.0, 61, dtype=np.float32))  # includes 0, whose sign is +1
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        binary, surrogate = quantizer(x), tf.tanh(2.0 * x)
    np.testing.assert_array_equal(binary, np.where(x.numpy() >= 0, 1.0, -1.0))
    np.testing.assert_allclose(tape.gradient(binary, x), tape.gradient(surrogate, x), atol=1e-6)
    np.testing.assert_allclose(tape.gradient(binary, x), 2.0 * (1 - np.tanh(2.0 * x.numpy()) ** 2), atol=1e-6)
    assert quantizer.precision == 1 and type(quantizer).from_config(quantizer.get_config()).beta == 2.0
