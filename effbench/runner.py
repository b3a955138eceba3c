"""Plan and execute runs: methods x tasks x seeds x tracks x deployables.

The plan is a graph of trainings (:class:`Planner`): one :class:`Job` trains once and measures each of its
tracks on each of its deployables; runs whose config hash already has a record are left out (unless
forced); and a job's upstreams (the trainings its method starts from, and its FP32 twin, whose accuracy
the method's accuracy record is compared with) come before it, each training once however many jobs
name it.

Executing a job has two steps. *Computing* it (:func:`compute_job`, in whatever process or machine the
executor picks) trains or reloads the model and measures its tracks into records, holding the files each
run keeps in memory; it writes nothing but the trained-model cache. *Saving* it (:func:`save_job`, always
in the driver, the process that made the plan) writes each run's files and then its record atomically.
So a lost worker loses no record, and a re-run resumes exactly where the last one stopped. The driver
dispatches a job only once its upstreams' jobs are saved (their trained models cached), and hands it the
twin's accuracy metrics and, for a worker on another machine, the upstream models' files, so a worker
never reads the records. :class:`LocalExecutor` computes jobs in this process,
one after another; :mod:`effbench.executors` has the Ray one.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from effbench import provenance
from effbench.bits import is_tfmot_quantize_wrapper
from effbench.config import RunConfig, TrainingConfig
from effbench.method import MAIN, TWIN, Artifact, Deployable, Method, MethodRef
from effbench.modelfile import load_keras_model
from effbench.progress import ProgressLine
from effbench.protocol import division_of
from effbench.recipe import Recipe, distribution_strategy
from effbench.records import TEMP_PREFIX, Record, ResultStore, describe_files, write_json_atomically
from effbench.registry import METHODS, TASKS, TRACKS, method_about
from effbench.tasks.base import Splits, Task, cache_dir, data_dir
from effbench.tf import keras
from effbench.track import MeasureContext
from effbench.training import TrainContext, reset_peak_memory, training_stats

Log = Callable[[str], None]


@dataclass
class Job:
    """One training and the tracks still to measure on each of its deployables.

    ``upstream`` holds the trainings it starts from or compares with, by role; the driver dispatches the
    job once those in the plan are saved. A job with no tracks only trains: a later job needs its model.
    """

    training: TrainingConfig
    tracks: list[str]
    division: str = "closed"
    upstream: dict[str, TrainingConfig] = field(default_factory=dict)
    deployables: tuple[str, ...] = (MAIN,)
    # The division of the twin's accuracy record (a run of its own, in its own division); None: ``division``.
    twin_division: str | None = None

    @property
    def twin(self) -> TrainingConfig | None:
        return self.upstream.get(TWIN)

    def runs(self) -> list[RunConfig]:
        return [
            RunConfig(self.training, track, self.division, deployable)
            for track in self.tracks
            for deployable in self.deployables
        ]

    def describe(self) -> str:
        t = self.training
        what = ", ".join(self.tracks) or "training only"
        return f"{t.method} on {t.task} (seed {t.seed}, {t.budget}): {what}"


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
    # Training hash -> the cached artifact's files, for a worker that cannot reach ``root`` (a Ray node).
    upstream_files: dict[str, dict[str, bytes]] = field(default_factory=dict)


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
    # The trained artifact's files, from a worker that could not write the driver's cache itself.
    artifact_files: dict[str, bytes] = field(default_factory=dict)


def twin_of(method: MethodRef, task: str) -> MethodRef | None:
    return method.create().upstream(TASKS.get(task).spec).get(TWIN)


def make_plan(
    methods: Sequence[MethodRef],
    tasks: Sequence[str],
    seeds: Sequence[int],
    tracks: Sequence[str],
    budget: str,
    store: ResultStore,
    division: str | None = None,
    force: bool = False,
) -> list[Job]:
    """The jobs that measure every missing run, upstream trainings first (see :class:`Planner`).

    ``division`` None gives each run the division its method qualifies for (:func:`effbench.protocol.division_of`);
    a division puts every run in it as given: a caller that takes it from a user judges it first
    (``effbench run --division closed``, ``effbench submit``), one that repeats a record does not.
    """
    for track in tracks:
        TRACKS.get(track)
    planner = Planner(store, division, force)
    for task in tasks:
        TASKS.get(task)
        for method in methods:
            for seed in seeds:
                planner.add(TrainingConfig(method, task, seed, budget), tracks)
    return planner.jobs()


class Planner:
    """Resolves trainings into a graph of jobs: each training once, its upstreams before it.

    A training gets the runs of ``tracks`` that have no record (all of them with ``force``). Its upstreams
    join the plan as they are needed: a consumed upstream (``Method.requires``) for its trained model, when
    the dependent trains and that model is not cached (a job with no tracks); the FP32 twin for its accuracy
    record, when the dependent measures accuracy and the twin has none.
    """

    def __init__(self, store: ResultStore, division: str | None = None, force: bool = False):
        self.store, self.division, self.force = store, division, force
        self._jobs: dict[str, Job] = {}
        self._trains: set[str] = set()

    def add(self, training: TrainingConfig, tracks: Sequence[str], train: bool = False) -> None:
        """Plan ``tracks`` of ``training``; ``train``: its model must exist afterwards (a dependent loads it)."""
        key = training.hash
        job = self._jobs.get(key)
        if job is None:
            upstream = training.upstreams()
            job = Job(training, [], self.division_of(training), upstream, training.method.create().deployable_names())
            if TWIN in upstream:
                job.twin_division = self.division_of(upstream[TWIN])
        missing = [track for track in tracks if track not in job.tracks and self._missing(job, track)]
        # The job trains (so its consumed upstreams' models must exist) unless its own model is cached.
        trains = self.force or not self.is_cached(training)
        train = train and trains
        if not missing and not train:
            return
        for role, upstream in job.upstream.items():
            if role == TWIN:
                self.add(upstream, ["accuracy"] if "accuracy" in missing else [])
            else:
                self.add(upstream, [], train=trains)
        job.tracks.extend(missing)
        self._jobs.setdefault(key, job)
        if train:
            self._trains.add(key)

    def division_of(self, training: TrainingConfig) -> str:
        """The plan's division, or where it has none the one the training's method qualifies for."""
        return self.division or division_of(training.method)

    def _missing(self, job: Job, track: str) -> bool:
        return self.force or any(
            not self.store.has(RunConfig(job.training, track, job.division, name).hash) for name in job.deployables
        )

    def is_cached(self, training: TrainingConfig) -> bool:
        return artifact_complete(self.store.artifact_dir(training.hash))

    def jobs(self) -> list[Job]:
        return [job for key, job in self._jobs.items() if job.tracks or key in self._trains]


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

    On a worker of another machine the folder is absent (unless it is on a shared filesystem): the
    upstream models come with the work, and the trained model goes back with the result for the driver
    to cache.
    """
    store = ResultStore(work.root)
    runner = JobRunner(store, log, work.reuse_models, cache_models=store.root.is_dir())
    return runner.compute(work.job, work.reference, work.upstream_files)


class JobRunner:
    """Trains (or reloads) a job's model and measures each of its tracks on each deployable into records.

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

    def compute(
        self, job: Job, reference: dict[str, float] | None, upstream_files: dict[str, dict[str, bytes]] | None = None,
    ) -> ComputedJob:  # fmt: skip
        """Train or reload, then measure every run; ``reference`` is the twin's accuracy (see JobWork)."""
        computed = ComputedJob(job)
        try:
            task = TASKS.get(job.training.task).factory()
            method = job.training.method.create()
            upstream = UpstreamArtifacts(job, self.store, upstream_files or {})
            context = self._train_context(task, job.training, upstream)
            artifact = self._artifact(method, context, job, computed)
            deployables = artifact.all_deployables()
            if tuple(deployables) != job.deployables:
                raise ValueError(
                    f"the method returned deployables {list(deployables)}, but its deployable_names() are "
                    f"{list(job.deployables)}"
                )
        except Exception as error:  # noqa: BLE001 - a failed run is reported, the others go on
            computed.failures.append(self._failure(job, "training", error))
            return computed
        for run in job.runs():
            try:
                twin = self._twin_accuracy(job, reference) if run.track == "accuracy" else None
                deployable = deployables[run.deployable]
                computed.outputs.append(self._measure(run, method, task, context, artifact, deployable, twin))
            except Exception as error:  # noqa: BLE001
                computed.failures.append(self._failure(job, describe_run(run), error))
        return computed

    def _train_context(self, task: Task, training: TrainingConfig, upstream: UpstreamArtifacts) -> TrainContext:
        recipe = training.recipe()
        splits = loaded_splits(task).for_run(training.seed, recipe.max_train_samples)
        modifiers = training.method.create_modifiers()
        return TrainContext(task, splits, recipe, training.seed, training.budget, upstream, modifiers)

    def _artifact(self, method: Method, context: TrainContext, job: Job, computed: ComputedJob) -> Artifact:
        training = job.training
        cached = self.store.artifact_dir(training.hash)
        # A worker that cannot write the cache (a sandbox, a Ray node) still reuses a model cached before.
        if self.reuse_models and artifact_complete(cached):
            try:
                return load_artifact(cached)
            except CorruptArtifact as error:
                # Named and kept for a look, out of the cache's way: the job trains the model again.
                aside = f"set aside as {set_aside(cached)}" if self.cache_models else "left in place (read-only here)"
                self.log(f"{error}; {aside}, and trained again")
        self.log(f"training {training.method} on {training.task} (seed {training.seed}, {training.budget})")
        artifact = train(method, context)
        artifact.upstream_seconds = context.upstream.lineage()
        if self.cache_models:
            save_artifact(artifact, cached)
        else:
            with tempfile.TemporaryDirectory(prefix="effbench-artifact-") as scratch:
                save_artifact(artifact, Path(scratch) / "artifact")
                computed.artifact_files = read_files(Path(scratch) / "artifact")
        return artifact

    def _measure(
        self, run: RunConfig, method: Method, task: Task, context: TrainContext, artifact: Artifact,
        deployable: Deployable, reference: dict[str, float] | None,
    ) -> RunOutput:  # fmt: skip
        track = TRACKS.get(run.track).factory()
        started = time.perf_counter()
        # Tracks write the files they keep into a scratch folder; their bytes travel with the record.
        with tempfile.TemporaryDirectory(prefix="effbench-files-") as scratch:
            measure_context = MeasureContext(
                model=deployable.model, artifact=artifact, task=task, splits=context.splits, seed=context.seed,
                recipe=context.recipe, reference=reference, files_dir=Path(scratch),
                retrain=lambda recipe: retrain(method, context, recipe),
                deployable=run.deployable, tflite=deployable.tflite, deployment=method.deployment,
                twin_model=functools.partial(cached_twin_model, context.upstream), budget=context.budget,
            )  # fmt: skip
            metrics = track.measure(measure_context)
            files = read_files(Path(scratch))
        self.log(f"  {describe_run(run)}: {len(metrics)} metrics in {time.perf_counter() - started:.1f}s")
        record = build_record(run, method, metrics, artifact.history if run.track == "accuracy" else {})
        record.facts = deployable.facts
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


