"""What a sandboxed child answers is untrusted data: EffBench builds each record itself and refuses a run whose
config, metrics or files are not what the submission declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from effbench.config import RunConfig, TrainingConfig
from effbench.hashing import stable_hash
from effbench.method import MethodRef
from effbench.records import SANDBOX
from effbench.sandbox import Answer
from effbench.submission import Submission, SubmissionError
from effbench.track import MetricError
from effbench.untrusted import Checked, checked_training, sandbox_record

SUBMISSION = Submission(
    folder=Path("/nowhere"), team="t", contact="t@example.org", methods=(MethodRef("mlp"),), paper=None,
    licence="MIT", division="closed", tasks=("digits",), seeds=(0,), tracks=("accuracy",), budget="smoke",
    open_tags=(),
)  # fmt: skip
CHECKED = Checked(SUBMISSION, {"mlp": "architecture"}, 1, 1, frozenset())


def job(**training_changes) -> dict:
    """What a child answers for ``mlp`` on digits, smoke, seed 0: one accuracy run, as the runner plans it."""
    training = TrainingConfig(MethodRef("mlp"), "digits", 0, "smoke")
    config = {**training.as_dict(), **training_changes}
    run = RunConfig(training, "accuracy", "closed").as_dict() | training_changes
    return {
        "training": {"config": config, "hash": stable_hash(config), "suite": "architectures", "variant": ""},
        "runs": [{"config": run, "config_hash": stable_hash(run), "files": {},
                  "metrics": [{"metric": "top1", "value": 0.5, "unit": "ratio", "scope": ""}]}],
    }  # fmt: skip


def record_of(answer_job: dict, files: list[bytes] = ()):
    training = checked_training(answer_job, CHECKED)
    return sandbox_record(answer_job["runs"][0], training, CHECKED, Answer({}, list(files)))


def test_an_honest_answer_becomes_a_record_written_by_effbench():
    record, files = record_of(job())
    assert record.source == SANDBOX and record.method == "mlp" and files == {}
    assert record.run_id != "r" and record.hardware["cpu"]  # EffBench's own run id and provenance


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "mnist1d"}, "field 'task' is 'mnist1d', which submission.yaml does not declare"),
        ({"seed": 7}, "field 'seed' is 7"),
        ({"method": "bnn"}, "field 'method' is 'bnn'"),
        ({"budget": "paper"}, "field 'budget' is 'paper'"),
    ],
)
def test_a_training_the_submission_does_not_declare_is_refused(changes, message):
    with pytest.raises(SubmissionError, match=message):
        record_of(job(**changes))


def test_a_longer_recipe_than_the_tasks_is_refused():
    answer = job()
    answer["training"]["config"]["recipe"] = {**answer["training"]["config"]["recipe"], "epochs": 500}
    answer["training"]["hash"] = stable_hash(answer["training"]["config"])
    with pytest.raises(SubmissionError, match="its recipe is not the task's"):
        record_of(answer)


def test_hashes_must_be_the_hashes_of_the_configs():
    answer = job()
    answer["training"]["hash"] = "0" * 16
    with pytest.raises(SubmissionError, match="is not the hash of its config"):
        record_of(answer)
    answer = job()
    answer["runs"][0]["config_hash"] = "0" * 16
    with pytest.raises(SubmissionError, match="run config hash '0000000000000000' is not the hash"):
        record_of(answer)


def test_a_run_of_another_training_or_division_is_refused():
    answer = job()
    answer["runs"][0]["config"] = {**answer["runs"][0]["config"], "seed": 1}
    answer["runs"][0]["config_hash"] = stable_hash(answer["runs"][0]["config"])
    with pytest.raises(SubmissionError, match="its config is not that of its training"):
        record_of(answer)
    answer = job()
    answer["runs"][0]["config"] = {**answer["runs"][0]["config"], "division": "open"}
    answer["runs"][0]["config_hash"] = stable_hash(answer["runs"][0]["config"])
    with pytest.raises(SubmissionError, match="division 'open'"):
        record_of(answer)


def test_impossible_numbers_and_path_like_file_names_are_refused():
    answer = job()
    answer["runs"][0]["metrics"][0]["value"] = 57
    with pytest.raises(MetricError, match="outside \\[0, 1\\]"):
        record_of(answer)
    answer = job()
    answer["runs"][0]["files"] = {"../../escape.tflite": 0}
    with pytest.raises(SubmissionError, match="not an object of plain file names"):
        record_of(answer, [b"x"])
    answer = job()
    answer["runs"][0]["files"] = {"int8.tflite": 3}
    with pytest.raises(Exception, match="names file 3, which it did not send"):
        record_of(answer, [b"x"])
