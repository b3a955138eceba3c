"""Submitted code runs only in the sandbox: the hostile corpus (tests/hostile/) cannot write, connect, outlive
its limits, or change the numbers EffBench verifies; the records are written by EffBench alone."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from effbench.cli import main
from effbench.records import SANDBOX, VERIFIED, ResultStore
from effbench.registry import METHODS
from effbench.sandbox import Answer, Limits, Mount, Sandbox, SandboxError, read_answer, sandbox_kind, write_answer

HOSTILE = Path(__file__).resolve().parent / "hostile"
REPO = Path(__file__).resolve().parent.parent
YAML = {
    "team": "Hostile Team", "contact": "hostile@example.org", "methods": ["hostile-sign"],
    "paper": {"title": "A hostile toy", "year": 2024, "url": "https://example.org/hostile"}, "licence": "MIT",
    "division": "closed", "tasks": ["digits"], "seeds": [0], "tracks": ["accuracy"], "budget": "smoke",
}  # fmt: skip

pytestmark = [
    pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap (apt-get install bubblewrap)"),
    # Sandboxes run as one user whose process limit they share: `make test` keeps them on one worker.
    pytest.mark.xdist_group("sandbox"),
]


def hostile_folder(tmp_path: Path, name: str, **changes) -> Path:
    """A submission whose method.py is ``tests/hostile/<name>.py``."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "submission.yaml").write_text(yaml.safe_dump({**YAML, **changes}, sort_keys=False))
    shutil.copyfile(HOSTILE / f"{name}.py", folder / "method.py")
    return folder