def describe_run(run: RunConfig) -> str:
    return f"{run.track} [{run.deployable}]" if run.deployable != MAIN else run.track


def failure_message(job: Job, stage: str, error: BaseException) -> str:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    return f"{job.describe()} failed at {stage}: {detail}"


class UpstreamArtifacts(Mapping):
    """A job's upstream artifacts by role, each loaded when first looked up (a fresh copy per job).

    They come from the result folder's cache, or from the files the driver sent with the job.
    """

    def __init__(self, job: Job, store: ResultStore, files: Mapping[str, Mapping[str, bytes]]):
        self._job, self._store, self._files = job, store, files
        self._loaded: dict[str, Artifact] = {}

    def __getitem__(self, role: str) -> Artifact:
        if role not in self._loaded:
            self._loaded[role] = self._load(role)
        return self._loaded[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._job.upstream)

    def __len__(self) -> int:
        return len(self._job.upstream)

    def _load(self, role: str) -> Artifact:
        training = self._job.upstream[role]
        cached = self._store.artifact_dir(training.hash)
        if artifact_complete(cached):
            try:
                return load_artifact(cached)
            except CorruptArtifact as error:
                raise RuntimeError(
                    f"upstream '{role}': {error}; it was set aside as {set_aside(cached)}: run again to retrain it"
                ) from None
        if training.hash in self._files:
            with tempfile.TemporaryDirectory(prefix="effbench-upstream-") as scratch:
                write_files(Path(scratch), self._files[training.hash])
                return load_artifact(Path(scratch))
        raise missing_upstream(role, training)

    def lineage(self) -> dict[str, float]:
        """Training hash -> train seconds of every consumed upstream training, transitively, each once."""
        seconds: dict[str, float] = {}
        for role, training in self._job.training.consumed_upstreams().items():
            summary = self._summary(role, training)
            seconds.update(summary.get("upstream_seconds", {}))
            seconds[training.hash] = summary["train_seconds"]
        return seconds

    def _summary(self, role: str, training: TrainingConfig) -> dict:
        cached = self._store.artifact_dir(training.hash) / ARTIFACT_SUMMARY
        if cached.is_file():
            return json.loads(cached.read_text())
        if training.hash not in self._files:
            raise missing_upstream(role, training)
        return json.loads(self._files[training.hash][ARTIFACT_SUMMARY])


class MissingUpstream(RuntimeError):
    """An upstream training whose model is neither cached nor sent with the job."""


