"""A submission's own code (``method.py``) runs only in the sandbox; its results are written by EffBench.

``effbench submit FOLDER`` on a folder with a ``method.py`` never imports it. The parent (this process)
checks the folder and the YAML (:func:`effbench.submission.read_submission`), then:

1. **check** (:func:`check_in_sandbox`, also all of ``--check``): a sandboxed child (:mod:`effbench.sandbox`)
   imports method.py, looks the methods, tasks and tracks up, and plans the runs; it answers with the
   problems it found, the methods' kinds, the slugs of their upstreams, and how many runs the plan holds.
   The parent then checks the records already in ``results/`` itself.
2. **run** (:func:`run_in_sandbox`): a second child imports method.py again, plans, trains and measures
   (the plan's upstream trainings and FP32 twins too: they share a process with the submitted code), and
   answers with *measurements*, never records: for each run its config and metrics, curves and kept files;
   for each training the trained model's files, and for each deployable the flatbuffers to verify.
3. **verify** (:mod:`effbench.verify`): a third child, which sees only those flatbuffers and the task data
   (no file of the submission), scores each on the test split with LiteRT or LCE's interpreter.

The parent checks every measurement as untrusted data (:func:`sandbox_record`: the config hashes to its
hash and declares what the YAML declares, the metrics are within their units' ranges, file names are plain
names) and writes the records itself: ``source`` = ``sandbox`` for the numbers measured beside the
submitted code, ``verified`` for the verifier's, with the parent's own run id, time, hardware and versions.
Trained models go to ``results/artifacts`` (only a later sandboxed child ever loads them).
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from effbench.hashing import stable_hash
from effbench.method import MAIN
from effbench.records import (
    FILE_NAME,
    SANDBOX,
    SLUG,
    TOKEN,
    VERIFIED,
    Record,
    RecordError,
    ResultStore,
    checked_json,
    describe_files,
)
from effbench.runner import JobRunner
from effbench.sandbox import Answer, ChildError, Limits, Mount, Sandbox, SandboxError
from effbench.submission import (
    RESULTS_DIR,
    YAML_NAME,
    Submission,
    SubmissionError,
    SubmissionStore,
    default_tracks,
    local_methods,
    parse_fields,
    raise_problems,
    read_yaml,
    registry_problems,
    results_problems,
    upstream_method_slugs,
)  # fmt: skip
from effbench.track import Metric, MetricError

Log = Callable[[str], None]


def to_stderr(line: str) -> None:
    """Where a sandboxed child's log lines go: its output, not EffBench's results."""
    print(line, file=sys.stderr)



class KeepingRunner(JobRunner):
    """Computes as :class:`effbench.runner.JobRunner` does, keeping the artifact to convert for verification."""

    artifact = None

    def _artifact(self, *args: Any) -> Any:
        self.artifact = super()._artifact(*args)
        return self.artifact


# Keys of the config that belong to a run, not to its training (see effbench.config.RunConfig.as_dict).
RUN_KEYS = ("track", "division", "deployable")
VERIFIED_TRACK = "verified"


@dataclass(frozen=True)
class Checked:
    """A submission the sandbox checked: its fields, the methods' kinds, the plan's size, the upstream slugs."""

    submission: Submission
    kinds: dict[str, str]
    runs: int
    trainings: int
    upstream: frozenset[str]


# ------------------------------------------------------------------------------------------- the parent


def sandbox_for(submission: Submission) -> Sandbox:
    """A sandbox that sees the submission folder, and the task data, read-only; limits for its budget."""
    from effbench.tasks.base import cache_dir, data_dir

    mounts = [Mount(submission.folder, "submission")]
    mounts += [Mount(folder, name) for name, folder in (("data", data_dir()), ("cache", cache_dir()))
               if folder.is_dir()]  # fmt: skip
    return Sandbox(mounts, Limits.for_budget(submission.budget))


def request(submission: Submission, sandbox: Sandbox, **extra: Any) -> dict[str, Any]:
    return {"folder": sandbox.path("submission"), "budget": submission.budget, **extra}


def ask(sandbox: Sandbox, entry: str, message: dict[str, Any], submission: Submission, log: Log) -> Answer:
    """The child's answer; what it reports, or why it failed, as a :class:`SubmissionError` with host paths."""
    inside = sandbox.path("submission")
    try:
        return sandbox.run(entry, message, lambda line: log(line.replace(inside, str(submission.folder))))
    except SandboxError as error:
        text = str(error).replace(inside, str(submission.folder))
        raise SubmissionError(f"{submission.folder}: the submission's code failed in the sandbox: {text}") from None


