"""Provenance carried by every record: hardware, package versions and the git commit."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from effbench import __version__
from effbench.tf import tf

VERSIONED_PACKAGES = {
    "tensorflow": "tensorflow",
    "tf_keras": "tf-keras",
    "tfmot": "tensorflow-model-optimization",
    "larq": "larq",
    "larq_compute_engine": "larq-compute-engine",
    "litert": "ai-edge-litert",
    "numpy": "numpy",
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    names = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        names.append(details.get("device_name", device.name))
    return names


def cpu_threads() -> int:
    """CPU threads TensorFlow may use: its intra-op setting, or every core this process may run on."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    return configured or len(os.sched_getaffinity(0))


@functools.cache
def hardware() -> dict[str, str | int]:
    gpus = gpu_names()
    return {
        "cpu": cpu_model(),
        "cpu_threads": cpu_threads(),
        "gpu": ", ".join(gpus) if gpus else "none",
        "platform": f"{platform.system()} {platform.machine()}",
    }


@functools.cache
def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "effbench": __version__}
    for key, distribution in VERSIONED_PACKAGES.items():
        try:
            found[key] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[key] = "absent"
    return found


@functools.cache
def git_commit() -> str:
    """HEAD of the EffBench checkout, with ``+dirty`` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit
