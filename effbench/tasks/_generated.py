"""The cache of data that EffBench generates itself (private: registers nothing).

A generated task's arrays are a pure function of its generator's parameters (sizes, seed, version): they are
built once, written to ``cache_dir()/<name>/<name>_<fingerprint>.npz`` and read back afterwards. The
fingerprint hashes the parameters, so a changed generator (bump its ``version`` parameter) or size builds a
new file instead of reusing a stale one. Files are written to a temporary name and renamed into place, so a
killed process never leaves half a file; a file that cannot be read is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from effbench.tasks.base import cache_dir

Arrays = dict[str, np.ndarray]


def cache_path(name: str, params: Mapping[str, Any]) -> Path:
    """Where the arrays generated with ``params`` are kept."""
    fingerprint = hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / name / f"{name}_{fingerprint}.npz"


def cached_arrays(name: str, params: Mapping[str, Any], generate: Callable[[], Arrays]) -> Arrays:
    """The arrays ``generate()`` returns for ``params``: from the cache, or generated and cached."""
    path = cache_path(name, params)
    if path.exists():
        try:
            return read_arrays(path)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            pass  # a damaged cache file is ours to rebuild; the write below replaces it atomically
    arrays = generate()
    write_arrays(path, arrays)
    return arrays


# Draws ``count`` examples of one split (0 train, 1 test) from a seed: (inputs, labels).
SplitDrawer = Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]


def drawn_splits(draw: SplitDrawer, seed: int, train: int, test: int) -> Arrays:
    """``x_train``, ``y_train`` (split 0) and ``x_test``, ``y_test`` (split 1), each drawn by ``draw``."""
    x_train, y_train = draw(seed, 0, train)
    x_test, y_test = draw(seed, 1, test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def cached_drawn_splits(name: str, version: int, draw: SplitDrawer, seed: int, train: int, test: int) -> Arrays:
    """:func:`drawn_splits`, generated once per (version, seed, sizes) and then read from the cache."""
    params = {"version": version, "seed": seed, "train": train, "test": test}
    return cached_arrays(name, params, lambda: drawn_splits(draw, seed, train, test))


def read_arrays(path: Path) -> Arrays:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def write_arrays(path: Path, arrays: Arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes: equal fingerprints, equal data."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