def check_in_sandbox(submission: Submission, log: Log = to_stderr) -> Checked:
    """Import method.py in a sandboxed child, check the methods and plan there; check ``results/`` here."""
    prepare_task_data(submission)
    sandbox = sandbox_for(submission)
    answer = ask(sandbox, "check", request(submission, sandbox), submission, log)
    manifest = answer.manifest
    inside = sandbox.path("submission")
    problems = [str(text).replace(inside, str(submission.folder)) for text in _list(manifest, "problems")]
    raise_problems(problems)
    registered = tuple(_slugs(manifest, "registered"))
    tracks = tuple(_slugs(manifest, "tracks"))
    upstream = frozenset(_slugs(manifest, "upstream"))
    kinds = manifest.get("kinds")
    if not isinstance(kinds, dict) or set(kinds) != {ref.slug for ref in submission.methods}:
        raise SubmissionError(f"{submission.folder}: the sandbox did not say what kind of method each one is")
    checked = replace(submission, local_methods=registered, tracks=tracks)
    raise_problems(results_problems(checked, set(upstream)))
    runs, trainings = manifest.get("runs"), manifest.get("trainings")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (runs, trainings)):
        raise SubmissionError(f"{submission.folder}: the sandbox's plan is malformed")
    return Checked(checked, {slug: str(kind) for slug, kind in kinds.items()}, runs, trainings, upstream)


def prepare_task_data(submission: Submission) -> None:
    """Embedded tasks generate and cache their data on first use: here, since the sandbox cannot write the cache."""
    from effbench.registry import TASKS, load_builtin_entries

    load_builtin_entries()
    for slug in submission.tasks:
        if slug in TASKS and TASKS.get(slug).spec.embedded:
            TASKS.get(slug).factory().load()


def run_in_sandbox(checked: Checked, log: Log = to_stderr) -> int:
    """Train and measure in the sandbox, verify in another, write the records here; 1 if any run failed."""
    from effbench.cli import record_lines
    from effbench.runner import cache_artifact_files, report_failures

    submission = checked.submission
    store = SubmissionStore(submission)
    sandbox = sandbox_for(submission)
    print(f"{checked.runs} runs to do in {checked.trainings} trainings, in the sandbox; results in {store.root}")
    answer = ask(sandbox, "run", request(submission, sandbox), submission, log)
    failures: list[str] = []
    outputs: list[tuple[Record, dict[str, bytes]]] = []
    to_verify: list[Verifiable] = []
    for job in _list(answer.manifest, "jobs"):
        try:
            training = checked_training(job, checked)
            failures += [str(text) for text in _list(job, "failures")]
            outputs += [sandbox_record(run, training, checked, answer) for run in _list(job, "runs")]
            artifact = artifact_files(job, answer)
            if artifact:
                cache_artifact_files(store, training.hash, artifact)
            to_verify += verifiables(job, training, answer)
        except (SubmissionError, RecordError, MetricError) as error:
            failures.append(f"a result of the sandbox was refused: {error}")
    outputs += verified_records(to_verify, checked, log)
    for record, files in outputs:
        try:
            store.save_with_files(record, files)
        except (RecordError, MetricError, OSError) as error:
            failures.append(f"{record.method} on {record.task} ({record.track}) could not be recorded: {error}")
    records = store.records() if store.records_dir.is_dir() else []
    if records:
        print("\n".join(record_lines(records)))
    return report_failures(failures)


def _list(manifest: Mapping[str, Any], key: str) -> list[Any]:
    value = manifest.get(key, [])
    if not isinstance(value, list):
        raise SubmissionError(f"the sandbox's answer: '{key}' is not a list")
    return value


def _slugs(manifest: Mapping[str, Any], key: str) -> list[str]:
    values = _list(manifest, key)
    if not all(isinstance(value, str) and SLUG.fullmatch(value) for value in values):
        raise SubmissionError(f"the sandbox's answer: '{key}' holds something other than slugs")
    return values


# ------------------------------------------------------------------ measurements become records, here


@dataclass(frozen=True)
class Training:
    """A training the sandbox ran, as checked here: its config and hash, and what its records say of it."""

    config: dict[str, Any]
    hash: str
    method: str
    suite: str
    variant: str
    about: dict[str, Any]


