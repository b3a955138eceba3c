"""Paper reference records from a YAML file: loading, checks, the records made, and the command."""

from pathlib import Path

import pytest
import yaml

from effbench import paper_results as pr
from effbench.cli import main
from effbench.config import RunConfig, TrainingConfig
from effbench.method import MethodRef
from effbench.records import ResultStore, read_record
from leaderboard import tables

ROOT = Path(__file__).resolve().parent.parent
REAL_FILE = ROOT / "suites" / "binarization" / "paper_results.yaml"


def entry(**fields) -> dict:
    base = {"method": "bnn", "task": "cifar10", "backbone": "resnet-cifar:depth=20", "setting": "W1A1",
            "top1": 0.8, "citation": "Toy et al. 2024, Table 2"}  # fmt: skip
    return {**base, **fields}


def write(tmp_path: Path, entries: list, **top) -> Path:
    path = tmp_path / "paper_results.yaml"
    path.write_text(yaml.safe_dump({"retrieved": "2026-11-22", **top, "entries": entries}, sort_keys=False))
    return path


def load(tmp_path: Path, *entries: dict, **options) -> pr.PaperResults:
    return pr.load_paper_results(write(tmp_path, list(entries)), **options)


# ------------------------------------------------------------------------------------------- records


def test_task_default_backbone_gives_the_config_of_our_run_plus_the_source(tmp_path):
    results = load(tmp_path, entry(note="400 epochs"))
    [record] = pr.paper_records(results)
    run = RunConfig(TrainingConfig(MethodRef("bnn"), "cifar10", 0, "paper"), "accuracy", "closed")
    mirrored = {key: value for key, value in record.config.items() if key not in ("source", "paper")}
    assert mirrored == run.as_dict()
    assert record.config["paper"] == {"citation": "Toy et al. 2024, Table 2", "setting": "W1A1",
                                      "backbone": "resnet-cifar:depth=20", "note": "400 epochs"}  # fmt: skip
    assert record.source == record.config["source"] == "paper: Toy et al. 2024, Table 2"
    assert (record.method, record.variant, record.suite, record.task) == ("bnn", "", "binarization", "cifar10")
    assert (record.track, record.seed, record.budget, record.division) == ("accuracy", 0, "paper", "closed")
    assert [(m.name, m.value, m.unit, m.scope) for m in record.metrics] == [("top1", 0.8, "ratio", "")]
    assert record.timestamp == "2026-11-22T00:00:00+00:00" and record.curves == {} and record.files == {}
    # Never the hash of a measured run: a paper record must not make `effbench run` skip that run.
    assert record.config_hash != run.hash and record.training_hash != run.training.hash


def test_other_backbone_is_the_operators_option_in_its_protocol_division(tmp_path):
    [record] = pr.paper_records(load(tmp_path, entry(backbone="vgg-small:width=1.0")))
    assert record.variant == "backbone=vgg-small" and record.division == "closed"  # a protocol backbone
    assert record.config["options"]["backbone"] == "vgg-small"
    [deeper] = pr.paper_records(load(tmp_path, entry(backbone="resnet-cifar:depth=32")))
    assert deeper.variant == "backbone=resnet-cifar:depth=32" and deeper.division == "open"


def test_float_reference_is_the_architecture_itself(tmp_path):
    results = load(tmp_path, entry(method="resnet-cifar", setting="W32A32", top1=0.92),
                   entry(method="vgg-small", backbone="vgg-small", setting="W32A32", top1=0.93))  # fmt: skip
    resnet, vgg = pr.paper_records(results)
    assert (resnet.method, resnet.variant, resnet.suite, resnet.division) == (
        "resnet-cifar",
        "",
        "architectures",
        "closed",
    )
    assert (vgg.method, vgg.variant) == ("vgg-small", "")


def test_records_are_deterministic_and_written_once(tmp_path):
    results = load(tmp_path, entry(), entry(method="xnor", top1=0.85))
    records = pr.paper_records(results)
    assert [r.to_json() for r in records] == [r.to_json() for r in pr.paper_records(results)]
    out = tmp_path / "results"
    written, unchanged = pr.write_records(records, out)
    assert len(written) == 2 and not unchanged
    assert [read_record(path).to_json() for path in written] == [r.to_json() for r in records]
    assert written[0] == out / "records" / "cifar10" / "bnn" / f"accuracy-s0-paper-{records[0].config_hash}.json"
    assert not list(out.rglob(".tmp-*"))
    assert pr.write_records(records, out) == ([], written)
    run = RunConfig(TrainingConfig(MethodRef("bnn"), "cifar10", 0, "paper"), "accuracy")
    assert not ResultStore(out).has(run.hash)


def test_a_corrected_value_replaces_its_record_and_a_changed_citation_leaves_a_stale_one(tmp_path):
    out = tmp_path / "results"
    [old] = pr.paper_records(load(tmp_path, entry(top1=0.81)))
    pr.write_records([old], out)
    [corrected] = pr.paper_records(load(tmp_path, entry(top1=0.82)))
    assert pr.write_records([corrected], out) == ([ResultStore(out).path_for(old)], [])
    assert read_record(ResultStore(out).path_for(old)).metrics[0].value == 0.82
    recited = pr.paper_records(load(tmp_path, entry(citation="Toy et al. 2024, Table 3"), entry(method="xnor")))
    pr.write_records(recited, out)
    assert pr.stale_paper_records(recited, out) == [ResultStore(out).path_for(old)]