def missing_upstream(role: str, training: TrainingConfig) -> MissingUpstream:
    return MissingUpstream(
        f"upstream '{role}' ({training.method} on {training.task}, seed {training.seed}) has no trained model: "
        "its training failed or was not run"
    )


# The file an artifact folder is complete with: written last, it lists every other file.
ARTIFACT_SUMMARY = "history.json"


def artifact_complete(folder: Path) -> bool:
    return (folder / ARTIFACT_SUMMARY).is_file() and (folder / "model.keras").is_file()


class CorruptArtifact(RuntimeError):
    """A cached artifact folder that is complete but cannot be loaded; the message names the folder."""


def save_artifact(artifact: Artifact, folder: Path) -> None:
    """Keep a trained artifact, every deployable with it; each file renamed into place, the summary last.

    A reader never sees half a file, and a folder without its summary is incomplete (trained again). An
    older summary is removed first, so a retraining killed half-way never leaves new models under an old
    summary that calls the folder complete.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ARTIFACT_SUMMARY).unlink(missing_ok=True)
    deployables = {}
    for index, (name, deployable) in enumerate(artifact.all_deployables().items()):
        stem = "model" if name == MAIN else f"deployable-{index}"
        entry = {"keras": f"{stem}{model_file_suffix(deployable.model)}", "tflite": None, "facts": deployable.facts}
        _rename_into_place(folder / entry["keras"], deployable.model.save)
        if deployable.tflite is not None:
            entry["tflite"] = f"{stem}.tflite"
            _rename_into_place(folder / entry["tflite"], lambda path, data=deployable.tflite: path.write_bytes(data))
        deployables[name] = entry
    write_json_atomically(folder / ARTIFACT_SUMMARY, {
        "history": artifact.history, "train_seconds": artifact.train_seconds, "train_stats": artifact.train_stats,
        "upstream_seconds": artifact.upstream_seconds, "deployables": deployables,
    })  # fmt: skip


def model_file_suffix(model: keras.Model) -> str:
    """``.keras``, or ``.h5`` for a TFMOT quantization-aware model: TFMOT 0.8.1's ``QuantizeLayer`` and
    ``QuantizeWrapperV2`` do not reload from ``.keras`` on tf_keras (they are built twice), but do from HDF5."""
    return ".h5" if any(is_tfmot_quantize_wrapper(layer) for layer in model.submodules) else ".keras"


def _rename_into_place(path: Path, write: Callable[[Path], object]) -> None:
    temp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        write(temp)
        temp.replace(path)
    except BaseException:
        # A failed save removes its temporary at once; ResultStore.clean removes those of killed processes.
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        temp.unlink(missing_ok=True)
        raise


def load_artifact(folder: Path) -> Artifact:
    """The artifact :func:`save_artifact` kept in ``folder``, every deployable included.

    Raises :class:`CorruptArtifact`, naming the folder, when a file of it cannot be read or loaded.
    """
    try:
        return _load_artifact(folder)
    except Exception as error:  # noqa: BLE001 - h5py's OSError, Keras's ValueError, JSON, a missing key: all corrupt
        raise CorruptArtifact(
            f"the cached model in {folder} cannot be loaded ({type(error).__name__}: {error})"
        ) from error


def set_aside(folder: Path) -> Path:
    """Move a corrupt artifact folder out of the cache, beside it as ``.corrupt-<training hash>-<n>``."""
    aside = folder.with_name(f".corrupt-{folder.name}-{uuid.uuid4().hex[:8]}")
    folder.rename(aside)
    return aside


def _load_artifact(folder: Path) -> Artifact:
    saved = json.loads((folder / ARTIFACT_SUMMARY).read_text())
    # Folders written before deployables existed hold the main model only.
    entries = saved.get("deployables", {MAIN: {"keras": "model.keras", "tflite": None}})
    loaded = {
        name: Deployable(
            load_keras_model(folder / entry["keras"]),
            (folder / entry["tflite"]).read_bytes() if entry.get("tflite") else None,
            entry.get("facts", {}),
        )
        for name, entry in entries.items()
    }
    main = loaded.pop(MAIN)
    return Artifact(
        main.model, saved["history"], saved["train_seconds"], deployables=loaded, tflite=main.tflite, facts=main.facts,
        train_stats=saved.get("train_stats", {}), upstream_seconds=saved.get("upstream_seconds", {}),
    )  # fmt: skip


def cached_twin_model(upstream: Mapping[str, Artifact]) -> keras.Model | None:
    """The FP32 twin's trained model from the job's upstreams, or None when it has none or it is not cached."""
    if TWIN not in upstream:
        return None
    try:
        return upstream[TWIN].model
    except MissingUpstream:
        return None


def twin_reference(store: ResultStore, job: Job) -> dict[str, float] | None:
    """The twin's whole-model accuracy metrics, read from the store in the driver; None if it has none."""
    if job.twin is None:
        return None
    record = store.find(RunConfig(job.twin, "accuracy", job.twin_division or job.division).hash)
    if record is None:
        return None
    return {m.name: float(m.value) for m in record.metrics if not m.scope and not isinstance(m.value, str)}


