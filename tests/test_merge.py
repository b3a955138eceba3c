"""`effbench merge`: result folders of several machines become one; conflicts and tampering write nothing."""

from __future__ import annotations

import json

from effbench.cli import main
from effbench.records import Record, ResultStore, describe_files
from effbench.track import Metric


def record(config_hash: str, top1: float = 0.9, run_id: str = "20261121T120000-aaaaaaaa") -> Record:
    return Record(
        run_id=run_id, config_hash=config_hash, training_hash="t" + config_hash, config={"seed": 0},
        method="mlp", variant="", suite="architectures", task="digits", track="edge", seed=0, budget="smoke",
        division="closed", hardware={"cpu": "test"}, versions={"python": "3.11"}, git_commit="abc",
        timestamp="2026-11-21T12:00:00+00:00", metrics=[Metric("top1", top1, "ratio", "int8")],
    )  # fmt: skip


def save(root, config_hash: str, files: dict[str, bytes] | None = None, **fields) -> ResultStore:
    """A record (with the files it keeps) written as the runner writes it."""
    store = ResultStore(root)
    kept = record(config_hash, **fields)
    final = store.files_dir(kept.task, kept.method, config_hash)
    files = files or {}
    kept.files = describe_files(files, final, store.root)
    store.save_with_files(kept, files)
    return store


def merge(capsys, *folders, out):
    code = main(["merge", *map(str, folders), "--out", str(out)])
    return code, capsys.readouterr()


def test_two_folders_merge_with_their_files_and_identical_duplicates_once(tmp_path, capsys):
    save(tmp_path / "a", "1111", {"int8.tflite": b"model one"})
    save(tmp_path / "a", "2222")
    save(tmp_path / "b", "3333", {"int8.tflite": b"model three"})
    save(tmp_path / "b", "2222")  # the same record, copied to both machines
    code, printed = merge(capsys, tmp_path / "a", tmp_path / "b", out=tmp_path / "out")
    assert code == 0 and "3 new record(s)" in printed.out
    merged = ResultStore(tmp_path / "out")
    assert sorted(r.config_hash for r in merged.records()) == ["1111", "2222", "3333"]
    three = merged.find("3333")
    assert (tmp_path / "out" / three.files["int8.tflite"]["path"]).read_bytes() == b"model three"
    source = ResultStore(tmp_path / "a").record_paths()["2222"]
    assert merged.record_paths()["2222"].read_text() == source.read_text()
    assert not (tmp_path / "out" / "artifacts").exists()
    code, printed = merge(capsys, tmp_path / "a", out=tmp_path / "out")
    assert code == 0 and "0 new record(s)" in printed.out


def test_a_conflict_names_both_files_and_writes_nothing(tmp_path, capsys):
    save(tmp_path / "a", "1111", top1=0.9)
    save(tmp_path / "a", "2222")
    save(tmp_path / "b", "1111", top1=0.8, run_id="20261121T130000-bbbbbbbb")
    code, printed = merge(capsys, tmp_path / "a", tmp_path / "b", out=tmp_path / "out")
    first, second = (ResultStore(tmp_path / d).record_paths()["1111"] for d in "ab")
    assert code == 2
    assert f"{first} and {second} are records of the same run" in printed.err
    assert "differ in: metrics, run_id" in printed.err and "Nothing was written" in printed.err
    assert not (tmp_path / "out").exists()


def test_a_record_conflicting_with_the_output_folder_is_refused_too(tmp_path, capsys):
    save(tmp_path / "out", "1111", top1=0.9)
    save(tmp_path / "a", "2222")
    save(tmp_path / "a", "1111", top1=0.8)
    code, printed = merge(capsys, tmp_path / "a", out=tmp_path / "out")
    assert code == 2 and "records of the same run" in printed.err
    assert list(ResultStore(tmp_path / "out").record_paths()) == ["1111"]


