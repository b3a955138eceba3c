"""Records: stable config hashes, atomic writes, validation of what is read back."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from effbench.config import RunConfig, TrainingConfig, stable_hash
from effbench.method import MethodRef
from effbench.records import Record, RecordError, ResultStore, read_record, write_json_atomically
from effbench.track import Metric, MetricError

REPO = Path(__file__).resolve().parent.parent


def make_record(config_hash="0123456789abcdef", value=0.5, track="accuracy") -> Record:
    return Record(
        run_id="r1", config_hash=config_hash, training_hash="fedcba9876543210", config={"seed": 0},
        method="mlp", variant="", suite="architectures", task="digits", track=track, seed=0,
        budget="smoke", division="closed", hardware={"cpu": "x", "cpu_threads": 2, "gpu": "none"},
        versions={"tensorflow": "2.21.0"}, git_commit="abc", timestamp="2026-01-01T00:00:00+00:00",
        metrics=[Metric("top1", value, "ratio"), Metric("macs", 10, "count", scope="dense")],
    )  # fmt: skip


def test_stable_hash_is_canonical_and_pinned():
    assert stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})
    # Pinned: changing how configs are hashed would orphan every stored record.
    assert stable_hash({"a": 1}) == "015abd7f5cc57a2d"


def test_config_hash_covers_everything_that_changes_the_numbers():
    training = TrainingConfig(MethodRef.parse("mlp"), "digits", 0, "smoke")
    base = RunConfig(training, "accuracy").hash
    assert base == RunConfig(TrainingConfig(MethodRef.parse("mlp"), "digits", 0, "smoke"), "accuracy").hash
    variants = [
        RunConfig(TrainingConfig(MethodRef.parse("mlp:units=64"), "digits", 0, "smoke"), "accuracy"),
        RunConfig(TrainingConfig(MethodRef.parse("mlp"), "digits", 1, "smoke"), "accuracy"),
        RunConfig(TrainingConfig(MethodRef.parse("mlp"), "digits", 0, "quick"), "accuracy"),
        RunConfig(TrainingConfig(MethodRef.parse("mlp"), "mnist1d", 0, "smoke"), "accuracy"),
        RunConfig(training, "complexity"),
        RunConfig(training, "accuracy", division="open"),
    ]
    assert len({base, *(v.hash for v in variants)}) == 1 + len(variants)
    assert RunConfig(training, "complexity").as_dict()["recipe"]["epochs"] == 1


def test_record_round_trips_through_the_store(tmp_path):
    store = ResultStore(tmp_path)
    path = store.save(make_record())
    assert path == tmp_path / "records/digits/mlp/accuracy-s0-smoke-0123456789abcdef.json"
    again = ResultStore(tmp_path)
    assert again.has("0123456789abcdef") and not again.has("ffffffffffffffff")
    assert again.find("0123456789abcdef") == make_record()


def test_non_finite_metrics_are_rejected():
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(MetricError, match="not finite"):
            Metric("top1", bad, "ratio")
    with pytest.raises(MetricError, match="not a number or a string"):
        Metric("top1", True, "ratio")


def test_hand_written_nan_in_a_file_is_rejected_with_the_file_named(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(make_record().to_json()).replace('"value": 0.5', '"value": NaN'))
    with pytest.raises(RecordError, match=r"r\.json.*NaN"):
        read_record(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("seed"), "missing field 'seed'"),
        (lambda d: d.update(seed="zero"), "field 'seed' is str, expected int"),
        (lambda d: d.update(schema="other/9"), "field 'schema' is 'other/9'"),
        (lambda d: d["metrics"].append({"metric": "x"}), r"metrics\[2\]: expected an object"),
    ],
)
def test_malformed_record_files_name_the_file_and_field(tmp_path, edit, message):
    data = make_record().to_json()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=message) as raised:
        read_record(path)
    assert "bad.json" in str(raised.value)


def test_a_process_killed_mid_write_leaves_no_record(tmp_path):
    """The writer is killed between writing the temporary file and renaming it into place."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import effbench.records as records
        def killed(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        records.os.replace = killed
        records.write_json_atomically(Path({str(tmp_path / "records" / "x-abc.json")!r}), {{"a": 1}})
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert completed.returncode == -9
    leftovers = list((tmp_path / "records").iterdir())
    assert [p.name for p in leftovers if not p.name.startswith(".tmp-")] == []
    assert ResultStore(tmp_path).records() == []


def test_failed_write_removes_its_temporary_file_and_keeps_the_old_record(tmp_path, monkeypatch):
    import effbench.records as records

    target = tmp_path / "x.json"
    write_json_atomically(target, {"version": 1})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_json_atomically(target, {"version": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert json.loads(target.read_text()) == {"version": 1}


def test_a_record_edited_by_hand_is_refused(tmp_path):
    path = ResultStore(tmp_path).save(make_record())
    path.write_text(path.read_text().replace('"value": 0.5', '"value": 0.9'))
    with pytest.raises(RecordError, match="edited by hand"):
        read_record(path)


def test_paper_reference_records_are_marked_by_their_source(tmp_path):
    record = make_record()
    record.source = "paper: He et al. 2016, Table 6"
    path = ResultStore(tmp_path).save(record)
    assert read_record(path).source.startswith("paper:")


def test_config_hash_covers_method_defaults(toy_methods, monkeypatch):
    from effbench.registry import METHODS

    training = TrainingConfig(MethodRef.parse("toy-dense"), "digits", 0, "smoke")
    before = training.hash
    assert training.as_dict()["options"] == {"units": 16}
    monkeypatch.setattr(METHODS.get("toy-dense").factory, "default_options", {"units": 32})
    assert training.hash != before
    assert training.hash == TrainingConfig(MethodRef.parse("toy-dense:units=32"), "digits", 0, "smoke").hash


def test_records_of_schema_1_still_load_and_a_hand_edit_is_still_refused(tmp_path):
    from effbench.records import content_hash

    body = {
        "schema": "effbench.record/1", "run_id": "r", "config_hash": "c" * 16, "training_hash": "t" * 16,
        "config": {"method": "mlp"}, "method": "mlp", "variant": "", "suite": "architectures", "task": "digits",
        "track": "accuracy", "seed": 0, "budget": "quick", "division": "closed", "hardware": {}, "versions": {},
        "git_commit": "abc", "timestamp": "2026-01-01T00:00:00+00:00", "curves": {}, "files": {},
        "source": "measured", "metrics": [{"metric": "top1", "value": 0.9, "unit": "ratio", "scope": ""}],
    }  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**body, "content_hash": content_hash(body)}))
    record = read_record(path)
    assert record.deployable == "" and record.metrics[0].value == 0.9
    path.write_text(json.dumps({**body, "content_hash": content_hash(body), "seed": 1}))
    with pytest.raises(RecordError, match="edited by hand"):
        read_record(path)


def test_a_record_says_what_its_method_is_and_records_without_it_keep_their_hash(tmp_path):
    from dataclasses import replace

    from effbench.index import method as indexed_method
    from effbench.registry import method_about

    about = method_about(indexed_method("mlp"))
    assert about["kind"] == "architecture" and about["taxonomy"]["weight_bits"] == 32 and about["paper"]["year"]
    store = ResultStore(tmp_path)
    described = replace(make_record(), about={**about, "submission": {"team": "Lab", "open_tags": []}})
    assert read_record(store.save(described)).about == described.about
    plain = make_record(config_hash="1111111111111111")
    assert "about" not in plain.to_json()  # written as before the field existed, so its content hash is the same
    assert read_record(store.save(plain)).about == {}
    for wrong in ([1], {"summary": float("nan")}, {"k": {"deep": object()}}):
        data = {**plain.to_json(), "about": wrong}
        with pytest.raises(RecordError, match="about"):
            Record.from_json(data, "r.json")


# ------------------------------------------------------------------------------- the strict loader


def saved_json(tmp_path) -> tuple[dict, Path]:
    path = ResultStore(tmp_path).save(make_record())
    return json.loads(path.read_text()), path


def rehashed(data: dict) -> dict:
    """``data`` with a content hash that matches it: an edit the hash alone cannot catch."""
    from effbench.records import content_hash

    return {**data, "content_hash": content_hash(data)}


def refused(path, *expected: str) -> str:
    """Reading ``path`` must be refused, with the file and each of ``expected`` named."""
    with pytest.raises(RecordError) as raised:
        ResultStore(path.parents[3]).read(path)
    message = str(raised.value)
    assert str(path) in message
    for text in expected:
        assert text in message
    return message