def submit(capsys, folder: Path, *options: str) -> tuple[int, str, str]:
    code = main(["submit", str(folder), *options])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def running(marker: str) -> list[str]:
    """Command lines of the processes on this machine that contain ``marker``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in text:
            found.append(text)
    return found


# ------------------------------------------------------------------------------------------ the mechanism


def test_the_sandbox_has_no_network_and_writes_only_its_scratch_folder(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    readable = tmp_path / "readable"
    readable.mkdir()
    sandbox = Sandbox([Mount(readable, "readable")], Limits(wall_seconds=60))
    targets = [f"{sandbox.path('readable')}/new", str(REPO / "pwned-by-probe"), "/run/sandbox/scratch/own"]
    answer = sandbox.run("probe", {"port": server.getsockname()[1], "write": targets}, log=lambda _: None)
    assert answer.manifest["connected"] is False
    with pytest.raises(BlockingIOError):
        server.accept()  # nothing reached the host's loopback
    assert answer.manifest["writable"] == {targets[0]: False, targets[1]: False, targets[2]: True}
    assert not (readable / "new").exists() and not (REPO / "pwned-by-probe").exists()
    assert answer.files == [b"a file"]
    if os.geteuid() == 0:
        assert answer.manifest["uid"] != 0  # root drops to nobody: the kernel limits nobody's processes


def test_the_unshare_fallback_has_no_network_either(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("needs util-linux's unshare")
    sandbox = Sandbox([], Limits(wall_seconds=60), kind="unshare")
    answer = sandbox.run("probe", {"port": 9, "host": "1.1.1.1", "write": [str(REPO / "pwned-by-probe")]},
                         log=lambda _: None)  # fmt: skip
    assert answer.manifest["connected"] is False
    assert answer.manifest["writable"] == {str(REPO / "pwned-by-probe"): False}


def test_no_sandbox_means_no_submitted_code():
    with pytest.raises(SandboxError, match="never run outside the sandbox"):
        sandbox_kind({"EFFBENCH_SANDBOX": "none"})


@pytest.mark.parametrize(
    "stream, message",
    [
        (b"", "without an answer"),
        (b"\0\0\0\0\0\0\0\x05{oops", "not valid JSON"),
        (b"\0\0\0\0\0\0\0\x02{}", "lists no valid file sizes"),
        (b"\xff" * 8, "over the limit"),
    ],
)
def test_malformed_answers_are_refused(stream, message):
    with pytest.raises(SandboxError, match=message):
        read_answer(io.BytesIO(stream), 2**20)


def test_an_answer_written_twice_is_refused():
    stream = io.BytesIO()
    write_answer(stream, {"a": 1}, [b"xy"])
    write_answer(stream, {"a": 2}, [])
    stream.seek(0)
    with pytest.raises(SandboxError, match="more than one process wrote it"):
        read_answer(stream, 2**20)
    one = io.BytesIO()
    write_answer(one, {"a": 1}, [b"xy"])
    one.seek(0)
    assert read_answer(one, 2**20) == Answer({"a": 1}, [b"xy"])


def test_limits_come_from_the_environment_and_are_checked():
    assert Limits().from_environ({"EFFBENCH_SANDBOX_WALL_SECONDS": "7"}).wall_seconds == 7
    with pytest.raises(SandboxError, match="expected a positive integer"):
        Limits().from_environ({"EFFBENCH_SANDBOX_CPU_SECONDS": "-1"})


# ------------------------------------------------------------------------------------- the hostile corpus


def test_writing_outside_the_scratch_folder_fails_and_the_check_still_passes(tmp_path, capsys):
    import effbench

    folder = hostile_folder(tmp_path, "writes_outside")
    before = listing(folder)
    code, out, err = submit(capsys, folder, "--check")
    assert code == 0, err
    assert out.startswith("OK:") and "hostile-sign (operator, method.py)" in out
    assert listing(folder) == before
    planted = [Path(effbench.__file__).parent / "pwned-in-effbench", Path.home() / "pwned-in-home",
               Path("/root/pwned-in-root")]  # fmt: skip
    leaked = [path for path in planted if path.exists()]
    for path in leaked:
        path.unlink()
    assert leaked == []
    assert "hostile-sign" not in METHODS  # nothing of method.py ever ran in this process


def test_a_forged_record_cannot_be_planted_in_the_results_or_the_baselines(tmp_path, capsys):
    folder = hostile_folder(tmp_path, "forges_records")
    baselines = REPO / "results" / "baselines"
    before = listing(baselines)
    code, out, err = submit(capsys, folder, "--check")
    assert code == 0, err
    assert not (folder / "results").exists()
    assert listing(baselines) == before


@pytest.mark.parametrize(
    "name, limits, message",
    [
        ("endless_loop", {"CPU_SECONDS": "15", "WALL_SECONDS": "120"}, "stopped by its CPU-time limit of 15 s"),
        ("sleeps_forever", {"WALL_SECONDS": "20"}, "ran past its wall-clock limit of 20 s and was killed"),
        ("exits_quietly", {}, "ended (exit status 0) without an answer"),
        ("memory_hog", {}, "MemoryError"),
        ("keyboard_interrupt", {}, "KeyboardInterrupt"),
    ],
)
def test_code_that_never_ends_or_ends_oddly_is_stopped_and_reported(tmp_path, capsys, monkeypatch, name, limits,
                                                                    message):  # fmt: skip
    for key, value in limits.items():
        monkeypatch.setenv(f"EFFBENCH_SANDBOX_{key}", value)
    folder = hostile_folder(tmp_path, name)
    code, out, err = submit(capsys, folder, "--check")
    assert code == 2 and message in err, err
    assert f"{folder.resolve()}: the submission's code failed in the sandbox" in err
    assert "Traceback" not in err.split("importing it failed")[0]  # no traceback of EffBench's own


def test_processes_started_by_the_submission_do_not_outlive_it(tmp_path, capsys):
    folder = hostile_folder(tmp_path, "leaves_processes")
    code, out, err = submit(capsys, folder, "--check")
    assert code == 0, err
    assert running("sleep 98765") == [] and running("sleep 98766") == []


def test_a_fork_bomb_hits_the_process_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EFFBENCH_SANDBOX_PROCESSES", "64")
    monkeypatch.setenv("EFFBENCH_SANDBOX_WALL_SECONDS", "120")
    folder = hostile_folder(tmp_path, "fork_bomb")
    code, out, err = submit(capsys, folder, "--check")
    assert code == 2 and "the submission's code failed in the sandbox" in err


def test_the_network_is_out_of_reach(tmp_path, capsys):
    server = socket.socket()
    try:
        server.bind(("127.0.0.1", 47123))
    except OSError:
        pytest.skip("port 47123 is taken")
    server.listen()
    server.setblocking(False)
    code, out, err = submit(capsys, hostile_folder(tmp_path, "network"), "--check")
    assert code == 0, err  # it raises if it connects anywhere
    with pytest.raises(BlockingIOError):
        server.accept()


# ----------------------------------------------- a run: sandbox numbers apart, verified numbers honest


@pytest.fixture(scope="module")
def patched_run(tmp_path_factory):
    """The submission that patches the accuracy track to report 1.0, run once (smoke, mnist1d, accuracy).

    mnist1d's twin is the mlp, which trains and converts in a fraction of digits' ResNet-20 time.
    """
    folder = hostile_folder(tmp_path_factory.mktemp("patched"), "patches_tracks", tasks=["mnist1d"])
    completed = subprocess.run([sys.executable, "-m", "effbench.cli", "submit", str(folder)], capture_output=True,
                               text=True, timeout=900, cwd=REPO)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return folder, completed


def test_numbers_measured_beside_submitted_code_are_marked_and_the_verified_ones_are_not_fooled(patched_run):
    folder, _ = patched_run
    records = ResultStore(folder / "results").records()
    by = {(r.method, r.track): r for r in records}
    assert {(r.method, r.track, r.source) for r in records} == {
        ("hostile-sign", "accuracy", SANDBOX), ("mlp", "accuracy", SANDBOX),
        ("hostile-sign", "verified", VERIFIED), ("mlp", "verified", VERIFIED),
    }  # fmt: skip
    sandboxed = {m.name: m.value for m in by["hostile-sign", "accuracy"].metrics if not m.scope}
    assert sandboxed["top1"] == 1.0 and sandboxed["fp32_top1"] == 1.0  # the patch worked, in the sandbox
    for method in ("hostile-sign", "mlp"):
        verified = {(m.scope, m.name): m.value for m in by[method, "verified"].metrics}
        assert verified["", "top1"] < 0.5 and verified["", "verified_variant"] == "float32"  # untrained, honestly
        assert verified["float32", "top1"] == verified["", "top1"]
        kept = folder / "results" / by[method, "verified"].files["float32.tflite"]["path"]
        assert kept.stat().st_size == verified["float32", "file_bytes"]
    assert METHODS.get("bnn").module == "suites.binarization.bnn"  # the impostor lived in the sandbox only


def test_the_table_never_averages_sandbox_and_verified_numbers(patched_run, capsys):
    folder, _ = patched_run
    assert main(["table", "--out", str(folder / "results"), "--format", "csv"]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.strip().splitlines()[-5:]]
    header, *rows = rows
    source, top1 = header.index("source"), header.index("top1")
    hostile = {row[source]: float(row[top1]) for row in rows if row[0] == "hostile-sign"}
    assert hostile["sandbox"] == 1.0 and hostile["verified"] < 0.5


def test_reproduce_runs_a_submission_again_in_the_sandbox(patched_run, capsys):
    folder, _ = patched_run
    assert main(["reproduce", "--results", str(folder / "results"), "--out", str(folder.parent / "again")]) == 0
    text = capsys.readouterr().out
    assert "reproducing 4 recorded run(s)" in text and "4 ok" in text