def test_leaderboard_keeps_the_paper_rows_apart(tmp_path):
    out = tmp_path / "results"
    pr.write_records(pr.paper_records(load(tmp_path, entry(), entry(backbone="vgg-small"))), out)
    tidy = tables.load_results(out)
    assert set(tidy["source"]) == {"paper: Toy et al. 2024, Table 2"}
    assert sorted(tidy["variant"]) == ["", "backbone=vgg-small"]


# ------------------------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "bnnn"}, "field 'method': unknown method 'bnnn'; did you mean bnn"),
        ({"task": "cifar11"}, "field 'task': unknown task 'cifar11'"),
        ({"top1": 86.75}, "field 'top1' is 86.75, expected top-1 as a fraction in [0, 1] (86.75% is written 0.8675)"),
        ({"top1": -0.1}, "field 'top1' is -0.1, expected top-1 as a fraction in [0, 1]"),
        ({"top1": True}, "field 'top1' is True, expected a number"),
        ({"top1": "87%"}, "field 'top1' is '87%', expected a number"),
        ({"citation": None}, "field 'citation' is missing: say who reports the value"),
        ({"citation": "  "}, "field 'citation' is missing"),
        ({"setting": "W1A32"}, "field 'setting' is W1A32, but 'bnn' runs at W1A1 here"),
        ({"setting": "1/1"}, "field 'setting' is '1/1', expected weight and activation bits as W<bits>A<bits> (W1A1"),
        ({"backbone": "resnet"}, "field 'backbone': unknown method 'resnet'"),
        ({"backbone": "xnor"}, "field 'backbone': 'xnor' is a method of kind operator, not an architecture"),
        ({"backbone": "vgg-small:depth=3"}, "field 'backbone': method 'vgg-small' has no option depth"),
        ({"method": "vgg-small", "setting": "W32A32"}, "'vgg-small' has no 'backbone' option"),
        ({"table": 3}, "unknown field(s) table"),
        ({"note": 3}, "field 'note' is 3, expected a string"),
    ],
)
def test_bad_entries_are_refused_naming_file_entry_and_field(tmp_path, fields, message):
    with pytest.raises(pr.PaperResultsError) as error:
        load(tmp_path, entry(method="xnor"), entry(**fields))
    assert str(error.value).startswith(f"{tmp_path / 'paper_results.yaml'}: entries[1]")
    assert message in str(error.value)


def test_missing_field_is_named(tmp_path):
    incomplete = entry()
    del incomplete["top1"]
    with pytest.raises(pr.PaperResultsError, match=r"entries\[0\] \(bnn on cifar10\): field 'top1' is missing"):
        load(tmp_path, incomplete)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("entries: []\nretrieved: 2026-11-22\n", "field 'entries' must be a non-empty list"),
        ("entries: [{method: bnn}]\n", "field 'retrieved' is None, expected"),
        ("retrieved: last week\nentries: [{}]\n", "field 'retrieved' is 'last week'"),
        ("retrieved: 2026-11-22\nentries: [1]\nextra: 2\n", "unknown field(s) extra"),
        ("retrieved: 2026-11-22\nentries: [3]\n", "entries[0]: expected a mapping"),
        ("- 1\n", "expected a mapping with 'retrieved' and 'entries'"),
        ("retrieved: [\n", "not valid YAML"),
        (
            "retrieved: 2026-11-22\nentries:\n  - {method: bnn, top1: 0.8, top1: 0.9}\n",
            "line 3: key 'top1' is given twice",
        ),
    ],
)
def test_bad_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(pr.PaperResultsError) as error:
        pr.load_paper_results(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_two_entries_of_one_record_are_refused(tmp_path):
    with pytest.raises(
        pr.PaperResultsError, match=r"entries\[1\].*same method, backbone, task and citation as .*entries\[0\]"
    ):
        load(tmp_path, entry(), entry(backbone="resnet-cifar", top1=0.7))


def test_unregistered_methods_can_be_skipped_and_listed(tmp_path):
    results = load(tmp_path, entry(method="not-yet-written"), entry(), skip_unregistered=True)
    assert [v.method for v in results.values] == ["bnn"] and [v.method for v in results.skipped] == ["not-yet-written"]
    with pytest.raises(pr.PaperResultsError, match="entries\\[0\\].*--skip-unregistered"):
        load(tmp_path, entry(method="not-yet-written"), entry())


def test_the_suite_file_is_valid_and_cited():
    results = pr.load_paper_results(REAL_FILE, skip_unregistered=True)
    values = [*results.values, *results.skipped]
    assert values and all(0.0 < v.top1 <= 1.0 and v.citation and v.task == "cifar10" for v in values)
    assert {v.backbone for v in values} <= {"resnet-cifar:depth=20", "vgg-small"}
    assert len(pr.paper_records(results)) == len(results.values)


# ------------------------------------------------------------------------------------------- command


def test_command_writes_records_and_reports_errors(tmp_path, capsys):
    path = write(tmp_path, [entry(), entry(method="dorefa", top1=0.84), entry(method="later-slug")])
    out = tmp_path / "results"
    assert main(["paper-records", str(path), "--out", str(out)]) == 2
    assert "effbench paper-records: error:" in capsys.readouterr().err and not out.exists()
    assert main(["paper-records", str(path), "--out", str(out), "--skip-unregistered", "--check"]) == 0
    assert "2 valid entries; nothing written" in capsys.readouterr().out and not out.exists()
    assert main(["paper-records", str(path), "--out", str(out), "--skip-unregistered"]) == 0
    printed = capsys.readouterr().out
    assert "skipped later-slug on cifar10" in printed and "2 record(s) written, 0 unchanged" in printed
    assert len(ResultStore(out).records()) == 2
