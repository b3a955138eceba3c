"""Tasks whose data ships with EffBench's dependencies, so they run offline with nothing to fetch.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images).
* ``mnist1d``: MNIST-1D (Greydanus & Kobak, 2020), generated locally by the ``mnist1d`` package
  with its default arguments and cached under :func:`effbench.tasks.base.cache_dir`.
* ``mnist1d-seq``: the same signals as sequences of 40 steps of one value (a view of ``mnist1d``).

None of them declares ``finetune_recipes``: a method that starts from trained weights (the binarization
operators start from the trained FP32 twin) trains with the task's recipe for the budget. That is what
BiBench does: it fine-tunes each binarized CIFAR-10 network from the float checkpoint with a full schedule
(``configs/acc_cifar10/resnet20_*``: Adam 1e-3 or SGD 0.1, cosine, 400 epochs, from
``init_cfg=Pretrained``; the float networks train 200), not a shorter one, and the ``quick`` recipes are
already its Adam 1e-3 cosine schedule. Their epochs are the least that converge the float backbones on two
CPU cores; a binarized network needs at least as many (trained from scratch, bnn was still improving at 15
epochs on digits), so a shorter fine-tune would again measure convergence speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks._shared import CIFAR_PAPER, smoke_recipe, splits_from_train_test
from effbench.tasks.base import DatasetCorruptError, Splits, Task, cache_dir, carve_validation


@register_task(
    TaskSpec(
        slug="digits",
        summary="scikit-learn 8x8 handwritten digits (1,797 images, bundled; runs offline in seconds)",
        input_shape=(8, 8, 1),
        num_classes=10,
        default_backbone="resnet-cifar",
        modality="image",
        embedded=True,
        target_accuracy=0.95,
    )
)
class Digits(Task):
    """Fixed stratified split: 20% test, then 10% of the rest validation; pixels 0..16 -> [0, 1]."""

    recipes = {
        "smoke": smoke_recipe(),
        # Five small CNN backbones must finish a whole 'quick' run in a few minutes on two CPU
        # cores. Measured there: 20 epochs took ~330 s for the five (vgg-small and simplenet
        # ~4-7 s an epoch each), and every backbone's validation accuracy had levelled off by
        # epoch ~10, so 15 epochs (~4 min) keeps the accuracy and fits the budget.
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=15, batch_size=64),
        # The CIFAR ResNet recipe, 100 epochs and no crop-flip: 8x8 digits are tiny and not mirror-symmetric.
        "paper": replace(CIFAR_PAPER, epochs=100, augmentation="none"),
    }

    def load_splits(self) -> Splits:
        from sklearn.datasets import load_digits  # imported here: registering must stay cheap

        digits = load_digits()
        x = digits.images[..., np.newaxis]  # (1797, 8, 8, 1), HWC with one channel
        y = digits.target
        x_rest, y_rest, x_test, y_test = carve_validation(x, y, 0.2)  # the same stratified draw, for test
        return splits_from_train_test(x_rest, y_rest, x_test, y_test, val_fraction=0.1, scale=16.0)


@register_task(
    TaskSpec(
        slug="mnist1d",
        summary="MNIST-1D: 40-sample 1-D digit signals (4,000 train / 1,000 test), generated offline",
        input_shape=(40,),
        num_classes=10,
        default_backbone="mlp",
        modality="vector",
        embedded=True,
        target_accuracy=0.6,
    )
)
class Mnist1d(Task):
    """The package's own train/test split; 10% of train is validation; standardized with train stats."""

    recipes = {
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=30, batch_size=64),
        # The MNIST-1D repository's baselines (greydanus/mnist1d, notebooks/train.py, get_model_args):
        # Adam lr 1e-2, no weight decay, constant rate, batch 100, 8,000 steps = 200 passes over its
        # 4,000 training signals.
        "paper": Recipe(optimizer="adam", learning_rate=1e-2, schedule="constant", epochs=200,
                        batch_size=100),
    }

    def load_splits(self) -> Splits:
        data = load_mnist1d()
        splits = splits_from_train_test(data["x"], data["y"], data["x_test"], data["y_test"])
        return standardize(splits)


