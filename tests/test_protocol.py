"""Suite protocols: declared without TensorFlow, one division rule for run, submit and paper-records."""

import dataclasses
import datetime as dt
import subprocess
import sys

import pytest

from effbench import index, paper_results, protocol, submission
from effbench.cli import main
from effbench.method import MethodRef
from effbench.protocol import DEFAULT_PROTOCOL, DivisionError, SuiteProtocol, division_of
from effbench.records import ResultStore
from effbench.registry import METHODS, Paper, register_method
from effbench.runner import make_plan
from leaderboard import tables
from suites.binarization.operators import OperatorMethod
from tests.test_leaderboard_tables import binarization_runs, make_record

# Method reference -> its division, and why.
DIVISIONS = {
    "bnn": "closed",  # an operator on the task's default backbone
    "biper:freq=10": "closed",  # an operator's own option
    "bnn:backbone=mlp": "open",  # the backbone is what the closed division fixes
    "bivit:backbone=tiny-transformer": "closed",  # bivit's own default: the same run as bivit
    "mst": "open",  # compressions are not operators: more than the protocol's one training
    "pb-partial": "open",
    "resnet-cifar": "closed",  # the architectures protocol: an architecture with the task's recipe
    "resnet-cifar:depth=8": "closed",  # an architecture's options are the architecture
}


def test_declarations_and_the_suite_summary_need_no_tensorflow():
    code = (
        "import sys\n"
        "from effbench import protocol\n"
        "from leaderboard import tables\n"
        "assert set(protocol.declared_protocols()) >= {'binarization', 'architectures'}\n"
        "assert list(tables.suite_summary(tables.records_frame([]), 'binarization').columns)\n"
        "print(sorted(name for name in ('tensorflow', 'tf_keras', 'larq') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_index_holds_every_declared_protocol_as_declared():
    for suite, declared in protocol.declared_protocols().items():
        assert index.protocol(suite) == declared == SuiteProtocol.from_dict(declared.as_dict())
    default = dataclasses.replace(DEFAULT_PROTOCOL, suite="training")
    assert index.protocol("training") == protocol.protocol_for_suite("training") == default


@pytest.mark.parametrize(("reference", "expected"), DIVISIONS.items())
def test_run_submit_and_paper_records_give_a_run_the_same_division(tmp_path, reference, expected):
    ref = MethodRef.parse(reference)
    assert division_of(ref) == expected
    # effbench run: the planned job of the method (its upstreams are planned too).
    jobs = make_plan([ref], ["digits"], [0], ["complexity"], "smoke", ResultStore(tmp_path))
    assert [job.division for job in jobs if job.training.method == ref] == [expected]
    # effbench submit: the closed division takes it exactly when it is closed.
    assert (submission.closed_division_error(ref) is None) == (expected == "closed")
    # effbench paper-records: a paper's value for it, on its backbone.
    method = ref.create()
    backbone = method.options.get("backbone") or ("resnet-cifar" if "backbone" in method.options else reference)
    value = paper_results.PaperValue(ref.slug, "digits", backbone, "W1A1", 0.8, "Toy et al.")
    assert paper_results.paper_record(value, dt.date(2026, 1, 1)).division == expected


def test_a_training_modifier_makes_a_run_open_for_run_and_submit(tmp_path):
    ref = MethodRef.parse("resnet-cifar+kd:teacher=vgg-small")
    assert division_of(ref) == "open"
    jobs = make_plan([ref], ["digits"], [0], ["complexity"], "smoke", ResultStore(tmp_path))
    assert [job.division for job in jobs if job.training.method == ref] == ["open"]
    assert "trains with modifier kd:teacher=vgg-small" in submission.closed_division_error(ref)


def test_asking_for_closed_refuses_what_the_closed_division_does_not_take_and_open_is_always_allowed():
    with pytest.raises(DivisionError, match="'mst' is a method of kind 'compression'"):
        division_of(MethodRef("mst"), "closed")
    with pytest.raises(DivisionError, match="option backbone of 'bnn:backbone=mlp' is fixed"):
        division_of(MethodRef.parse("bnn:backbone=mlp"), "closed")
    assert division_of(MethodRef("bnn"), "closed") == "closed"
    assert {division_of(MethodRef.parse(ref), "open") for ref in DIVISIONS} == {"open"}


def test_run_with_division_closed_refuses_a_compression_before_training(tmp_path, capsys):
    argv = ["run", "--method", "mst", "--task", "digits", "--track", "complexity", "--budget", "smoke"]
    assert main([*argv, "--division", "closed", "--out", str(tmp_path)]) == 2
    assert "'mst' is a method of kind 'compression'" in capsys.readouterr().err
    assert not (tmp_path / "records").exists()


def test_a_compression_is_open_and_compares_with_its_twin_s_closed_record(tmp_path):
    jobs = {str(job.training.method): job for job in make_plan(
        [MethodRef("mst")], ["digits"], [0], ["accuracy"], "smoke", ResultStore(tmp_path)
    )}  # fmt: skip
    assert (jobs["mst"].division, jobs["mst"].twin_division) == ("open", "closed")
    assert jobs["resnet-cifar"].division == "closed" and jobs["resnet-cifar"].tracks == ["accuracy"]


@pytest.fixture
def foreign_operator():
    """An operator registered outside the binarization suite, as a submission's method.py does."""

    @register_method("toy-foreign-sign", suite="submissions", kind="operator",
                     paper=Paper("A toy", 2024, "https://example.org/toy"), summary="sign")  # fmt: skip
    class ForeignSign(OperatorMethod):
        def input_quantizer(self):
            return "ste_sign"

        def kernel_quantizer(self):
            return "ste_sign"

    yield
    METHODS.remove("toy-foreign-sign")


def test_an_operator_is_judged_by_the_binarization_protocol_in_any_suite(foreign_operator):
    assert division_of(MethodRef("toy-foreign-sign")) == "closed"
    assert division_of(MethodRef.parse("toy-foreign-sign:backbone=mlp")) == "open"
    assert MethodRef("toy-foreign-sign").create().fp32_twin("mlp") == "mlp"
    assert MethodRef.parse("toy-foreign-sign:backbone=vgg-small").create().fp32_twin("mlp") == "vgg-small"


def test_a_suite_without_a_protocol_has_no_closed_division_and_no_twins(toy_methods):
    assert protocol.protocol_for_suite("toys").closed_kinds == DEFAULT_PROTOCOL.closed_kinds == ()
    assert {division_of(MethodRef(slug)) for slug in ("toy-dense", "toy-halved", "toy-broken")} == {"open"}
    with pytest.raises(DivisionError, match="'toy-dense' is a method of suite 'toys': no protocol declared"):
        division_of(MethodRef("toy-dense"), "closed")
    assert MethodRef("toy-dense").create().fp32_twin("mlp") is None
    assert MethodRef("toy-halved").create().fp32_twin("mlp") == "toy-dense"  # a method's own override wins


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"closed_kinds": ("binarizer",)}, "kind 'binarizer' is not one of"),
        ({"fixed_options": ("backbone",)}, "fixed option 'backbone' is not one of its options"),
        ({"twin": "backbone"}, "twin 'backbone' needs a 'backbone' option"),
        ({"twin": "teacher"}, "twin 'teacher' is not one of none, backbone"),
        ({"summary_sort": "top5"}, "summary_sort 'top5' is not one of its summary columns"),
    ],
)
def test_a_declaration_that_cannot_be_applied_is_an_error_naming_the_suite(fields, problem):
    with pytest.raises(ValueError, match=f"protocol of suite 'toys': {problem}"):
        SuiteProtocol("toys", "a toy protocol", **fields)