def test_a_record_without_its_content_hash_is_refused(tmp_path):
    data, path = saved_json(tmp_path)
    del data["content_hash"]
    data["metrics"][0]["value"] = 0.999
    path.write_text(json.dumps(data))
    refused(path, "field 'content_hash' is missing")


@pytest.mark.parametrize(
    "value, expected",
    [
        (57, "value 57 is outside [0, 1], the range of unit 'ratio'"),
        (1e308, "outside [0, 1]"),
        ("0.99", "value str '0.99' must be a number for unit 'ratio'"),
        (-0.1, "outside [0, 1]"),
    ],
)
def test_values_outside_their_units_range_or_of_the_wrong_type_are_refused(tmp_path, value, expected):
    data, path = saved_json(tmp_path)
    data["metrics"][0]["value"] = value
    path.write_text(json.dumps(rehashed(data)))
    refused(path, "metrics[0]", "metric str 'top1'", expected)


@pytest.mark.parametrize(
    "metric, value, ok",
    [
        (("top1_relative", "ratio"), 1.04, True),  # a method better than its twin
        (("relative_drop", "ratio"), -0.02, True),  # corruptions that help
        (("litert_t1_cv", "ratio"), 42.7, True),
        (("macs", "count"), -1, False),
        (("macs", "count"), 1e30, False),
        (("train_seconds", "s"), 1e308, False),
        (("converter", "text"), 3, False),
        (("target_reached", "bool"), 2, False),
    ],
)
def test_each_unit_has_its_range(metric, value, ok):
    from effbench.records import check_value

    assert (check_value(Metric(*metric[:1], value, metric[1])) is None) == ok


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d["metrics"][0].update(scope=3), "metrics[0].scope is int 3, expected a string"),
        (lambda d: d.update(curves={"loss": "high"}), "field 'curves.loss' is str 'high', expected a list"),
        (lambda d: d.update(curves=[1, 2]), "field 'curves' is list, expected"),
        (lambda d: d.update(curves={"loss": [0.5, "x"]}), "field 'curves.loss[1]'"),
        (lambda d: d.update(files=["int8.tflite"]), "field 'files' is list, expected an object"),
        (lambda d: d.update(files={"int8.tflite": "here"}), "expected an object with exactly 'path', 'bytes'"),
        (lambda d: d.update(files={"x.tflite": {"path": "../../etc/hostname", "bytes": 1, "sha256": "0" * 64}}),
         "a record's files lie in its own files folder"),
        (lambda d: d.update(files={"x.tflite": {"path": "/etc/hostname", "bytes": 1, "sha256": "0" * 64}}),
         "a record's files lie in its own files folder"),
        (lambda d: d.update(files={"../x.tflite": {"path": "files/x", "bytes": 1, "sha256": "0" * 64}}),
         "the name is not a relative file name"),
        (lambda d: d.update(method="../../etc"), "field 'method' is str '../../etc', expected a slug"),
        (lambda d: d.update(seed=2**40), "field 'seed' is 1099511627776"),
        (lambda d: d.update(hardware={"cpu": {"nested": 1}}), "field 'hardware.cpu'"),
        (lambda d: d.update(source="trust me"), "field 'source' is str 'trust me'"),
        (lambda d: d.update(extra=1), "unknown field 'extra'"),
        (lambda d: d["metrics"].append(dict(d["metrics"][0])), "metric 'top1' is given twice"),
    ],
)  # fmt: skip
def test_malformed_fields_are_refused_naming_the_field(tmp_path, edit, expected):
    data, path = saved_json(tmp_path)
    edit(data)
    path.write_text(json.dumps(rehashed(data)))
    refused(path, expected)


