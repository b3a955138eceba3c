"""Recipe and split helpers shared by the built-in tasks (private: registers nothing)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from effbench.recipe import Recipe
from effbench.tasks.base import DatasetCorruptError, Splits, carve_validation

# Every built-in task's smoke recipe: one epoch over 256 examples, seconds on a laptop, only to
# prove the whole pipeline runs. Tasks that augment in their real recipes augment here too, so the
# smoke test exercises the same input pipeline.
SMOKE = Recipe(optimizer="adam", learning_rate=1e-3, schedule="constant", epochs=1, batch_size=64,
               max_train_samples=256)

# The standard CIFAR ResNet recipe (He et al. 2016, as BiBench and most compression papers use it):
# SGD 0.1 with Nesterov momentum 0.9, weight decay 5e-4, cosine to zero, batch 128, crop-flip.
CIFAR_PAPER = Recipe(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
                     schedule="cosine", epochs=200, batch_size=128, augmentation="crop-flip")


def smoke_recipe(augmentation: str = "none") -> Recipe:
    """The shared smoke recipe, with the task's augmentation."""
    return replace(SMOKE, augmentation=augmentation)


def check_labels(slug: str, source: str, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as int32, after checking they are integers in ``[0, num_classes)``."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (not np.issubdtype(labels.dtype, np.integer)
                        or labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetCorruptError(
            f"task '{slug}': {source} holds labels outside 0..{num_classes - 1} "
            f"(dtype {labels.dtype}); the file is not the dataset EffBench expects"
        )
    return labels.astype(np.int32)


def splits_from_train_test(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    val_fraction: float = 0.1,
    scale: float = 1.0,
) -> Splits:
    """Carve a fixed validation split out of train, then cast inputs to float32 divided by ``scale``.

    The carve happens before the cast so large uint8 image sets are copied only once as float32.
    """
    x_fit, y_fit, x_val, y_val = carve_validation(x_train, y_train, val_fraction)
    return Splits(
        to_float(x_fit, scale), y_fit.astype(np.int32),
        to_float(x_val, scale), y_val.astype(np.int32),
        to_float(x_test, scale), y_test.astype(np.int32),
    )


def to_float(x: np.ndarray, scale: float) -> np.ndarray:
    """``x / scale`` as float32, without a float64 intermediate."""
    out = x.astype(np.float32)
    if scale != 1.0:
        out /= np.float32(scale)
    return out
