"""The Ray executor: the same records as the local one, failures reported, re-runs resume where they stopped.

Every test runs on a Ray instance of this machine with 2 CPUs; the toy methods are registered only in
this process, so they also check that jobs carry their registry entries to the workers.
"""

from __future__ import annotations

import dataclasses

import pytest
import ray

from effbench.cli import main
from effbench.config import TrainingConfig
from effbench.executors import RayExecutor, job_cpus
from effbench.method import MethodRef
from effbench.records import Record, ResultStore
from effbench.runner import Job, execute_plan, make_plan

# Fields that say where and when a record was made, not what was measured.
HOST_FIELDS = {"run_id", "timestamp", "hardware"}


def sweep(out, executor=None):
    """toy-dense and toy-halved (whose twin it is) on digits, smoke budget, 2 seeds, accuracy and complexity."""
    store = ResultStore(out)
    methods = [MethodRef("toy-dense"), MethodRef("toy-halved")]
    jobs = make_plan(methods, ["digits"], [0, 1], ["accuracy", "complexity"], "smoke", store)
    return jobs, execute_plan(jobs, store, executor, log=lambda _: None)


def measured(record: Record) -> dict:
    """The record without its host fields and without the wall times of its epochs."""
    fields = {key: value for key, value in dataclasses.asdict(record).items() if key not in HOST_FIELDS}
    fields["curves"] = {name: values for name, values in record.curves.items() if name != "epoch_seconds"}
    return fields


def by_hash(out) -> dict[str, Record]:
    return {record.config_hash: record for record in ResultStore(out).records()}


def metric(record: Record, name: str) -> float:
    return next(m.value for m in record.metrics if m.name == name and not m.scope)


def test_ray_records_are_the_local_executors_apart_from_host_fields(tmp_path, toy_methods):
    local_jobs, _ = sweep(tmp_path / "local")
    ray_jobs, results = sweep(tmp_path / "ray", executor=RayExecutor())
    assert not ray.is_initialized()  # the executor started its own instance and shut it down
    assert [job.training for job in ray_jobs] == [job.training for job in local_jobs]
    assert not any(result.failures for result in results)
    local, remote = by_hash(tmp_path / "local"), by_hash(tmp_path / "ray")
    assert sorted(local) == sorted(remote) and len(local) == 8
    for config_hash, record in remote.items():
        assert measured(record) == measured(local[config_hash]), record.method
    for records in (local, remote):
        halved = [r for r in records.values() if r.method == "toy-halved" and r.track == "accuracy"]
        for record in halved:
            (twin,) = [r for r in records.values()
                       if r.method == "toy-dense" and r.track == "accuracy" and r.seed == record.seed]  # fmt: skip
            assert metric(record, "fp32_top1") == metric(twin, "top1")


def test_a_failing_job_is_reported_the_others_land_and_a_rerun_does_only_what_is_missing(tmp_path, toy_methods, capsys):
    args = ["run", "--method", "toy-broken", "toy-dense", "--task", "digits", "--track", "accuracy", "complexity",
            "--budget", "smoke", "--seed", "0", "1", "--out", str(tmp_path), "--executor", "ray"]  # fmt: skip
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "2 run(s) failed" in err and "breaks on purpose" in err  # one message per failed training
    assert "training toy-dense on digits (seed 1, smoke)" in out  # the workers' log lines come back
    assert "8/8 runs: 4 done, 0 running, 4 failed" in err  # the progress line, one line per update here
    saved = ResultStore(tmp_path).record_paths()
    assert {r.method for r in ResultStore(tmp_path).records()} == {"toy-dense"} and len(saved) == 4

    # An interrupted sweep: two records of seed 1 never made it; the re-run computes only them.
    lost = [path for path in saved.values() if "-s1-" in path.name]
    for path in lost:
        path.unlink()
    assert main(args[:2] + args[3:] + ["--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "2 runs to do in 1 trainings" in out and "runs:" not in err
    assert "training toy-dense" not in out  # the worker found the model trained by the first sweep
    assert all(path.exists() for path in lost) and len(ResultStore(tmp_path).record_paths()) == 4


def test_timed_tracks_get_a_whole_node_and_others_one_cpu():
    training = TrainingConfig(MethodRef("mlp"), "digits", 0, "smoke")
    assert job_cpus(Job(training, ["accuracy", "complexity", "robustness"]), node_cpus=16) == 1
    for timed in ("latency", "edge", "training_cost", "sensitivity"):
        assert job_cpus(Job(training, ["accuracy", timed]), node_cpus=16) == 16


def test_ray_options_are_checked(capsys):
    args = ["run", "--method", "mlp", "--task", "digits", "--track", "accuracy", "--budget", "smoke"]
    assert main([*args, "--address", "head:6379"]) == 2
    assert "--address and --gpus-per-run need --executor ray" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no node of the Ray cluster has that many GPUs"):
        RayExecutor(gpus_per_run=1).start()
    assert not ray.is_initialized()
