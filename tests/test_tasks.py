"""The built-in tasks: shapes, dtypes, fixed splits, offline data and clear errors for missing data."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from effbench.registry import TASKS
from effbench.tasks.base import DatasetCorruptError, DatasetMissingError, Splits, Task
from effbench.tasks.embedded import mnist1d_args, mnist1d_path
from tests.fixtures_datasets import N_TEST, N_TRAIN, WRITERS, write_cifar10, write_cifar100, write_dataset

REAL_TASKS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
ALL_TASKS = ("digits", "mnist1d", *REAL_TASKS)


def make_task(slug: str) -> Task:
    return TASKS.get(slug).factory()


def check_splits(task: Task, splits: Splits) -> None:
    """Shapes as the spec says, float32 inputs, int32 labels in range, matching lengths."""
    spec = task.spec
    for part in ("train", "val", "test"):
        x, y = getattr(splits, f"x_{part}"), getattr(splits, f"y_{part}")
        assert x.shape[1:] == spec.input_shape
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert len(x) == len(y) > 0
        assert y.min() >= 0 and y.max() < spec.num_classes
        assert np.isfinite(x).all()


def assert_same(a: Splits, b: Splits) -> None:
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.fixture
def mnist1d_cache(tmp_path, monkeypatch) -> Path:
    """MNIST-1D generated into a private cache while the working directory is an empty folder."""
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("EFFBENCH_CACHE", str(cache))
    monkeypatch.chdir(work)
    return cache


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("EFFBENCH_DATA", str(root))
    return root


@pytest.mark.parametrize("slug", ALL_TASKS)
def test_task_is_registered_with_three_recipes(slug):
    task = make_task(slug)
    assert task.spec.slug == slug
    assert task.spec.embedded == (slug not in REAL_TASKS)
    assert set(task.recipes) == {"smoke", "quick", "paper"}
    assert task.recipe("smoke").epochs == 1 and task.recipe("smoke").max_train_samples == 256


def test_digits_loads_with_a_fixed_stratified_split():
    task = make_task("digits")
    splits = task.load()
    check_splits(task, splits)
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 1797
    assert len(splits.x_test) == pytest.approx(0.2 * 1797, abs=10)
    assert len(splits.x_val) == pytest.approx(0.1 * 0.8 * 1797, abs=10)
    assert 0.0 <= splits.x_train.min() and splits.x_train.max() <= 1.0
    assert set(np.unique(splits.y_test)) == set(range(10))  # stratified: every class is tested
    assert_same(splits, make_task("digits").load())


def test_mnist1d_loads_standardized_and_fixed_without_touching_the_working_directory(mnist1d_cache):
    task = make_task("mnist1d")
    splits = task.load()
    check_splits(task, splits)
    assert len(splits.x_train) + len(splits.x_val) == 4000 and len(splits.x_test) == 1000
    assert len(splits.x_val) == pytest.approx(400, abs=10)
    assert abs(float(splits.x_train.mean())) < 1e-3 and abs(float(splits.x_train.std()) - 1) < 1e-3
    assert os.listdir(".") == []  # mnist1d's get_dataset defaults to ./mnist1d_data.pkl
    cached = mnist1d_path(mnist1d_args())
    assert cached.is_file() and cached.parent.parent == mnist1d_cache
    assert os.listdir(cached.parent) == [cached.name]  # no temporary file left behind
    assert_same(splits, make_task("mnist1d").load())  # second load: from the cache, identical


def test_mnist1d_rebuilds_a_truncated_cache_file(mnist1d_cache):
    first = make_task("mnist1d").load()
    cached = mnist1d_path(mnist1d_args())
    cached.write_bytes(cached.read_bytes()[:100])
    assert_same(first, make_task("mnist1d").load())
    assert os.listdir(".") == []


def test_mnist1d_generation_leaves_global_random_state_alone(mnist1d_cache):
    np.random.seed(7)
    expected = np.random.random()
    np.random.seed(7)
    make_task("mnist1d").load()
    assert np.random.random() == expected


def test_for_run_reorders_training_by_seed_but_keeps_test_fixed():
    splits = make_task("digits").load()
    one, two = splits.for_run(0, None), splits.for_run(1, None)
    assert not np.array_equal(one.y_train, two.y_train) or not np.array_equal(one.x_train, two.x_train)
    assert sorted(one.y_train.tolist()) == sorted(splits.y_train.tolist())
    np.testing.assert_array_equal(one.x_test, two.x_test)
    np.testing.assert_array_equal(one.y_test, splits.y_test)
    assert len(splits.for_run(0, 256).x_train) == 256


@pytest.mark.parametrize("slug", REAL_TASKS)
def test_real_task_reads_the_keras_cache_format(slug, data_root):
    write_dataset(slug, data_root)
    task = make_task(slug)
    splits = task.load()
    check_splits(task, splits)
    assert len(splits.x_train) + len(splits.x_val) == N_TRAIN and len(splits.x_test) == N_TEST
    assert 0.0 <= splits.x_train.min() and splits.x_train.max() <= 1.0
    assert_same(splits, make_task(slug).load())


def test_cifar_pixels_come_out_channels_last(data_root):
    write_cifar10(data_root)
    x_test = make_task("cifar10").load().x_test
    raw = data_root / "cifar-10-batches-py" / "test_batch"
    stored = pickle.loads(raw.read_bytes(), encoding="bytes")[b"data"]
    red_plane = stored[:, :1024].reshape(-1, 32, 32) / 255.0
    np.testing.assert_allclose(x_test[..., 0], red_plane, rtol=1e-6)


@pytest.mark.parametrize("writer", [write_cifar10, write_cifar100])
def test_cifar_is_read_from_the_archive_keras_downloads(writer, data_root):
    (archive,) = writer(data_root, archive=True)
    slug = "cifar10" if writer is write_cifar10 else "cifar100"
    splits = make_task(slug).load()
    assert len(splits.x_test) == N_TEST
    assert sorted(os.listdir(data_root)) == [archive.name]  # read in place, nothing extracted


@pytest.mark.parametrize(
    "slug, expected",
    [
        ("mnist", "mnist.npz"),
        ("fashion_mnist", "fashion-mnist"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
    ],
)
def test_missing_dataset_names_the_expected_path(slug, expected, data_root):
    with pytest.raises(DatasetMissingError) as caught:
        make_task(slug).load()
    message = str(caught.value)
    assert f"task '{slug}'" in message
    assert str(data_root / expected) in message
    assert "EFFBENCH_DATA" in message and "never downloads" in message


def test_partly_missing_dataset_names_the_missing_files(data_root):
    write_dataset("fashion_mnist", data_root)
    (data_root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetMissingError, match="t10k-labels-idx1-ubyte.gz"):
        make_task("fashion_mnist").load()


@pytest.mark.parametrize("slug", REAL_TASKS)
def test_truncated_file_is_an_error_naming_it(slug, data_root):
    damaged = WRITERS[slug](data_root)[0]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.raises(DatasetCorruptError) as caught:
        make_task(slug).load()
    assert str(damaged) in str(caught.value)


def test_idx_file_with_a_wrong_magic_number_is_rejected(data_root):
    paths = write_dataset("fashion_mnist", data_root)
    labels = paths[1]
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[2] = 0x0D  # float32 type code: not the format Fashion-MNIST uses
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetCorruptError, match="IDX"):
        make_task("fashion_mnist").load()


def test_truncated_cifar_archive_is_an_error_naming_it(data_root):
    (archive,) = write_cifar10(data_root, archive=True)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetCorruptError, match=str(archive)):
        make_task("cifar10").load()
