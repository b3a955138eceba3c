"""scikit-learn's bundled 8x8 digits with the ``digits`` task's fixed train/test split (private).

The tasks built from digits (``digit-sets``, ``digits-seq``) draw their training examples only from the
images ``digits`` trains on and their test examples only from the images it tests on, so no test image was
ever seen in training, whichever task it appears in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from effbench.recipe import Recipe
from effbench.tasks._shared import smoke_recipe, splits_from_train_test
from effbench.tasks.base import Splits, Task, carve_validation


@functools.cache
def digit_pools() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels): images float32 (N, 8, 8, 1) in [0, 1]."""
    from sklearn.datasets import load_digits  # imported here: registering must stay cheap

    digits = load_digits()
    images = (digits.images[..., np.newaxis] / 16.0).astype(np.float32)
    x_train, y_train, x_test, y_test = carve_validation(images, digits.target, 0.2)  # the digits task's test draw
    for array in (x_train, x_test):
        array.flags.writeable = False
    return x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32)


def draw_groups(rng: np.random.Generator, pool_size: int, count: int, size: int) -> np.ndarray:
    """Indices (count, size) into a pool of ``pool_size`` images: ``size`` per example, uniform, with replacement."""
    return rng.integers(0, pool_size, (count, size))


# Draws ``count`` composed examples from a digit pool (images, labels) with a seed: (inputs, labels).
Composer = Callable[[np.ndarray, np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]


class ComposedDigitsTask(Task):
    """A task whose examples are composed from the digit pools: training examples from the training digits, test
    examples from the held-out test digits, each with its own fixed seed; 10% of the training ones validate.

    Subclasses set ``compose`` (a :data:`Composer`, as a staticmethod), ``train_count``, ``test_count``, ``seed``.
    """

    compose: ClassVar[Composer]
    train_count: ClassVar[int]
    test_count: ClassVar[int]
    seed: ClassVar[int]
    recipes = {
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=20, batch_size=64),
        "paper": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=100, batch_size=64),
    }

    def load_splits(self) -> Splits:
        x_pool, y_pool, x_test_pool, y_test_pool = digit_pools()
        x_train, y_train = self.compose(x_pool, y_pool, self.train_count, self.seed)
        x_test, y_test = self.compose(x_test_pool, y_test_pool, self.test_count, self.seed + 1)
        return splits_from_train_test(x_train, y_train, x_test, y_test, val_fraction=0.1)
