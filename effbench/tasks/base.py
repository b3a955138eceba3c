"""Tasks: a dataset with fixed splits, an input pipeline, a default backbone and a recipe per budget."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from effbench.recipe import Budget, Recipe, check_budget
from effbench.registry import TaskSpec

# The train/validation/test split of every task is drawn with this seed, never the run's seed, so
# every method and every seed is scored on exactly the same test examples.
SPLIT_SEED = 20240101


class DatasetMissingError(FileNotFoundError):
    """A real dataset has no copy in the cache, and EffBench never downloads at run time."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be read (truncated, wrong format); the message names it."""


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def for_run(self, seed: int, max_train_samples: int | None) -> "Splits":
        """The splits a run trains on: the training split in a seed-dependent order, capped."""
        order = np.random.default_rng(seed).permutation(len(self.x_train))
        if max_train_samples is not None:
            order = order[:max_train_samples]
        return Splits(
            self.x_train[order], self.y_train[order], self.x_val, self.y_val, self.x_test, self.y_test
        )


def carve_validation(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    """Split a training set into (x_train, y_train, x_val, y_val) with a fixed, stratified draw."""
    rng = np.random.default_rng(SPLIT_SEED)
    val_index = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        take = max(1, round(len(members) * fraction))
        val_index.append(rng.choice(members, size=take, replace=False))
    val_mask = np.zeros(len(y), dtype=bool)
    val_mask[np.concatenate(val_index)] = True
    return x[~val_mask], y[~val_mask], x[val_mask], y[val_mask]


def data_dir() -> Path:
    """Where real datasets are looked for: ``$EFFBENCH_DATA``, else Keras's own cache folder."""
    override = os.environ.get("EFFBENCH_DATA")
    if override:
        return Path(override).expanduser()
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(keras_home) / "datasets"


def cache_dir() -> Path:
    """Where EffBench keeps data it generates itself (for example MNIST-1D)."""
    override = os.environ.get("EFFBENCH_CACHE")
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effbench"


class Task(abc.ABC):
    """Subclasses set ``recipes`` and implement ``load_splits``; ``@register_task`` sets ``spec``."""

    spec: ClassVar[TaskSpec]
    recipes: ClassVar[dict[str, Recipe]]
    # The recipe per budget of methods that start from trained weights (a ``trained`` upstream: pruning,
    # quantization-aware fine-tuning, binarizing a trained twin). A budget without one fine-tunes with the
    # training recipe, as BiBench fine-tunes binarized networks from the float checkpoint with the full schedule.
    finetune_recipes: ClassVar[dict[str, Recipe]] = {}

    def recipe(self, budget: Budget) -> Recipe:
        return self.recipes[check_budget(budget)]

    def finetune_recipe(self, budget: Budget) -> Recipe:
        return self.finetune_recipes.get(check_budget(budget)) or self.recipe(budget)

    @abc.abstractmethod
    def load_splits(self) -> Splits:
        """Float32 inputs shaped ``spec.input_shape`` and int32 labels, for all three splits."""

    def load(self) -> Splits:
        """The splits, after checking they are what the spec declares (see :func:`check_splits`)."""
        splits = self.load_splits()
        check_splits(self.spec, splits)
        return splits

    def reference_outputs(self, x: np.ndarray) -> np.ndarray | None:
        """What a method-free reference predicts for ``x`` (bicubic upsampling for super-resolution), or None.

        The accuracy track scores it beside the model, as the row every method of the field must beat.
        """
        return None

    def test_groups(self) -> np.ndarray | None:
        """Where test examples are patches of larger images: the image index of each, so that metrics that
        the field computes per image (PSNR) count each image once; None when every example stands alone."""
        return None


def check_splits(spec: TaskSpec, splits: Splits) -> None:
    """Raise ValueError unless every split matches ``spec``: inputs float32 shaped ``input_shape``, labels of
    the kind's dtype shaped ``output_shape``, as many labels as inputs, class labels in ``[0, num_classes)``,
    ids in ``[0, vocabulary)``, and no NaN or infinity."""
    wanted_label = np.dtype(spec.quality.label_dtype)
    for part in ("train", "val", "test"):
        x, y = getattr(splits, f"x_{part}"), getattr(splits, f"y_{part}")
        if tuple(x.shape[1:]) != tuple(spec.input_shape):
            raise ValueError(f"task '{spec.slug}': x_{part} has shape {x.shape[1:]}, expected {spec.input_shape}")
        if tuple(y.shape[1:]) != tuple(spec.output_shape):
            raise ValueError(f"task '{spec.slug}': y_{part} has shape {y.shape[1:]}, expected {spec.output_shape}")
        # Loaders promise float32 inputs and labels of the kind's dtype; a float64 array would silently double
        # memory and change numerics, so a wrong dtype is a loader bug, not something to coerce.
        for name, array, dtype in ((f"x_{part}", x, np.dtype(np.float32)), (f"y_{part}", y, wanted_label)):
            if array.dtype != dtype:
                raise ValueError(f"task '{spec.slug}': {name} has dtype {array.dtype}, expected {dtype.name}")
        if len(x) != len(y):
            raise ValueError(f"task '{spec.slug}': {len(x)} inputs in x_{part} but {len(y)} labels")
        _check_values(spec, part, x, y)


def _check_values(spec: TaskSpec, part: str, x: np.ndarray, y: np.ndarray) -> None:
    if spec.num_classes and y.size and (y.min() < 0 or y.max() >= spec.num_classes):
        raise ValueError(f"task '{spec.slug}': y_{part} holds labels outside 0..{spec.num_classes - 1}")
    if spec.vocabulary and x.size and (x.min() < 0 or x.max() >= spec.vocabulary or np.any(x != np.round(x))):
        raise ValueError(f"task '{spec.slug}': x_{part} holds values that are not ids in 0..{spec.vocabulary - 1}")
    for name, array in ((f"x_{part}", x), (f"y_{part}", y)):
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(f"task '{spec.slug}': {name} holds NaN or infinite values")
