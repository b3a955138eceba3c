"""Tiny copies of the real datasets, written in exactly the format the Keras cache holds.

Tests point ``EFFBENCH_DATA`` at a temporary folder, call a writer, and load the task through its
real reader. Labels cycle through the first ten classes so every class present has at least two
training examples (the fixed validation carve takes one of each).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

N_TRAIN = 20
N_TEST = 10


def images(count: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def labels(count: int) -> np.ndarray:
    return (np.arange(count) % 10).astype(np.uint8)


def write_mnist(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> list[Path]:
    """``mnist.npz`` with uint8 ``x_*`` (N, 28, 28) and ``y_*`` (N,), as Keras's copy has."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "mnist.npz"
    np.savez(path, x_train=images(n_train, (28, 28), 0), y_train=labels(n_train),
             x_test=images(n_test, (28, 28), 1), y_test=labels(n_test))
    return [path]


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> list[Path]:
    """``fashion-mnist/`` with the four gzipped IDX files (magic 2051 images, 2049 labels)."""
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "train-images-idx3-ubyte.gz": images(n_train, (28, 28), 2),
        "train-labels-idx1-ubyte.gz": labels(n_train),
        "t10k-images-idx3-ubyte.gz": images(n_test, (28, 28), 3),
        "t10k-labels-idx1-ubyte.gz": labels(n_test),
    }
    paths = []
    for name, array in contents.items():
        path = folder / name
        path.write_bytes(gzip.compress(idx_bytes(array)))
        paths.append(path)
    return paths


def cifar_batch(count: int, label_key: bytes, seed: int) -> bytes:
    """A pickled CIFAR batch: a dict with bytes keys, uint8 ``data`` (N, 3072) channel-major."""
    batch = {
        b"batch_label": b"fixture",
        b"data": images(count, (3 * 32 * 32,), seed),
        label_key: [int(label) for label in labels(count)],
        b"filenames": [f"{i}.png".encode() for i in range(count)],
    }
    return pickle.dumps(batch, protocol=2)


def write_cifar(root: Path, folder: str, members: dict[str, tuple[int, bytes]], archive: bool) -> list[Path]:
    """Batch files into ``root/folder``, or into ``root/folder.tar.gz`` as Keras downloads it."""
    blobs = {name: cifar_batch(count, key, seed) for seed, (name, (count, key)) in enumerate(members.items())}
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        path = root / f"{folder}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        return [path]
    (root / folder).mkdir(exist_ok=True)
    paths = []
    for name, blob in blobs.items():
        path = root / folder / name
        path.write_bytes(blob)
        paths.append(path)
    return paths


def write_cifar10(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, archive: bool = False) -> list[Path]:
    """``cifar-10-batches-py/data_batch_1..5`` (n_train spread over them) and ``test_batch``."""
    per_batch = max(1, n_train // 5)
    members = {f"data_batch_{i}": (per_batch, b"labels") for i in range(1, 6)}
    members["test_batch"] = (n_test, b"labels")
    return write_cifar(root, "cifar-10-batches-py", members, archive)


def write_cifar100(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, archive: bool = False) -> list[Path]:
    """``cifar-100-python/train`` and ``test``, with ``fine_labels``."""
    members = {"train": (n_train, b"fine_labels"), "test": (n_test, b"fine_labels")}
    return write_cifar(root, "cifar-100-python", members, archive)


# Task slug -> writer; each returns the files it wrote (the first is the one to damage in tests).
WRITERS: dict[str, Callable[[Path], list[Path]]] = {
    "mnist": write_mnist,
    "fashion_mnist": write_fashion_mnist,
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
}


def write_dataset(slug: str, root: Path) -> list[Path]:
    """Write the tiny copy of the real task ``slug`` under ``root`` (an ``EFFBENCH_DATA`` folder)."""
    return WRITERS[slug](root)