def test_hand_edited_records_and_files_are_refused(tmp_path, capsys):
    save(tmp_path / "a", "1111")
    path = ResultStore(tmp_path / "a").record_paths()["1111"]
    data = json.loads(path.read_text())
    data["metrics"][0]["value"] = 0.99
    path.write_text(json.dumps(data))
    code, printed = merge(capsys, tmp_path / "a", out=tmp_path / "out")
    assert code == 2 and f"{path}: its content does not match its content_hash" in printed.err

    save(tmp_path / "b", "2222", {"int8.tflite": b"model"})
    kept = tmp_path / "b" / ResultStore(tmp_path / "b").find("2222").files["int8.tflite"]["path"]
    kept.write_bytes(b"another model")
    code, printed = merge(capsys, tmp_path / "b", out=tmp_path / "out")
    assert code == 2 and f"{kept}: its content differs from the size and SHA-256" in printed.err
    assert not (tmp_path / "out").exists()


def rewrite(path, edit) -> None:
    """Edit a record file and give it a matching content hash, as a careful forger would."""
    from effbench.records import content_hash

    data = json.loads(path.read_text())
    edit(data)
    data["content_hash"] = content_hash(data)
    path.write_text(json.dumps(data))


def test_a_file_path_leading_out_of_the_folder_is_refused_and_nothing_is_written(tmp_path, capsys):
    import hashlib

    outside = tmp_path / "hostname"
    outside.write_bytes(b"a secret of the machine")
    save(tmp_path / "a", "1111", {"int8.tflite": b"model"})
    path = ResultStore(tmp_path / "a").record_paths()["1111"]
    for forged in ("../../../../" + str(outside).lstrip("/"), str(outside)):
        digest = hashlib.sha256(outside.read_bytes()).hexdigest()
        rewrite(path, lambda d, p=forged, h=digest: d["files"].update(
            {"int8.tflite": {"path": p, "bytes": len(outside.read_bytes()), "sha256": h}}))  # fmt: skip
        code, printed = merge(capsys, tmp_path / "a", out=tmp_path / "out")
        assert code == 2 and f"{path}: field 'files.int8.tflite'.path" in printed.err
        assert "a record's files lie in its own files folder" in printed.err
        assert not (tmp_path / "out").exists()


def test_a_kept_file_that_is_a_link_out_of_the_folder_is_refused(tmp_path, capsys):
    save(tmp_path / "a", "1111", {"int8.tflite": b"model"})
    kept = tmp_path / "a" / ResultStore(tmp_path / "a").find("1111").files["int8.tflite"]["path"]
    outside = tmp_path / "model-elsewhere"
    outside.write_bytes(b"model")  # the same bytes: only where it lies is wrong
    kept.unlink()
    kept.symlink_to(outside)
    code, printed = merge(capsys, tmp_path / "a", out=tmp_path / "out")
    assert code == 2 and f"leads to {outside}, outside its result folder" in printed.err
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    save(tmp_path / "a", "1111")
    (tmp_path / "out").write_text("a file")
    code, printed = merge(capsys, tmp_path / "a", out=tmp_path / "out")
    assert code == 2 and "is a file, not a result folder" in printed.err
    code, printed = merge(capsys, tmp_path / "missing", out=tmp_path / "merged")
    assert code == 2 and "missing: no such result folder" in printed.err


def test_two_different_records_of_one_run_in_one_folder_are_a_conflict(tmp_path, capsys):
    save(tmp_path / "a", "1111", top1=0.9)
    save(tmp_path / "b", "1111", top1=0.8, run_id="20261121T130000-bbbbbbbb")
    first = ResultStore(tmp_path / "a").record_paths()["1111"]
    copy = first.with_name("copy-" + first.name)
    copy.write_text(ResultStore(tmp_path / "b").record_paths()["1111"].read_text())
    save(tmp_path / "a", "2222")
    code, printed = merge(capsys, tmp_path / "a", out=tmp_path / "out")
    named = " and ".join(map(str, sorted([first, copy])))  # in the order the folder lists them
    assert code == 2 and f"{named} are records of the same run" in printed.err  # not "2 new", writing 1
    assert not (tmp_path / "out").exists()