def checked_training(job: Mapping[str, Any], checked: Checked) -> Training:
    """The job's training, refused unless it is one the YAML declares (or an upstream of one)."""
    data = job.get("training")
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise SubmissionError("a job without a training config")
    config, training_hash = data["config"], data.get("hash")
    if training_hash != stable_hash(config) or not isinstance(training_hash, str) or not TOKEN.fullmatch(training_hash):
        raise SubmissionError(f"training hash {training_hash!r} is not the hash of its config")
    submission = checked.submission
    method = config.get("method")
    allowed = {
        "method": {ref.slug for ref in submission.methods} | checked.upstream,
        "task": set(submission.tasks), "seed": set(submission.seeds), "budget": {submission.budget},
    }  # fmt: skip
    for key, values in allowed.items():
        if config.get(key) not in values:
            raise SubmissionError(f"training config field '{key}' is {config.get(key)!r}, which {YAML_NAME} "
                                  f"does not declare")  # fmt: skip
    check_recipe(config)
    suite, variant, about = data.get("suite"), data.get("variant"), data.get("about", {})
    if not isinstance(suite, str) or not SLUG.fullmatch(suite) or not isinstance(variant, str):
        raise SubmissionError(f"training of {method}: malformed suite or variant")
    return Training(config, training_hash, method, suite, variant, about if isinstance(about, dict) else {})


def check_recipe(config: Mapping[str, Any]) -> None:
    """The recipe must be the task's, for the budget (the training or the fine-tuning one): nothing else trains."""
    from effbench.registry import TASKS

    task = TASKS.get(config["task"]).factory()
    recipes = [task.recipe(config["budget"]).as_config(), task.finetune_recipe(config["budget"]).as_config()]
    if config.get("recipe") not in recipes:
        raise SubmissionError(f"training of {config['method']} on {config['task']}: its recipe is not the task's")


def sandbox_record(
    run: Any, training: Training, checked: Checked, answer: Answer
) -> tuple[Record, dict[str, bytes]]:
    """The record of one run the sandbox measured, built here from its config and metrics (``source`` sandbox)."""
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
        raise SubmissionError("a run without a config")
    config = run["config"]
    if run.get("config_hash") != stable_hash(config):
        raise SubmissionError(f"run config hash {run.get('config_hash')!r} is not the hash of its config")
    if {key: value for key, value in config.items() if key not in RUN_KEYS} != training.config:
        raise SubmissionError(f"run {run['config_hash']}: its config is not that of its training")
    division, track = config.get("division"), config.get("track")
    if division != checked.submission.division or track not in (*checked.submission.tracks, "accuracy"):
        raise SubmissionError(f"run {run['config_hash']}: division {division!r} or track {track!r} is not declared")
    files = {name: answer.file(index) for name, index in _mapping(run, "files").items()}
    curves = run.get("curves", {})
    record = new_record(training, config, run["config_hash"], _metrics(run), curves, SANDBOX)
    return with_files(record, files), files


def new_record(
    training: Training, config: dict[str, Any], config_hash: str, metrics: list[Metric], curves: Any, source: str
) -> Record:
    from effbench import provenance

    now = dt.datetime.now(dt.UTC)
    return Record(
        run_id=f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}", config_hash=config_hash, training_hash=training.hash,
        config=config, method=training.method, variant=training.variant,
        deployable=config.get("deployable", MAIN), suite=training.suite, task=config["task"],
        track=config["track"], seed=config["seed"], budget=config["budget"], division=config["division"],
        hardware=provenance.hardware(), versions=provenance.versions(), git_commit=provenance.git_commit(),
        timestamp=now.isoformat(timespec="seconds"), metrics=metrics, curves=curves if isinstance(curves, dict) else {},
        source=source, about=training.about,
    )  # fmt: skip


def with_files(record: Record, files: Mapping[str, bytes]) -> Record:
    """The record with its ``files`` described, then checked as the store would read it."""
    root = Path("/")  # describe_files wants paths relative to a root: the store's layout, under any root
    record.files = describe_files(files, ResultStore(root).files_dir(record.task, record.method, record.config_hash),
                                  root)  # fmt: skip
    checked_json(record, f"the sandbox's run {record.config_hash}")
    return record


def _mapping(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(name, str) and _file_name(name) for name in value):
        raise SubmissionError(f"the sandbox's answer: '{key}' is not an object of plain file names")
    return value


def _file_name(name: str) -> bool:
    return all(FILE_NAME.fullmatch(part) and part not in (".", "..") for part in name.split("/"))


