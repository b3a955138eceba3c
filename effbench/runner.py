"""Plan and execute runs: methods x tasks x seeds x tracks.

The plan groups runs by training config (one :class:`Job` trains once and measures each of its tracks),
leaves out runs whose config hash already has a record (unless forced), and puts the FP32 twin of a
compressed method before the method, since the method's accuracy record reports the ratio to it.

Executing a job has two steps. *Computing* it (:func:`compute_job`, in whatever process or machine the
executor picks) trains or reloads the model and measures its tracks into records, holding the files each
run keeps in memory; it writes nothing but the trained-model cache. *Saving* it (:func:`save_job`, always
in the driver, the process that made the plan) writes each run's files and then its record atomically.
So a lost worker loses no record, and a re-run resumes exactly where the last one stopped. The driver
dispatches a compressed method's job only once its twin's job is saved, and hands it the twin's accuracy
metrics, so a worker never reads the result folder. :class:`LocalExecutor` computes jobs in this process,
one after another; :mod:`effbench.executors` has the Ray one.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import tempfile
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from effbench import provenance
from effbench.config import RunConfig, TrainingConfig
from effbench.method import Artifact, Method, MethodRef
from effbench.progress import ProgressLine
from effbench.recipe import Recipe, distribution_strategy
from effbench.records import Record, ResultStore, describe_files, write_json_atomically
from effbench.registry import METHODS, TASKS, TRACKS
from effbench.tasks.base import Splits, Task, cache_dir, data_dir
from effbench.tf import keras
from effbench.track import MeasureContext
from effbench.training import TrainContext, reset_peak_memory, training_stats

Log = Callable[[str], None]


@dataclass
class Job:
    """One trained model and the tracks still to measure on it."""

    training: TrainingConfig
    tracks: list[str]
    division: str = "closed"
    twin: TrainingConfig | None = None

    def runs(self) -> list[RunConfig]:
        return [RunConfig(self.training, track, self.division) for track in self.tracks]

    def describe(self) -> str:
        t = self.training
        return f"{t.method} on {t.task} (seed {t.seed}, {t.budget}): {', '.join(self.tracks)}"


@dataclass
class JobResult:
    """A job's saved records, and a message for each run that failed."""

    job: Job
    records: list[Record] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobWork:
    """A job ready to compute, with everything it needs from the driver."""

    job: Job
    # The FP32 twin's whole-model accuracy metrics; None without a twin, or when the twin has no record.
    reference: dict[str, float] | None
    # The result folder; its artifacts/ caches trained models for every worker that can reach it.
    root: Path
    reuse_models: bool = True


@dataclass
class RunOutput:
    """A run's record and the files it keeps (name -> content), not yet written anywhere."""

    record: Record
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class ComputedJob:
    """What computing a job produced, for the driver to save."""

    job: Job
    outputs: list[RunOutput] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # Log lines of a job computed where the driver's log cannot reach (a Ray worker), shown on its return.
    messages: list[str] = field(default_factory=list)


def twin_of(method: MethodRef, task: str) -> MethodRef | None:
    reference = method.create().fp32_twin(TASKS.get(task).spec.default_backbone)
    return MethodRef.parse(reference) if reference else None


def make_plan(
    methods: Sequence[MethodRef],
    tasks: Sequence[str],
    seeds: Sequence[int],
    tracks: Sequence[str],
    budget: str,
    store: ResultStore,
    division: str = "closed",
    force: bool = False,
) -> list[Job]:
    for track in tracks:
        TRACKS.get(track)
    jobs: dict[str, Job] = {}

    def add(training: TrainingConfig, wanted: Sequence[str], twin: TrainingConfig | None = None) -> None:
        runs = [RunConfig(training, track, division) for track in wanted]
        missing = [run.track for run in runs if force or not store.has(run.hash)]
        job = jobs.setdefault(training.hash, Job(training, [], division, twin))
        job.tracks.extend(track for track in missing if track not in job.tracks)

    for task in tasks:
        TASKS.get(task)
        for method in methods:
            twin = twin_of(method, task) if "accuracy" in tracks else None
            for seed in seeds:
                twin_training = TrainingConfig(twin, task, seed, budget) if twin else None
                if twin_training:
                    add(twin_training, ["accuracy"])
                add(TrainingConfig(method, task, seed, budget), tracks, twin_training)
    return [job for job in jobs.values() if job.tracks]


class Executor(Protocol):
    """Computes jobs, in this process or elsewhere; the driver saves what they return."""

    def start(self) -> int:
        """Get ready; return how many jobs it computes at once (the driver keeps that many in flight)."""

    def submit(self, work: JobWork, log: Log) -> None:
        """Take a job to compute; ``log`` shows its log lines as they come, where the job runs here."""

    def wait(self) -> ComputedJob:
        """Block until a submitted job is computed and return it."""

    def stop(self) -> None:
        """Release what ``start`` took."""


class LocalExecutor:
    """Computes one job at a time in this process."""

    def __init__(self) -> None:
        self._queue: deque[tuple[JobWork, Log]] = deque()

    def start(self) -> int:
        return 1

    def submit(self, work: JobWork, log: Log) -> None:
        self._queue.append((work, log))

    def wait(self) -> ComputedJob:
        work, log = self._queue.popleft()
        return compute_job(work, log)

    def stop(self) -> None:
        self._queue.clear()


def compute_job(work: JobWork, log: Log) -> ComputedJob:
    """Compute a job wherever this runs; trained models are cached only where the result folder exists.

    On a worker of another machine the folder is absent (unless it is on a shared filesystem), so the
    model is trained there and not cached.
    """
    store = ResultStore(work.root)
    runner = JobRunner(store, log, work.reuse_models, cache_models=store.root.is_dir())
    return runner.compute(work.job, work.reference)


class JobRunner:
    """Trains (or reloads) a job's model and measures each of its tracks into records.

    :meth:`compute` writes nothing but the trained-model cache under ``store.artifact_dir`` (and that
    only with ``cache_models``); calling the runner computes a job and saves it, in this process.
    """

    def __init__(self, store: ResultStore, log: Log = print, reuse_models: bool = True, cache_models: bool = True):
        self.store = store
        self.log = log
        self.reuse_models = reuse_models
        self.cache_models = cache_models

    def __call__(self, job: Job) -> JobResult:
        return save_job(self.store, self.compute(job, twin_reference(self.store, job)), self.log)

    def compute(self, job: Job, reference: dict[str, float] | None) -> ComputedJob:
        """Train or reload, then measure every track; ``reference`` is the twin's accuracy (see JobWork)."""
        computed = ComputedJob(job)
        try:
            task = TASKS.get(job.training.task).factory()
            method = job.training.method.create()
            context = self._train_context(task, job.training)
            artifact = self._artifact(method, context, job.training)
        except Exception as error:  # noqa: BLE001 - a failed run is reported, the others go on
            computed.failures.append(self._failure(job, "training", error))
            return computed
        for run in job.runs():
            try:
                twin = self._twin_accuracy(job, reference) if run.track == "accuracy" else None
                computed.outputs.append(self._measure(run, method, task, context, artifact, twin))
            except Exception as error:  # noqa: BLE001
                computed.failures.append(self._failure(job, run.track, error))
        return computed

    def _train_context(self, task: Task, training: TrainingConfig) -> TrainContext:
        recipe = task.recipe(training.budget)
        splits = loaded_splits(task).for_run(training.seed, recipe.max_train_samples)
        return TrainContext(task, splits, recipe, training.seed, training.budget)

    def _artifact(self, method: Method, context: TrainContext, training: TrainingConfig) -> Artifact:
        cached = self.store.artifact_dir(training.hash)
        model_path, history_path = cached / "model.keras", cached / "history.json"
        if self.cache_models and self.reuse_models and model_path.exists() and history_path.exists():
            saved = json.loads(history_path.read_text())
            model = keras.models.load_model(model_path, compile=False)
            return Artifact(model, saved["history"], saved["train_seconds"], train_stats=saved.get("train_stats", {}))
        self.log(f"training {training.method} on {training.task} (seed {training.seed}, {training.budget})")
        artifact = train(method, context)
        if self.cache_models:
            cache_artifact(artifact, model_path, history_path)
        return artifact

    def _measure(
        self, run: RunConfig, method: Method, task: Task, context: TrainContext, artifact: Artifact,
        reference: dict[str, float] | None,
    ) -> RunOutput:  # fmt: skip
        track = TRACKS.get(run.track).factory()
        started = time.perf_counter()
        # Tracks write the files they keep into a scratch folder; their bytes travel with the record.
        with tempfile.TemporaryDirectory(prefix="effbench-files-") as scratch:
            measure_context = MeasureContext(
                model=artifact.model, artifact=artifact, task=task, splits=context.splits, seed=context.seed,
                recipe=context.recipe, reference=reference, files_dir=Path(scratch),
                retrain=lambda recipe: retrain(method, context, recipe),
            )  # fmt: skip
            metrics = track.measure(measure_context)
            files = read_files(Path(scratch))
        self.log(f"  {run.track}: {len(metrics)} metrics in {time.perf_counter() - started:.1f}s")
        record = build_record(run, method, metrics, artifact.history if run.track == "accuracy" else {})
        final = self.store.files_dir(run.training.task, run.training.method.slug, run.hash)
        record.files = describe_files(files, final, self.store.root)
        return RunOutput(record, files)

    @staticmethod
    def _twin_accuracy(job: Job, reference: dict[str, float] | None) -> dict[str, float] | None:
        if job.twin is not None and reference is None:
            raise RuntimeError(f"the FP32 twin {job.twin.method} has no accuracy record; it failed or was not run")
        return reference

    def _failure(self, job: Job, stage: str, error: BaseException) -> str:
        message = failure_message(job, stage, error)
        self.log(f"FAILED {message}")
        return message