def test_the_suite_summary_shows_the_columns_its_protocol_declares():
    records = binarization_runs("bnn", [0.8, 0.82]) + binarization_runs("xnor", [0.85])
    declared = tables.suite_summary(tables.records_frame(records), "binarization")
    columns = [*protocol.protocol_for_suite("binarization").summary_columns, "seeds", "lce", "noisy", "hardware"]
    assert list(declared.columns) == [*tables.SUMMARY_KEYS, "W/A", *columns]
    own = SuiteProtocol("binarization", "toy", summary_columns={"bits": ("", "bops"), "acc": ("", "top1")},
                        summary_outcomes=("float32",), summary_sort="acc")  # fmt: skip
    table = tables.suite_summary(tables.records_frame(records), "binarization", own)
    assert list(table.columns) == [*tables.SUMMARY_KEYS, "W/A", "bits", "acc", "seeds", "float32", "noisy", "hardware"]
    assert table["method"].tolist() == ["xnor", "bnn"] and table["float32"].tolist() == ["converted"] * 2


def test_a_suite_without_a_protocol_gets_the_default_summary():
    records = [make_record("toy-dense", top1=0.7, suite="toys")]
    table = tables.suite_summary(tables.records_frame(records), "toys")
    assert list(table.columns) == [*tables.SUMMARY_KEYS, "W/A", *protocol.DEFAULT_SUMMARY, "seeds", "noisy", "hardware"]
    assert table["top1"].tolist() == ["0.7"]
