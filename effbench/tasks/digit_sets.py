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

from effbench.registry import TaskSpec, register_task
from effbench.tasks._digits import ComposedDigitsTask, draw_groups

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
class DigitSets(ComposedDigitsTask):
    """Sets generated from the two digit pools with fixed seeds; 10% of the training sets are validation."""

    compose = staticmethod(digit_sets)
    train_count, test_count, seed = TRAIN_SETS, TEST_SETS, SEED
