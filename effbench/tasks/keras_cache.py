"""Real image datasets, read from the files ``keras.datasets`` leaves in its cache.

EffBench never downloads at run time, and never calls ``keras.datasets.*.load_data`` (which
downloads a missing file and re-downloads on a hash mismatch). Instead small readers here parse
exactly the files ``tf_keras/src/datasets/`` saves under ``~/.keras/datasets`` (or
``$KERAS_HOME/datasets``, or ``$EFFBENCH_DATA``; see :func:`effbench.tasks.base.data_dir`):

* ``mnist.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``;
* ``fashion-mnist/`` with the four gzipped IDX files;
* ``cifar-10-batches-py/`` with ``data_batch_1..5`` and ``test_batch``;
* ``cifar-100-python/`` with ``train`` and ``test`` (fine labels).

For CIFAR, Keras downloads the archive as ``<folder>.tar.gz`` and extracts it next to itself. When
only the archive is there, it is read in place (never extracted), so EffBench writes nothing into
the data folder. Images are scaled to [0, 1] float32 in HWC layout, with no per-channel
normalization: backbones normalize themselves (batch norm) and every method sees the same inputs.
"""

from __future__ import annotations

import abc
import gzip
import pickle
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks._shared import CIFAR_PAPER, check_labels, smoke_recipe, splits_from_train_test
from effbench.tasks.base import DatasetCorruptError, DatasetMissingError, Splits, Task, data_dir

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"

# Grey-scale digits and clothes. 'quick' caps training at 10,000 images so a few epochs of a small
# ResNet take minutes on two CPU cores; 'paper' is the usual Adam recipe for these sets.
GREY_RECIPES = {
    "smoke": smoke_recipe(),
    "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=3, batch_size=128,
                    max_train_samples=10_000),
    "paper": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=30, batch_size=128),
}

# Natural images: crop-flip in every budget, so smoke runs the same input pipeline as paper.
CIFAR_RECIPES = {
    "smoke": smoke_recipe("crop-flip"),
    "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=5, batch_size=128,
                    augmentation="crop-flip", max_train_samples=10_000),
    "paper": CIFAR_PAPER,
}


class KerasCacheTask(Task):
    """A real dataset: subclasses read raw uint8 images and labels; this class makes the splits."""

    def load_splits(self) -> Splits:
        x_train, y_train, x_test, y_test = self.read_raw(data_dir())
        classes = self.spec.num_classes
        y_train = check_labels(self.spec.slug, "the training labels", y_train, classes)
        y_test = check_labels(self.spec.slug, "the test labels", y_test, classes)
        return splits_from_train_test(x_train, y_train, x_test, y_test, val_fraction=0.1, scale=255.0)

    @abc.abstractmethod
    def read_raw(self, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x_train, y_train, x_test, y_test)``: uint8 images shaped like the spec, and labels."""

    def missing(self, dataset: str, location: Path, expected: str) -> DatasetMissingError:
        """The one error for an absent dataset: what is missing, where it goes, how to point elsewhere."""
        return DatasetMissingError(
            f"task '{self.spec.slug}': no copy of {dataset} at {location} ({expected}; "
            f"or set EFFBENCH_DATA to a folder holding it). EffBench never downloads at run time."
        )


@contextmanager
def reading(slug: str, path: Path) -> Iterator[None]:
    """Turn any failure to parse ``path`` into a DatasetCorruptError that names the file."""
    try:
        yield
    except (DatasetMissingError, DatasetCorruptError):
        raise
    except Exception as error:  # truncated gzip/zip/pickle/tar files fail in many different ways
        raise DatasetCorruptError(
            f"task '{slug}': cannot read {path} ({type(error).__name__}: {error}); the file is "
            f"truncated or not the expected format: delete it and put a complete copy there"
        ) from error


def require_shape(slug: str, source: Path | str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    """Check per-example shape, naming the file when it is not what the format promises."""
    if array.shape[1:] != shape:
        raise DatasetCorruptError(
            f"task '{slug}': {source} holds examples shaped {array.shape[1:]}, expected {shape}"
        )


# --- MNIST: one .npz ------------------------------------------------------------------------------


@register_task(
    TaskSpec(
        slug="mnist",
        summary="MNIST handwritten digits, 28x28 grey (60,000 train / 10,000 test; from the Keras cache)",
        input_shape=(28, 28, 1),
        num_classes=10,
        default_backbone="resnet-cifar",
        modality="image",
        embedded=False,
        target_accuracy=0.98,
    )
)
class Mnist(KerasCacheTask):
    recipes = dict(GREY_RECIPES)

    def read_raw(self, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        path = root / "mnist.npz"
        if not path.is_file():
            raise self.missing(
                "MNIST", path,
                f"expected the file keras.datasets.mnist.load_data() downloads from {KERAS_ORIGIN}mnist.npz, "
                f"saved under that name in {root}",
            )
        with reading(self.spec.slug, path), np.load(path, allow_pickle=False) as archive:
            arrays = [archive[key] for key in ("x_train", "y_train", "x_test", "y_test")]
        for images in (arrays[0], arrays[2]):
            require_shape(self.spec.slug, path, images, (28, 28))
        x_train, y_train, x_test, y_test = arrays
        return x_train[..., np.newaxis], y_train, x_test[..., np.newaxis], y_test


# --- Fashion-MNIST: four gzipped IDX files ---------------------------------------------------------

FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IDX_UBYTE = 0x08  # the IDX type code for unsigned bytes, the only one (Fashion-)MNIST uses


@register_task(
    TaskSpec(
        slug="fashion_mnist",
        summary="Fashion-MNIST clothes, 28x28 grey (60,000 train / 10,000 test; from the Keras cache)",
        input_shape=(28, 28, 1),
        num_classes=10,
        default_backbone="resnet-cifar",
        modality="image",
        embedded=False,
        target_accuracy=0.88,
    )
)
class FashionMnist(KerasCacheTask):
    recipes = dict(GREY_RECIPES)

    def read_raw(self, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        folder = root / "fashion-mnist"
        absent = [name for name in FASHION_FILES if not (folder / name).is_file()]
        if absent:
            raise self.missing(
                "Fashion-MNIST", folder,
                f"missing {', '.join(absent)}: expected the four files "
                f"keras.datasets.fashion_mnist.load_data() downloads from {KERAS_ORIGIN}, "
                f"in that folder under their own names",
            )
        slug = self.spec.slug
        x_train, y_train, x_test, y_test = (read_idx(slug, folder / name) for name in FASHION_FILES)
        for images, labels, name in ((x_train, y_train, FASHION_FILES[0]), (x_test, y_test, FASHION_FILES[2])):
            require_shape(slug, folder / name, images, (28, 28))
            if len(images) != len(labels):
                raise DatasetCorruptError(
                    f"task '{slug}': {folder / name} has {len(images)} images but its label file "
                    f"has {len(labels)} labels"
                )
        return x_train[..., np.newaxis], y_train, x_test[..., np.newaxis], y_test


def read_idx(slug: str, path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (LeCun's MNIST format) of unsigned bytes, checking its header.

    Keras skips the header by offset; checking the magic number and sizes instead turns a wrong
    or truncated file into an error naming it rather than silently misaligned images.
    """
    with reading(slug, path), gzip.open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or raw[3] == 0:
        raise DatasetCorruptError(f"task '{slug}': {path} does not start with an IDX unsigned-byte header")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetCorruptError(f"task '{slug}': {path} ends inside its IDX header")
    sizes = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    payload = len(raw) - header
    if payload != int(np.prod(sizes)):
        raise DatasetCorruptError(
            f"task '{slug}': {path} declares shape {sizes} ({int(np.prod(sizes))} bytes) but holds "
            f"{payload} bytes of data; the file is truncated or damaged"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(sizes)


# --- CIFAR: pickled batches, in the extracted folder or its .tar.gz --------------------------------

CIFAR_SHAPE = (32, 32, 3)


class CifarTask(KerasCacheTask):
    """CIFAR-10/100: subclasses name the folder, the batch files and the label key."""

    dataset: str
    folder: str
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    label_key: bytes
    origin: str
    expected: str  # the batch files, in words, for the missing-data message

    def read_raw(self, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        blobs = self.read_members(root, self.train_members + self.test_members)
        batches = [self.parse_batch(source, blob) for source, blob in blobs]
        train, test = batches[: len(self.train_members)], batches[len(self.train_members):]
        x_train = np.concatenate([x for x, _ in train])
        y_train = np.concatenate([y for _, y in train])
        x_test = np.concatenate([x for x, _ in test])
        y_test = np.concatenate([y for _, y in test])
        return x_train, y_train, x_test, y_test

    def read_members(self, root: Path, members: tuple[str, ...]) -> list[tuple[str, bytes]]:
        """``(source name, bytes)`` of each batch file, from the folder if present, else the archive."""
        folder = root / self.folder
        archive = root / f"{self.folder}.tar.gz"
        if folder.is_dir():
            absent = [name for name in members if not (folder / name).is_file()]
            if absent:
                raise self.missing_cifar(root, f"missing {', '.join(absent)}; ")
            return [(str(folder / name), self.read_file(folder / name)) for name in members]
        if archive.is_file():
            return self.read_archive(archive, members)
        raise self.missing_cifar(root, "")

    def read_file(self, path: Path) -> bytes:
        with reading(self.spec.slug, path):
            return path.read_bytes()

    def read_archive(self, archive: Path, members: tuple[str, ...]) -> list[tuple[str, bytes]]:
        """Read the batch files straight out of the .tar.gz Keras downloads, without extracting it."""
        blobs = []
        with reading(self.spec.slug, archive), tarfile.open(archive, "r:gz") as tar:
            for name in members:
                inner = f"{self.folder}/{name}"
                try:
                    handle = tar.extractfile(inner)
                except KeyError:
                    handle = None
                if handle is None:
                    raise DatasetCorruptError(f"task '{self.spec.slug}': {archive} has no file {inner}")
                blobs.append((f"{archive}:{inner}", handle.read()))
        return blobs

    def parse_batch(self, source: str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
        """One pickled CIFAR batch (a dict with bytes keys, as Python 2 wrote it) -> HWC images, labels."""
        with reading(self.spec.slug, Path(source)):
            batch = pickle.loads(blob, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[self.label_key])
        if data.ndim != 2 or data.shape[1] != int(np.prod(CIFAR_SHAPE)) or len(data) != len(labels):
            raise DatasetCorruptError(
                f"task '{self.spec.slug}': {source} holds data shaped {data.shape} with {len(labels)} "
                f"labels, expected (N, 3072) with N labels"
            )
        # Stored channel-major (N, 3, 32, 32); EffBench is channels-last like Keras's default.
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    def missing_cifar(self, root: Path, detail: str) -> DatasetMissingError:
        return self.missing(
            self.dataset, root / self.folder,
            f"{detail}expected {self.expected} there: extract the Python version, {self.origin}, "
            f"into {root}, or save that archive as {root / (self.folder + '.tar.gz')} as "
            f"keras.datasets.{self.spec.slug}.load_data() does",
        )


@register_task(
    TaskSpec(
        slug="cifar10",
        summary="CIFAR-10 natural images, 32x32 RGB (50,000 train / 10,000 test; from the Keras cache)",
        input_shape=CIFAR_SHAPE,
        num_classes=10,
        default_backbone="resnet-cifar",
        modality="image",
        embedded=False,
        target_accuracy=0.8,
    )
)
class Cifar10(CifarTask):
    recipes = dict(CIFAR_RECIPES)
    dataset = "CIFAR-10"
    folder = "cifar-10-batches-py"
    train_members = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_members = ("test_batch",)
    label_key = b"labels"
    origin = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    expected = "data_batch_1..5 and test_batch"


@register_task(
    TaskSpec(
        slug="cifar100",
        summary="CIFAR-100 natural images, 100 fine classes, 32x32 RGB (50,000 / 10,000; Keras cache)",
        input_shape=CIFAR_SHAPE,
        num_classes=100,
        default_backbone="resnet-cifar",
        modality="image",
        embedded=False,
        target_accuracy=0.5,
    )
)
class Cifar100(CifarTask):
    recipes = dict(CIFAR_RECIPES)
    dataset = "CIFAR-100"
    folder = "cifar-100-python"
    train_members = ("train",)
    test_members = ("test",)
    label_key = b"fine_labels"
    origin = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    expected = "train and test"
