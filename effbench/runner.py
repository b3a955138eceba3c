"""Plan and execute runs: methods x tasks x seeds x tracks.

The plan groups runs by training config (one :class:`Job` trains once and measures each of its tracks),
leaves out runs whose config hash already has a record (unless forced), and puts the FP32 twin of a
compressed method before the method, since the method's accuracy record reports the ratio to it. An
executor runs the jobs; the local one runs them in this process, one after another.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from effbench import provenance
from effbench.config import RunConfig, TrainingConfig
from effbench.method import Artifact, Method, MethodRef
from effbench.recipe import Recipe
from effbench.records import Record, ResultStore, write_json_atomically
from effbench.registry import METHODS, TASKS, TRACKS
from effbench.tasks.base import Task
from effbench.tf import keras
from effbench.track import MeasureContext
from effbench.training import TrainContext, reset_peak_memory, training_stats


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
    job: Job
    records: list[Record] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


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
    """Runs jobs and yields their results as they finish (in any order)."""

    def execute(self, jobs: Sequence[Job], run_job: Callable[[Job], JobResult]) -> Iterator[JobResult]: ...


class LocalExecutor:
    def execute(self, jobs: Sequence[Job], run_job: Callable[[Job], JobResult]) -> Iterator[JobResult]:
        for job in jobs:
            yield run_job(job)


class JobRunner:
    """Trains (or reloads) a job's model and measures each of its tracks into records."""

    def __init__(self, store: ResultStore, log: Callable[[str], None] = print, reuse_models: bool = True):
        self.store = store
        self.log = log
        self.reuse_models = reuse_models

    def __call__(self, job: Job) -> JobResult:
        result = JobResult(job)
        try:
            task = TASKS.get(job.training.task).factory()
            method = job.training.method.create()
            context = self._train_context(task, job.training)
            artifact = self._artifact(method, context, job.training)
        except Exception as error:  # noqa: BLE001 - a failed run is reported, the others go on
            result.failures.append(self._failure(job, "training", error))
            return result
        for run in job.runs():
            try:
                result.records.append(self._measure(run, method, task, context, artifact, job))
            except Exception as error:  # noqa: BLE001
                result.failures.append(self._failure(job, run.track, error))
        return result

    def _train_context(self, task: Task, training: TrainingConfig) -> TrainContext:
        recipe = task.recipe(training.budget)
        splits = task.load().for_run(training.seed, recipe.max_train_samples)
        return TrainContext(task, splits, recipe, training.seed, training.budget)

    def _artifact(self, method: Method, context: TrainContext, training: TrainingConfig) -> Artifact:
        cached = self.store.artifact_dir(training.hash)
        model_path, history_path = cached / "model.keras", cached / "history.json"
        if self.reuse_models and model_path.exists() and history_path.exists():
            saved = json.loads(history_path.read_text())
            model = keras.models.load_model(model_path, compile=False)
            return Artifact(model, saved["history"], saved["train_seconds"], train_stats=saved.get("train_stats", {}))
        self.log(f"training {training.method} on {training.task} (seed {training.seed}, {training.budget})")
        artifact = train(method, context)
        cached.mkdir(parents=True, exist_ok=True)
        temp_model = cached / ".tmp-model.keras"
        artifact.model.save(temp_model)
        temp_model.replace(model_path)
        write_json_atomically(
            history_path,
            {"history": artifact.history, "train_seconds": artifact.train_seconds, "train_stats": artifact.train_stats},
        )
        return artifact

    def _measure(
        self, run: RunConfig, method: Method, task: Task, context: TrainContext, artifact: Artifact, job: Job
    ) -> Record:
        track = TRACKS.get(run.track).factory()
        reference = self._twin_accuracy(job) if run.track == "accuracy" else None
        final_files = self.store.files_dir(run.training.task, run.training.method.slug, run.hash)
        staging = final_files.with_name(f".tmp-{run.hash}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        measure_context = MeasureContext(
            model=artifact.model, artifact=artifact, task=task, splits=context.splits, seed=context.seed,
            recipe=context.recipe, reference=reference, files_dir=staging,
            retrain=lambda recipe: retrain(method, context, recipe),
        )  # fmt: skip
        started = time.perf_counter()
        try:
            metrics = track.measure(measure_context)
            self.log(f"  {run.track}: {len(metrics)} metrics in {time.perf_counter() - started:.1f}s")
            record = build_record(run, method, metrics, artifact.history if run.track == "accuracy" else {})
            record.files = describe_files(staging, final_files, self.store.root)
            if record.files:
                shutil.rmtree(final_files, ignore_errors=True)
                staging.rename(final_files)
            self.store.save(record)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return record

    def _twin_accuracy(self, job: Job) -> dict[str, float] | None:
        if job.twin is None:
            return None
        twin_record = self.store.find(RunConfig(job.twin, "accuracy", job.division).hash)
        if twin_record is None:
            raise RuntimeError(f"the FP32 twin {job.twin.method} has no accuracy record; it failed or was not run")
        return {m.name: float(m.value) for m in twin_record.metrics if not m.scope and not isinstance(m.value, str)}

    def _failure(self, job: Job, stage: str, error: Exception) -> str:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        message = f"{job.describe()} failed at {stage}: {detail}"
        self.log(f"FAILED {message}")
        return message


def train(method: Method, context: TrainContext) -> Artifact:
    """Seed everything, run the method, and note what its training used."""
    keras.utils.set_random_seed(context.seed)
    reset_peak_memory()
    artifact = method.run(context)
    artifact.train_stats = {**training_stats(context), **artifact.train_stats}
    return artifact


def retrain(method: Method, context: TrainContext, recipe: Recipe) -> Artifact:
    """The same method, task and seed under another recipe (for the sensitivity sub-track)."""
    splits = context.task.load().for_run(context.seed, recipe.max_train_samples)
    return train(method, replace(context, recipe=recipe, splits=splits))


def describe_files(staging: Path, final: Path, root: Path) -> dict[str, dict]:
    """Name -> path (relative to the result folder, where they will be), size and SHA-256."""
    files = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        name = path.relative_to(staging).as_posix()
        files[name] = {
            "path": (final / name).relative_to(root).as_posix(),
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    return files


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
    log: Callable[[str], None] = print,
    force: bool = False,
) -> list[JobResult]:
    """Run every job; ``force`` retrains models even when a trained one is cached."""
    runner = JobRunner(store, log, reuse_models=not force)
    return list((executor or LocalExecutor()).execute(jobs, runner))
