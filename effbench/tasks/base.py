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
        splits = self.load_splits()
        expected = self.spec.input_shape
        for name in ("x_train", "x_val", "x_test"):
            shape = getattr(splits, name).shape[1:]
            if tuple(shape) != tuple(expected):
                raise ValueError(f"task '{self.spec.slug}': {name} has shape {shape}, expected {expected}")
        # Loaders promise float32 inputs and int32 labels; a float64 array would silently double
        # memory and change numerics, so a wrong dtype is a loader bug, not something to coerce.
        for name in ("x_train", "x_val", "x_test", "y_train", "y_val", "y_test"):
            dtype = getattr(splits, name).dtype
            wanted = np.float32 if name.startswith("x") else np.int32
            if dtype != wanted:
                raise ValueError(f"task '{self.spec.slug}': {name} has dtype {dtype}, expected {wanted.__name__}")
        return splits