def _metrics(run: Mapping[str, Any]) -> list[Metric]:
    items = _list(run, "metrics")
    try:
        return [Metric(item["metric"], item["value"], item["unit"], item.get("scope", "")) for item in items]
    except (KeyError, TypeError, MetricError) as error:
        raise SubmissionError(f"run {run.get('config_hash')}: malformed metrics ({error})") from None


def artifact_files(job: Mapping[str, Any], answer: Answer) -> dict[str, bytes]:
    """The trained model's files, by plain name (``model.keras``, ``deployable-1.tflite``, ``history.json``)."""
    return {name: answer.file(index) for name, index in _mapping(job, "artifact").items()}


# ---------------------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verifiable:
    """The flatbuffers of one deployable of one training, to score in a clean process."""

    training: Training
    deployable: str
    files: dict[str, bytes]


def verifiables(job: Mapping[str, Any], training: Training, answer: Answer) -> list[Verifiable]:
    found = []
    for deployable, variants in _mapping_of_mappings(job, "verify").items():
        files = {variant: answer.file(index) for variant, index in variants.items()}
        if files:
            found.append(Verifiable(training, deployable, files))
    return found


def _mapping_of_mappings(job: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    value = job.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) and all(
            isinstance(name, str) and SLUG.fullmatch(name) for name in v) for k, v in value.items()):  # fmt: skip
        raise SubmissionError(f"the sandbox's answer: '{key}' is malformed")
    return value


def verified_records(items: list[Verifiable], checked: Checked, log: Log) -> list[tuple[Record, dict[str, bytes]]]:
    """Score every flatbuffer in a sandbox that never sees the submission; one ``verified`` record per deployable."""
    if not items:
        return []
    from effbench.tasks.base import cache_dir, data_dir
    from effbench.verify import headline_metrics

    with tempfile.TemporaryDirectory(prefix="effbench-verify-") as folder:
        listed = []
        for index, item in enumerate(items):
            for variant, content in item.files.items():
                name = f"{index}-{variant}.tflite"
                (Path(folder) / name).write_bytes(content)
                listed.append({"file": name, "variant": variant, "task": item.training.config["task"]})
        Path(folder).chmod(0o755)  # the verifier may run as nobody
        mounts = [Mount(Path(folder), "input")]
        mounts += [Mount(path, name) for name, path in (("data", data_dir()), ("cache", cache_dir())) if path.is_dir()]
        sandbox = Sandbox(mounts, Limits.for_budget("smoke"))
        try:
            answer = sandbox.run("verify", {"folder": sandbox.path("input"), "files": listed}, log)
        except SandboxError as error:
            raise SubmissionError(f"verifying the submission's flatbuffers failed: {error}") from None
    scores = {result["file"]: result["metrics"] for result in _list(answer.manifest, "results")
              if isinstance(result, dict)}  # fmt: skip
    records = []
    for index, item in enumerate(items):
        scoped = [Metric(m["metric"], m["value"], m["unit"], m["scope"])
                  for variant in item.files for m in scores.get(f"{index}-{variant}.tflite", [])]  # fmt: skip
        config = {**item.training.config, "track": VERIFIED_TRACK, "division": checked.submission.division}
        if item.deployable != MAIN:
            config["deployable"] = item.deployable
        files = {f"{variant}.tflite": content for variant, content in item.files.items()}
        record = new_record(item.training, config, stable_hash(config), [*headline_metrics(scoped), *scoped], {},
                            VERIFIED)  # fmt: skip
        records.append((with_files(record, files), files))
    return records


# -------------------------------------------------------------------------------------------- the child


def child_submission(message: Mapping[str, Any]) -> Submission:
    """The submission as the child sees it, from the same YAML the parent checked (read here again)."""
    folder = Path(message["folder"])
    declared = parse_fields(read_yaml(folder / YAML_NAME), folder / YAML_NAME, folder)
    return replace(declared, budget=message["budget"])