def failure_message(job: Job, stage: str, error: BaseException) -> str:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    return f"{job.describe()} failed at {stage}: {detail}"


def cache_artifact(artifact: Artifact, model_path: Path, history_path: Path) -> None:
    """Keep a trained model for later invocations; renamed into place, so a reader never sees half of it."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    temp_model = model_path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{model_path.name}")
    artifact.model.save(temp_model)
    temp_model.replace(model_path)
    write_json_atomically(
        history_path,
        {"history": artifact.history, "train_seconds": artifact.train_seconds, "train_stats": artifact.train_stats},
    )


def twin_reference(store: ResultStore, job: Job) -> dict[str, float] | None:
    """The twin's whole-model accuracy metrics, read from the store in the driver; None if it has none."""
    if job.twin is None:
        return None
    record = store.find(RunConfig(job.twin, "accuracy", job.division).hash)
    if record is None:
        return None
    return {m.name: float(m.value) for m in record.metrics if not m.scope and not isinstance(m.value, str)}


def save_job(store: ResultStore, computed: ComputedJob, log: Log) -> JobResult:
    """Write each run's files and then its record (in the driver); a run that cannot be written failed."""
    result = JobResult(computed.job, failures=list(computed.failures))
    for output in computed.outputs:
        try:
            store.save_with_files(output.record, output.files)
            result.records.append(output.record)
        except Exception as error:  # noqa: BLE001 - one unwritable record must not lose the others
            message = failure_message(computed.job, output.record.track, error)
            log(f"FAILED {message}")
            result.failures.append(message)
    return result


def loaded_splits(task: Task) -> Splits:
    """The task's splits, read and checked once per process (every job and retraining reuses them)."""
    return _splits_of(task.spec.slug, str(data_dir()), str(cache_dir()))


@functools.lru_cache(maxsize=2)
def _splits_of(slug: str, data_folder: str, cache_folder: str) -> Splits:
    # The folders are part of the key so a changed EFFBENCH_DATA / EFFBENCH_CACHE is read afresh;
    # two entries keep memory bounded (a CIFAR split set is ~700 MB as float32).
    return TASKS.get(slug).factory().load()


def train(method: Method, context: TrainContext) -> Artifact:
    """Seed everything, run the method, and note what its training used."""
    # Automatic layer names (dense, dense_1, ...) count the layers this process built before; restarting
    # the count gives a run the same per-layer scopes in any process, e.g. on any Ray worker.
    keras.backend.reset_uids()
    keras.utils.set_random_seed(context.seed)
    reset_peak_memory()
    with distribution_strategy(context.recipe).scope():
        artifact = method.run(context)
    artifact.train_stats = {**training_stats(context), **artifact.train_stats}
    return artifact