def test_deeply_nested_json_is_refused_without_recursing(tmp_path):
    _, path = saved_json(tmp_path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    refused(path, "nested more than 32 levels deep")
    data, path = saved_json(tmp_path)
    nested: dict = {}
    for _ in range(40):
        nested = {"a": nested}
    data["config"] = nested
    path.write_text(json.dumps(rehashed(data)))
    refused(path, "nested more than 32 levels deep")


def test_an_oversize_record_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import effbench.records as records

    _, path = saved_json(tmp_path)
    with path.open("a") as stream:  # sparse: 400 MB on paper, nothing on disk
        stream.truncate(400 * 2**20)
    monkeypatch.setattr(records.json, "loads", lambda *a, **k: pytest.fail("an oversize record was parsed"))
    refused(path, f"over the limit of {records.MAX_RECORD_BYTES} bytes")


def test_a_fifo_named_like_a_record_is_refused_without_waiting(tmp_path):
    store = ResultStore(tmp_path)
    fifo = store.records_dir / "digits" / "mlp" / "accuracy-s0-smoke-aaaaaaaaaaaaaaaa.json"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    with pytest.raises(RecordError, match="not a regular file"):
        store.records()  # would block forever on open() of the FIFO


def test_a_symbolic_link_out_of_the_result_folder_is_refused(tmp_path):
    outside = ResultStore(tmp_path / "elsewhere").save(make_record())
    store = ResultStore(tmp_path / "results")
    link = store.path_for(make_record())
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    with pytest.raises(RecordError, match=f"outside its result folder {(tmp_path / 'results').resolve()}"):
        store.records()
    inside = tmp_path / "results" / "kept" / "record.json"
    inside.parent.mkdir()
    link.unlink()
    inside.write_text(outside.read_text())
    link.symlink_to(inside)  # a link within the folder is fine
    assert [r.config_hash for r in ResultStore(tmp_path / "results").records() if r.run_id == "r1"]


def test_two_files_of_one_run_in_a_folder_are_a_conflict_naming_both(tmp_path):
    store = ResultStore(tmp_path)
    first = store.save(make_record())
    copy = first.with_name("copy-" + first.name)
    copy.write_text(first.read_text())
    assert len(ResultStore(tmp_path).records()) == 1  # an identical copy is the same record
    ResultStore(tmp_path / "b").save(make_record(value=0.7))
    copy.write_text((ResultStore(tmp_path / "b").path_for(make_record())).read_text())
    with pytest.raises(RecordError) as raised:
        ResultStore(tmp_path).records()
    assert f"{first} and {copy} are records of the same run" in str(raised.value)
    assert "differ in: metrics" in str(raised.value)


def test_a_conflict_names_an_optional_field_that_only_one_of_the_two_records_has(tmp_path):
    from dataclasses import replace

    from effbench.records import collect_records

    plain = ResultStore(tmp_path / "a").save(make_record())
    described = ResultStore(tmp_path / "b").save(replace(make_record(), about={"paper": "x"}))
    for roots in ([tmp_path / "a", tmp_path / "b"], [tmp_path / "b", tmp_path / "a"]):
        _, conflicts = collect_records(roots)
        assert len(conflicts) == 1 and conflicts[0].endswith("differ in: about")
    assert str(plain) in conflicts[0] and str(described) in conflicts[0]


def test_a_record_named_for_another_config_hash_is_refused(tmp_path):
    path = ResultStore(tmp_path).save(make_record())
    path.rename(path.with_name("accuracy-s0-smoke-ffffffffffffffff.json"))
    with pytest.raises(RecordError, match="named for another"):
        ResultStore(tmp_path).records()


def test_what_cannot_be_read_back_is_never_written(tmp_path):
    with pytest.raises(MetricError, match="cannot be recorded: .*outside \\[0, 1\\]"):
        ResultStore(tmp_path).save(make_record(value=57))
    assert not (tmp_path / "records").exists()


def test_the_committed_records_all_pass_the_strict_loader():
    from effbench.records import collect_records

    # Every committed result folder the leaderboard reads: results/* but the demo's, and the submissions'.
    suites = sorted(path for path in (REPO / "results").iterdir() if path.is_dir() and path.name != "demo")
    roots = [*suites, *sorted(REPO.glob("submissions/*/results"))]
    assert {"baselines", "binarization", "quantization", "pruning"} <= {path.name for path in suites}
    chosen, _ = collect_records(roots)
    assert len(chosen) > 1000


def test_the_table_shows_one_of_two_different_records_of_a_run_and_names_both(tmp_path, capsys):
    from effbench.cli import main

    a, b = ResultStore(tmp_path / "a"), ResultStore(tmp_path / "b")
    first, second = a.save(make_record(value=0.9)), b.save(make_record(value=0.1))
    assert main(["table", "--out", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "csv"]) == 0
    printed = capsys.readouterr()
    assert f"{first} and {second} are different records of the same run" in printed.err
    assert ",0.9," in printed.out and ",0.5," not in printed.out  # never averaged