@register_task(
    TaskSpec(
        slug="mnist1d-seq",
        summary="MNIST-1D seen as a sequence of 40 time steps of 1 value, for recurrent models (a view of mnist1d)",
        input_shape=(40, 1),
        num_classes=10,
        default_backbone="mlp",
        modality="sequence",
        embedded=True,
        target_accuracy=0.6,
    )
)
class Mnist1dSeq(Task):
    """``mnist1d``'s splits, recipes and cache, each signal seen as (time, feature) = (40, 1).

    A view, not a copy: the arrays are ``mnist1d``'s, reshaped (NumPy shares their memory), so the two tasks
    score every method on exactly the same examples, and a recurrent model reads one value per time step.
    """

    recipes = Mnist1d.recipes

    def load_splits(self) -> Splits:
        flat = Mnist1d().load_splits()

        def steps(x: np.ndarray) -> np.ndarray:
            return x.reshape(len(x), 40, 1)

        return Splits(steps(flat.x_train), flat.y_train, steps(flat.x_val), flat.y_val, steps(flat.x_test), flat.y_test)


def standardize(splits: Splits) -> Splits:
    """Shift and scale all splits by the training split's mean and std (one scalar each).

    Scalars, not per-position statistics: a 1-D signal's digits sit at random offsets, so
    per-position statistics would distort the shapes a convolution looks for.
    """
    mean = splits.x_train.mean(dtype=np.float64)
    std = splits.x_train.std(dtype=np.float64) or 1.0

    def apply(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    return Splits(
        apply(splits.x_train), splits.y_train,
        apply(splits.x_val), splits.y_val,
        apply(splits.x_test), splits.y_test,
    )


MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


def mnist1d_args() -> dict:
    """The ``mnist1d`` package's default dataset arguments (the ones the paper's benchmark uses)."""
    from mnist1d.data import get_dataset_args

    return get_dataset_args(as_dict=True)


def mnist1d_path(args: dict) -> Path:
    """Cache file for these arguments; the package version is part of the name, so an upgrade
    that changes the generator regenerates instead of reusing a stale file."""
    described = {key: value for key, value in args.items() if key != "url"}
    described["mnist1d_version"] = version("mnist1d")
    fingerprint = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "mnist1d" / f"mnist1d_{fingerprint}.pkl"


def load_mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D as ``{'x', 'y', 'x_test', 'y_test'}``, from the cache or freshly generated into it."""
    args = mnist1d_args()
    path = mnist1d_path(args)
    if path.exists():
        try:
            return read_mnist1d(path)
        except DatasetCorruptError:
            pass  # a broken cache file is ours to rebuild; generation replaces it atomically
    generate_mnist1d(args, path)
    return read_mnist1d(path)


def read_mnist1d(path: Path) -> dict[str, np.ndarray]:
    """Read a cached MNIST-1D pickle, checking the four arrays are there and consistent."""
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)
        arrays = {key: np.asarray(data[key]) for key in MNIST1D_KEYS}
    except Exception as error:  # unpickling a damaged file can raise almost anything
        raise DatasetCorruptError(f"MNIST-1D cache file {path} cannot be read: {error}") from error
    if arrays["x"].shape[1:] != (40,) or len(arrays["x"]) != len(arrays["y"]) \
            or len(arrays["x_test"]) != len(arrays["y_test"]):
        raise DatasetCorruptError(f"MNIST-1D cache file {path} holds arrays of unexpected shapes")
    return arrays


def generate_mnist1d(args: dict, path: Path) -> None:
    """Generate MNIST-1D with the package into ``path``, atomically.

    ``get_dataset`` always writes its pickle (by default to ./mnist1d_data.pkl in the working
    directory), so it gets a temporary name next to ``path`` and the finished file is renamed into
    place: a killed process never leaves a half-written cache. The generator reseeds Python's and
    NumPy's global random state, so both are saved and restored around it.
    """
    from mnist1d.data import get_dataset
    from mnist1d.utils import ObjectView

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        get_dataset(ObjectView(dict(args)), path=str(temporary), download=False, regenerate=True,
                    verbose=False)
        os.replace(temporary, path)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        temporary.unlink(missing_ok=True)
