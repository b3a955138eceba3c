"""Crash-safe files: a process killed anywhere while saving leaves a consistent folder; concurrent savers of a
run do not collide; temporaries are cleaned up; a corrupt cached model is named, set aside and retrained."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from effbench.merge import merge_folders
from effbench.method import MethodRef
from effbench.records import ResultStore
from effbench.runner import execute_plan, make_plan
from tests.test_merge import save

REPO = Path(__file__).resolve().parent.parent

SAVER = """
import os, pathlib, signal, sys
from effbench.records import ResultStore, describe_files
import effbench.records as records
from tests.test_merge import record

root, kill_at = pathlib.Path(sys.argv[1]), sys.argv[2]
store = ResultStore(root)
kept = record("1111", top1=0.8, run_id="20261121T130000-bbbbbbbb")
files = {"int8.tflite": b"the new model"}
kept.files = describe_files(files, store.files_dir(kept.task, kept.method, "1111"), store.root)

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)

real_rename = pathlib.Path.rename
def rename(self, target):
    if kill_at == "aside" and self.name == "1111" or kill_at == "staging" and self.name.startswith(".tmp-1111-"):
        killed()
    return real_rename(self, target)

pathlib.Path.rename = rename
if kill_at == "record":
    records.os.replace = killed
store.save_with_files(kept, files)
"""


def consistent(root: Path) -> dict[str, float]:
    """Every record of ``root`` with its files intact (merge checks each one): config hash -> top1."""
    merge_folders([root], root.parent / f"check-{time.monotonic_ns()}")
    return {r.config_hash: r.metrics[0].value for r in ResultStore(root).records()}


@pytest.mark.parametrize("kill_at", ["aside", "staging", "record"])
def test_a_forced_rerun_killed_while_saving_leaves_no_record_without_its_files(tmp_path, kill_at):
    save(tmp_path / "a", "1111", {"int8.tflite": b"the old model"}, top1=0.9)
    done = subprocess.run([sys.executable, "-c", SAVER, str(tmp_path / "a"), kill_at], cwd=REPO, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    # The run is not recorded (a re-run redoes it), or recorded with the files it lists; merge holds either way.
    assert consistent(tmp_path / "a") in ({}, {"1111": 0.9})
    ResultStore(tmp_path / "a").clean(older_than=0)
    assert not list((tmp_path / "a" / "files").rglob(".tmp-*"))


def test_two_processes_saving_the_same_run_do_not_collide(tmp_path):
    script = textwrap.dedent("""
        import sys, pathlib
        from tests.test_merge import save
        for _ in range(15):
            save(pathlib.Path(sys.argv[1]), "1111", {"int8.tflite": b"model " + sys.argv[2].encode()}, top1=0.5)
    """)
    for _ in range(2):
        savers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "a"), str(n)], cwd=REPO,
                                   stderr=subprocess.PIPE) for n in range(2)]  # fmt: skip
        for saver in savers:
            assert saver.wait(timeout=120) == 0, saver.stderr.read().decode()[-2000:]
        assert consistent(tmp_path / "a") == {"1111": 0.5}


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path):
    store = ResultStore(tmp_path)
    stale = [store.records_dir / "digits" / ".tmp-abc.json", store.artifact_dir("t1") / ".tmp-1234-model.keras",
             store.root / "files" / "digits" / "mlp" / ".tmp-1111-x" / "int8.tflite"]  # fmt: skip
    fresh = store.artifact_dir("t2") / ".tmp-5678-model.keras"
    for path in [*stale, fresh]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    hour_ago = time.time() - 2 * 3600
    for path in [*stale, stale[2].parent]:
        os.utime(path, (hour_ago, hour_ago))
    removed = store.clean()
    assert not any(path.exists() for path in stale) and fresh.exists()
    assert stale[2].parent in removed


def test_a_failed_model_save_leaves_no_temporary(tmp_path):
    from effbench.runner import _rename_into_place

    def broken_save(path):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        _rename_into_place(tmp_path / "model.keras", broken_save)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_cached_model_is_named_set_aside_and_trained_again(tmp_path, toy_methods):
    store = ResultStore(tmp_path)
    ref = [MethodRef.parse("toy-dense")]
    assert not any(r.failures for r in execute_plan(make_plan(ref, ["digits"], [0], ["accuracy"], "smoke", store),
                                                    store, log=lambda _: None))  # fmt: skip
    (cached,) = (tmp_path / "artifacts").iterdir()
    (cached / "model.keras").write_bytes(b"not a model any more")
    lines: list[str] = []
    store = ResultStore(tmp_path)
    results = execute_plan(make_plan(ref, ["digits"], [0], ["complexity"], "smoke", store), store, log=lines.append)
    assert not any(r.failures for r in results) and [r.track for r in results[0].records] == ["complexity"]
    (warning,) = [line for line in lines if "cannot be loaded" in line]
    assert f"the cached model in {cached} cannot be loaded" in warning and "set aside as" in warning
    (aside,) = (tmp_path / "artifacts").glob(f".corrupt-{cached.name}-*")
    assert (aside / "model.keras").read_bytes() == b"not a model any more"
    assert (cached / "model.keras").read_bytes() != b"not a model any more"  # trained again, cached again
