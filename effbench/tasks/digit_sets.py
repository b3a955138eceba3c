"""``digit-sets``: classify an unordered set of handwritten digits by the sum of its digits mod 10.

Why: permutation-invariant aggregation (DeepSets-style set encoders, LCM) needs inputs that are sets and
labels that are functions of the set, not of the order it is listed in. Each example is a set of
``SET_SIZE`` digit images from scikit-learn's bundled digits, each flattened to 64 pixel values in [0, 1]:
input (3, 64), elements along the first axis in a random order. Its label is the sum of the three digits mod
10: every element matters (unlike max), and a model must recognise each digit exactly, so the task
separates models that aggregate well from ones that do not.

Training sets are drawn from the images the ``digits`` task trains on, test sets from the images it tests
on (:mod:`effbench.tasks._digits`): 10,000 / 2,000 sets, with a fixed seed. The accuracy track also scores
the test sets with their elements in another order (``permuted_top1``, ``permutation_agreement``; modality
``set``): a permutation-invariant model gets the same accuracy and agreement 1.
"""

from __future__ import annotations

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks._digits import digit_pools, draw_groups
from effbench.tasks._shared import smoke_recipe, splits_from_train_test
from effbench.tasks.base import Splits, Task

SET_SIZE = 3
TRAIN_SETS, TEST_SETS = 10_000, 2_000
SEED = 3_2024


def digit_sets(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` sets: inputs (count, SET_SIZE, 64) float32 and labels (sum of the digits mod 10) int32."""
    members = draw_groups(np.random.default_rng(seed), len(labels), count, SET_SIZE)
    x = images.reshape(len(images), -1)[members]
    return x, (labels[members].sum(axis=1) % 10).astype(np.int32)


@register_task(
    TaskSpec(
        slug="digit-sets",
        summary="sets of 3 bundled 8x8 digits (64 pixels each), label = sum mod 10; permutation-invariance "
        "metrics (10,000 train / 2,000 test sets; test digits held out)",
        input_shape=(SET_SIZE, 64),
        num_classes=10,
        default_backbone="mlp",
        modality="set",
        embedded=True,
        target_accuracy=0.6,
    )
)
class DigitSets(Task):
    """Sets generated from the two digit pools with fixed seeds; 10% of the training sets are validation."""

    recipes = {
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=20, batch_size=64),
        "paper": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=100, batch_size=64),
    }

    def load_splits(self) -> Splits:
        x_pool, y_pool, x_test_pool, y_test_pool = digit_pools()
        x_train, y_train = digit_sets(x_pool, y_pool, TRAIN_SETS, SEED)
        x_test, y_test = digit_sets(x_test_pool, y_test_pool, TEST_SETS, SEED + 1)
        return splits_from_train_test(x_train, y_train, x_test, y_test, val_fraction=0.1)