def retrain(method: Method, context: TrainContext, recipe: Recipe) -> Artifact:
    """The same method, task and seed under another recipe (for the sensitivity sub-track)."""
    splits = loaded_splits(context.task).for_run(context.seed, recipe.max_train_samples)
    return train(method, replace(context, recipe=recipe, splits=splits))


def read_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by its path relative to it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def build_record(run: RunConfig, method: Method, metrics: list, curves: dict[str, list[float]]) -> Record:
    now = dt.datetime.now(dt.UTC)
    return Record(
        run_id=f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        config_hash=run.hash,
        training_hash=run.training.hash,
        config=run.as_dict(),
        method=method.spec.slug,
        variant=run.training.method.variant,
        suite=method.spec.suite,
        task=run.training.task,
        track=run.track,
        seed=run.training.seed,
        budget=run.training.budget,
        division=run.division,
        hardware=provenance.hardware(),
        versions=provenance.versions(),
        git_commit=provenance.git_commit(),
        timestamp=now.isoformat(timespec="seconds"),
        metrics=list(metrics),
        curves=curves,
    )


def expand_methods(names: Iterable[str], suites: Iterable[str]) -> list[MethodRef]:
    refs = [MethodRef.parse(name) for name in names]
    for suite in suites:
        entries = METHODS.select(suite=suite)
        if not entries:
            raise ValueError(f"suite '{suite}' has no methods (`effbench list methods` shows the suites)")
        refs.extend(MethodRef(entry.spec.slug) for entry in entries)
    for ref in refs:
        ref.create()
    return list(dict.fromkeys(refs))


def execute_plan(
    jobs: Sequence[Job],
    store: ResultStore,
    executor: Executor | None = None,
    log: Log = print,
    force: bool = False,
    progress: bool = False,
) -> list[JobResult]:
    """Compute every job with ``executor`` (local by default), save its records, and return them in plan order.

    A job whose FP32 twin is in the plan is handed to the executor once the twin's job is saved, with the
    twin's accuracy. ``force`` retrains models even when a trained one is cached; ``progress`` shows a
    progress line on stderr (:mod:`effbench.progress`).
    """
    if not jobs:
        return []
    executor = executor or LocalExecutor()
    line = ProgressLine(total_jobs=len(jobs), total_runs=sum(len(job.tracks) for job in jobs), enabled=progress)
    log = line.wrap(log)
    # Workers on this machine find the model cache only if the folder exists before they look, and by
    # its absolute path, since their working folder may differ from the driver's.
    store.root.mkdir(parents=True, exist_ok=True)
    root = store.root.resolve()
    pending, unsaved = list(jobs), {job.training.hash for job in jobs}
    results: dict[str, JobResult] = {}
    in_flight = 0
    try:
        slots = executor.start()
        while pending or in_flight:
            while in_flight < slots and (job := next_ready(pending, unsaved)):
                pending.remove(job)
                executor.submit(JobWork(job, twin_reference(store, job), root, not force), log)
                line.started(len(job.tracks))
                in_flight += 1
            computed = executor.wait()
            in_flight -= 1
            for message in computed.messages:
                log(message)
            result = save_job(store, computed, log)
            unsaved.discard(computed.job.training.hash)
            results[computed.job.training.hash] = result
            line.finished(len(computed.job.tracks), len(result.records))
    finally:
        executor.stop()
        line.close()
    return [results[job.training.hash] for job in jobs]


def next_ready(pending: Sequence[Job], unsaved: set[str]) -> Job | None:
    """The first pending job whose FP32 twin is saved or not in the plan: it may run now."""
    return next((job for job in pending if job.twin is None or job.twin.hash not in unsaved), None)


def report_failures(failures: Sequence[str]) -> int:
    """Print every failed run on stderr; the exit status of a command that ran them (1 if any failed)."""
    if not failures:
        return 0
    print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
    for failure in failures:
        print(f"  - {failure}", file=sys.stderr)
    return 1
