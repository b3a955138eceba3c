"""Clear errors at the command line: one line naming what is wrong, exit status 2, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from effbench.cli import main
from tests.test_submission import VALID

# Submitted code runs in sandboxes that share one user's process limit: `make test` keeps them on one worker.
pytestmark = pytest.mark.xdist_group("sandbox")
REPO = Path(__file__).resolve().parent.parent


def error_of(capsys, argv: list[str]) -> str:
    """The one-line error ``argv`` must fail with (argparse's exit or the command's status 2)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    return err


def test_out_pointing_to_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    err = error_of(capsys, ["run", "--method", "mlp", "--task", "digits", "--track", "accuracy", "--out", str(out)])
    assert f"argument --out: {out} is a file, not a result folder" in err


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999", "x"])
def test_a_seed_out_of_range_is_refused_before_anything_is_planned(capsys, seed):
    err = error_of(capsys, ["run", "--method", "mlp", "--task", "digits", "--track", "accuracy", "--seed", seed])
    assert "argument --seed: invalid seed" in err


def test_an_input_shape_that_is_not_numbers_is_explained(tmp_path, capsys):
    err = error_of(capsys, ["measure", "--track", "complexity", "--model", str(tmp_path / "m.keras"),
                            "--input-shape", "abc"])  # fmt: skip
    assert "invalid input shape 'abc': expected positive integers separated by commas, e.g. 224,224,3" in err


def test_merge_out_pointing_to_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    (tmp_path / "a").mkdir()
    err = error_of(capsys, ["merge", str(tmp_path / "a"), "--out", str(tmp_path / "out")])
    assert "is a file, not a result folder" in err and "no such result folder" not in err


def submission(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "submission.yaml").write_text(text)
    return folder


def test_a_complex_yaml_key_is_refused_with_its_line(tmp_path, capsys):
    folder = submission(tmp_path, "team: x\n? [a, b]\n: 1\n")
    err = error_of(capsys, ["submit", str(folder), "--check"])
    assert "submission.yaml: line 2: a key must be a plain value such as a field name" in err


def test_a_seed_too_large_for_numpy_is_refused_by_check(tmp_path, capsys):
    fields = {**VALID, "methods": ["mlp"], "division": "open", "open_tags": ["mlp"], "seeds": [99999999999999999999999]}
    folder = submission(tmp_path, yaml.safe_dump(fields))
    err = error_of(capsys, ["submit", str(folder), "--check"])
    assert "field 'seeds[0]': expected an integer seed in [0, 2**32), found an integer 99999999999999999999999" in err


def test_stopping_the_leaderboard_with_sigterm_stops_streamlit_too(tmp_path):
    """The command's child (Streamlit, here a stand-in that sleeps) must not outlive the command."""
    script = textwrap.dedent(f"""
        import argparse, sys
        from leaderboard import command
        command.streamlit_command = lambda args, folders: [sys.executable, "-c",
            "import os, time; open({str(tmp_path / 'child.pid')!r}, 'w').write(str(os.getpid())); time.sleep(600)"]
        sys.exit(command.command_leaderboard(argparse.Namespace(results=[{str(tmp_path)!r}])))
    """)
    leaderboard = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    leaderboard.send_signal(signal.SIGTERM)
    assert leaderboard.wait(timeout=30) != 0
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the leaderboard's child outlived it")