def reported(entry: Callable[[dict[str, Any]], tuple[dict[str, Any], list[bytes]]]) -> Callable:
    """``entry`` with a :class:`SubmissionError` (an import failure, a refused field) answered as its message."""

    def run(message: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        try:
            return entry(message)
        except SubmissionError as error:
            raise ChildError(str(error)) from None

    run.__doc__ = entry.__doc__
    return run


@reported
def child_check(message: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """In the sandbox: import method.py, check the declared methods, tasks and tracks, and plan the runs."""
    from effbench.registry import METHODS
    from effbench.runner import make_plan

    declared = child_submission(message)
    with local_methods(declared.folder) as registered:
        submission = replace(declared, local_methods=registered, tracks=declared.tracks or default_tracks())
        problems = registry_problems(submission, submission.folder / YAML_NAME)
        answer: dict[str, Any] = {"problems": problems, "registered": list(registered),
                                  "tracks": list(submission.tracks)}  # fmt: skip
        if problems:
            return answer, []
        store = ResultStore(submission.folder / RESULTS_DIR)
        jobs = make_plan(list(submission.methods), list(submission.tasks), list(submission.seeds),
                         list(submission.tracks), submission.budget, store, submission.division)  # fmt: skip
        answer.update({
            "kinds": {ref.slug: METHODS.get(ref.slug).spec.kind for ref in submission.methods},
            "upstream": sorted(upstream_method_slugs(submission)),
            "runs": sum(len(job.runs()) for job in jobs), "trainings": len(jobs),
        })  # fmt: skip
        return answer, []


@reported
def child_run(message: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """In the sandbox: import method.py, plan, train and measure; answer with measurements and files."""
    from effbench.runner import make_plan

    declared = child_submission(message)
    with local_methods(declared.folder) as registered:
        submission = replace(declared, local_methods=registered, tracks=declared.tracks or default_tracks())
        raise_problems(registry_problems(submission, submission.folder / YAML_NAME))
        store = ResultStore(submission.folder / RESULTS_DIR)
        jobs = make_plan(list(submission.methods), list(submission.tasks), list(submission.seeds),
                         list(submission.tracks), submission.budget, store, submission.division)  # fmt: skip
        files: list[bytes] = []
        answers = compute_jobs(jobs, store, files)
    return {"jobs": answers}, files


def compute_jobs(jobs: list, store: ResultStore, files: list[bytes]) -> list[dict[str, Any]]:
    """Each job computed as the runner computes it, upstreams first, nothing written; files appended to ``files``."""
    from effbench.config import RunConfig
    from effbench.runner import twin_reference

    produced: dict[str, dict[str, bytes]] = {}
    references: dict[str, dict[str, float]] = {}
    answers = []
    for job in jobs:
        reference = twin_reference(store, job)
        if job.twin is not None and reference is None:
            reference = references.get(RunConfig(job.twin, "accuracy", job.twin_division or job.division).hash)
        runner = KeepingRunner(store, print, reuse_models=True, cache_models=False)
        computed = runner.compute(job, reference, produced)
        if computed.artifact_files:
            produced[job.training.hash] = computed.artifact_files
        for output in computed.outputs:
            if output.record.track == "accuracy":
                metrics = output.record.metrics
                references[output.record.config_hash] = {
                    m.name: float(m.value) for m in metrics if not m.scope and not isinstance(m.value, str)
                }
        answers.append(job_answer(job, computed, runner, files))
    return answers


def _add(files: list[bytes], content: bytes) -> int:
    files.append(content)
    return len(files) - 1


def job_answer(job: Any, computed: Any, runner: Any, files: list[bytes]) -> dict[str, Any]:
    """One job's measurements as data: no record, only what the parent needs to write its own."""
    from effbench.registry import METHODS, method_about
    from effbench.verify import flatbuffers

    spec = METHODS.get(job.training.method.slug).spec
    answer: dict[str, Any] = {
        "training": {"config": job.training.as_dict(), "hash": job.training.hash, "suite": spec.suite,
                     "variant": job.training.method.variant, "about": method_about(spec)},
        "failures": list(computed.failures),
        "runs": [{"config": o.record.config, "config_hash": o.record.config_hash,
                  "metrics": [{"metric": m.name, "value": m.value, "unit": m.unit, "scope": m.scope}
                              for m in o.record.metrics],
                  "curves": o.record.curves, "files": {name: _add(files, content) for name, content in o.files.items()}}
                 for o in computed.outputs],
        "artifact": {name: _add(files, content) for name, content in computed.artifact_files.items()},
        "verify": {},
    }  # fmt: skip
    artifact = runner.artifact
    if artifact is not None and job.tracks:
        for name, deployable in artifact.all_deployables().items():
            kept = {file.removesuffix(".tflite"): content for o in computed.outputs if o.record.deployable == name
                    for file, content in o.files.items() if file.endswith(".tflite")}  # fmt: skip
            made, problems = flatbuffers(deployable.model, deployable.tflite, kept)
            answer["verify"][name] = {variant: _add(files, content) for variant, content in made.items()}
            answer["failures"] += [f"{job.describe()} [{name}]: not verifiable: {text}" for text in problems]
    return answer
