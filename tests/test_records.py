"""Records: stable config hashes, atomic writes, validation of what is read back."""

import json
import subprocess
import sys
import textwrap

import pytest

from effbench.config import RunConfig, TrainingConfig, stable_hash
from effbench.method import MethodRef
from effbench.records import Record, RecordError, ResultStore, read_record, write_json_atomically
from effbench.track import Metric, MetricError


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
