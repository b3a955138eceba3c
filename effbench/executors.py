"""Executors that compute a plan's jobs outside the driver process: :class:`RayExecutor`.

Each job becomes one Ray task, which computes it (trains or reloads the model, measures its tracks) and
returns its records with the bytes of the files they keep; the driver writes them (see
:mod:`effbench.runner`). A worker never writes a record, so a lost worker loses none.

**Resources.** A job whose tracks time something (latency, edge, training_cost, sensitivity) asks for a
whole node: as many CPUs as the largest node has, so nothing else runs beside it while it is timed and its
timings match a machine to itself. With nodes of different sizes such jobs therefore run only on the
largest ones. Every other job asks for one CPU. That is a scheduling share, not a limit: TensorFlow in a
worker still uses every core of its node (its thread pools are sized when it first starts in a worker
process, which Ray reuses across tasks). Jobs ask for ``gpus_per_run`` GPUs (default 0). Ray hides the
GPUs from a task that asks for none (it sets ``CUDA_VISIBLE_DEVICES`` to empty), so on GPU nodes pass 1 (or
a fraction, e.g. 0.5, to share a GPU between two jobs); a task that asks for a GPU gets a fresh worker
process (Ray's default for GPU tasks), since TensorFlow does not give GPU memory back.

**Registrations.** Each task carries the registry entries its job uses (method, task, tracks), so methods
registered only in the driver (a script, a notebook, a test) run on workers too; their code must import
there, as the built-in suites do when EffBench is installed on every node.

**Trained models.** A worker reuses and fills the trained-model cache (``DIR/artifacts``) only when the
result folder exists on its machine: every worker of a one-machine cluster does; on a multi-node cluster a
job is retrained on a worker elsewhere unless the result folder is on a shared filesystem mounted at the
same path on every node.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import ray
from ray.exceptions import RayError

from effbench.registry import METHODS, TASKS, TRACKS, Entry, Registry
from effbench.runner import ComputedJob, Job, JobWork, Log, compute_job, failure_message

# Tracks whose metrics include wall times: their jobs get a node to themselves.
TIMED_TRACKS = frozenset({"latency", "edge", "training_cost", "sensitivity"})
REGISTRIES: dict[str, Registry] = {registry.noun: registry for registry in (METHODS, TASKS, TRACKS)}


def job_cpus(job: Job, node_cpus: int) -> int:
    """CPUs a job asks for: a whole node when one of its tracks is timed, else one."""
    return node_cpus if TIMED_TRACKS.intersection(job.tracks) else 1


def registry_entries(job: Job) -> list[tuple[str, Entry]]:
    """The entries a job uses, by registry noun, to send with it: its method's and every upstream's too."""
    return [
        *(("method", METHODS.get(slug)) for slug in job.training.method_slugs()),
        ("task", TASKS.get(job.training.task)),
        *(("track", TRACKS.get(track)) for track in job.tracks),
    ]



def install_entries(entries: Sequence[tuple[str, Entry]]) -> None:
    """Register the driver's entries in this worker, replacing any of the same slug that differs."""
    for noun, entry in entries:
        registry, slug = REGISTRIES[noun], entry.spec.slug
        if slug in registry and registry.get(slug).factory is entry.factory:
            continue
        registry.remove(slug)
        registry.add(entry.spec, entry.factory)


def compute_in_worker(work: JobWork, entries: Sequence[tuple[str, Entry]]) -> ComputedJob:
    """The Ray task: compute a job, keeping its log lines for the driver to show."""
    install_entries(entries)
    messages: list[str] = []
    computed = compute_job(work, messages.append)
    computed.messages = messages
    return computed


class RayExecutor:
    """Computes jobs as Ray tasks on a cluster (``address``), or on a Ray instance started on this machine.

    A Ray session already opened by the caller (``ray.init``) is used as it is and left open.
    """

    # A worker on another node cannot read the driver's result folder: upstream models travel with the job.
    ships_artifacts = True

    def __init__(self, address: str | None = None, gpus_per_run: float = 0.0):
        if gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be 0 or more, not {gpus_per_run}")
        self.address = address
        self.gpus_per_run = gpus_per_run
        self._owns_session = False
        self._node_cpus = 1
        self._in_flight: dict[ray.ObjectRef, Job] = {}
        self._task = ray.remote(num_gpus=gpus_per_run)(compute_in_worker)

    def start(self) -> int:
        """Join the cluster (or start a local instance); as many jobs in flight as it has CPUs."""
        if not ray.is_initialized():
            self._connect()
        try:
            return self._survey()
        except BaseException:
            self.stop()
            raise

    def _survey(self) -> int:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        self._node_cpus = int(max(resources.get("CPU", 0) for resources in nodes))
        most_gpus = max(resources.get("GPU", 0) for resources in nodes)
        if self.gpus_per_run > most_gpus:
            raise ValueError(f"--gpus-per-run {self.gpus_per_run}: no node of the Ray cluster has that many GPUs")
        return max(1, int(sum(resources.get("CPU", 0) for resources in nodes)))

    def _connect(self) -> None:
        # Worker output (TensorFlow's warnings) stays in Ray's logs on each node
        # (/tmp/ray/session_latest/logs): a job's own log lines come back with it.
        options = {"logging_level": logging.WARNING, "log_to_driver": False}
        if self.address:
            ray.init(address=self.address, **options)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **options)
        self._owns_session = True

    def submit(self, work: JobWork, log: Log) -> None:
        task = self._task.options(num_cpus=job_cpus(work.job, self._node_cpus))
        self._in_flight[task.remote(work, registry_entries(work.job))] = work.job

    def wait(self) -> ComputedJob:
        (ready,), _ = ray.wait(list(self._in_flight), num_returns=1)
        job = self._in_flight.pop(ready)
        try:
            return ray.get(ready)
        except RayError as error:
            # The worker died (after Ray's retries) or the task could not run: its runs failed, no record
            # was written, and a re-run computes them again.
            message = failure_message(job, "worker", error)
            return ComputedJob(job, failures=[message], messages=[f"FAILED {message}"])

    def stop(self) -> None:
        self._in_flight.clear()
        if self._owns_session:
            ray.shutdown()
            self._owns_session = False