def save_job(store: ResultStore, computed: ComputedJob, log: Log) -> JobResult:
    """Write each run's files and then its record (in the driver); a run that cannot be written failed."""
    result = JobResult(computed.job, failures=list(computed.failures))
    if computed.artifact_files:
        cache_artifact_files(store, computed.job.training.hash, computed.artifact_files)
    for output in computed.outputs:
        try:
            store.save_with_files(output.record, output.files)
            result.records.append(output.record)
        except Exception as error:  # noqa: BLE001 - one unwritable record must not lose the others
            message = failure_message(computed.job, output.record.track, error)
            log(f"FAILED {message}")
            result.failures.append(message)
    return result


def cache_artifact_files(store: ResultStore, training_hash: str, files: Mapping[str, bytes]) -> None:
    """Cache an artifact's files (from a worker that could not) unless a complete copy is cached already.

    Under the store's lock on the training, into a staging folder of a unique name, renamed into place
    after any incomplete folder is moved aside: a reader sees no folder or a whole one.
    """
    cached = store.artifact_dir(training_hash)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with store.lock(training_hash):
        if artifact_complete(cached):
            return
        with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{training_hash}-", dir=cached.parent) as scratch:
            staging = Path(scratch) / "artifact"
            write_files(staging, files)
            if cached.exists():
                cached.rename(Path(scratch) / "incomplete")
            staging.rename(cached)


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


def write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """The inverse of :func:`read_files`."""
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)


def build_record(run: RunConfig, method: Method, metrics: list, curves: dict[str, list[float]]) -> Record:
    now = dt.datetime.now(dt.UTC)
    return Record(
        run_id=f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        config_hash=run.hash,
        training_hash=run.training.hash,
        config=run.as_dict(),
        method=method.spec.slug,
        variant=run.training.method.variant,
        deployable=run.deployable,
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
        about=method_about(method.spec),
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
    line = ProgressLine(total_jobs=len(jobs), total_runs=sum(len(job.runs()) for job in jobs), enabled=progress)
    log = line.wrap(log)
    # Workers on this machine find the model cache only if the folder exists before they look, and by
    # its absolute path, since their working folder may differ from the driver's.
    store.root.mkdir(parents=True, exist_ok=True)
    store.clean()  # temporaries that killed runs left behind
    root = store.root.resolve()
    pending, unsaved = list(jobs), {job.training.hash for job in jobs}
    results: dict[str, JobResult] = {}
    in_flight = 0
    try:
        slots = executor.start()
        while pending or in_flight:
            while in_flight < slots and (job := next_ready(pending, unsaved)):
                pending.remove(job)
                files = upstream_files(store, job) if getattr(executor, "ships_artifacts", False) else {}
                executor.submit(JobWork(job, twin_reference(store, job), root, not force, files), log)
                line.started(len(job.runs()))
                in_flight += 1
            computed = executor.wait()
            in_flight -= 1
            for message in computed.messages:
                log(message)
            result = save_job(store, computed, log)
            unsaved.discard(computed.job.training.hash)
            results[computed.job.training.hash] = result
            line.finished(len(computed.job.runs()), len(result.records))
    finally:
        executor.stop()
        line.close()
    return [results[job.training.hash] for job in jobs]


def next_ready(pending: Sequence[Job], unsaved: set[str]) -> Job | None:
    """The first pending job whose upstreams are all saved or not in the plan: it may run now."""
    return next((job for job in pending if not {u.hash for u in job.upstream.values()} & unsaved), None)


def upstream_files(store: ResultStore, job: Job) -> dict[str, dict[str, bytes]]:
    """The cached artifacts of a job's consumed upstreams, for a worker that cannot read the result folder."""
    consumed = job.training.consumed_upstreams().values()
    folders = {training.hash: store.artifact_dir(training.hash) for training in consumed}
    return {key: read_files(folder) for key, folder in folders.items() if artifact_complete(folder)}


def report_failures(failures: Sequence[str]) -> int:
    """Print every failed run on stderr; the exit status of a command that ran them (1 if any failed)."""
    if not failures:
        return 0
    print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
    for failure in failures:
        print(f"  - {failure}", file=sys.stderr)
    return 1
