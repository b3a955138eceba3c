"""scikit-learn's bundled 8x8 digits with the ``digits`` task's fixed train/test split (private).

The tasks built from digits (``digit-sets``, ``digits-seq``) draw their training examples only from the
images ``digits`` trains on and their test examples only from the images it tests on, so no test image was
ever seen in training, whichever task it appears in.
"""

from __future__ import annotations

import functools

import numpy as np

from effbench.tasks.base import carve_validation


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
