"""``breast_cancer``: scikit-learn's bundled Wisconsin diagnostic breast-cancer data, a small real tabular task.

Why: every other embedded task is images or signals; tabular methods need real tabular data, and this one
ships with scikit-learn (Street, Wolberg & Mangasarian, 1993: 569 tumours, 30 real-valued features of cell
nuclei measured from an image of a fine-needle aspirate; malignant or benign). Fixed stratified split: 20%
test, then 10% of the rest validation. Features have very different scales (areas in the hundreds,
smoothness near 0.1), so each is standardized with the training split's mean and std: per feature, unlike
``mnist1d``'s scalar statistics, because here each position is a different measurement.
"""

from __future__ import annotations

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks._shared import smoke_recipe, splits_from_train_test
from effbench.tasks.base import Splits, Task, carve_validation


def standardize_features(splits: Splits) -> Splits:
    """Every split shifted and scaled per feature by the training split's mean and std."""
    mean = splits.x_train.mean(axis=0, dtype=np.float64)
    std = splits.x_train.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0

    def apply(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    return Splits(apply(splits.x_train), splits.y_train, apply(splits.x_val), splits.y_val,
                  apply(splits.x_test), splits.y_test)  # fmt: skip


@register_task(
    TaskSpec(
        slug="breast_cancer",
        summary="scikit-learn's Wisconsin breast-cancer diagnosis: 30 real features, 2 classes, 569 tumours "
        "(bundled; real tabular data, runs offline in seconds)",
        input_shape=(30,),
        num_classes=2,
        default_backbone="mlp",
        modality="vector",
        embedded=True,
        target_accuracy=0.95,
    )
)
class BreastCancer(Task):
    recipes = {
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=40, batch_size=32),
        "paper": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=200, batch_size=32),
    }

    def load_splits(self) -> Splits:
        from sklearn.datasets import load_breast_cancer  # imported here: registering must stay cheap

        data = load_breast_cancer()
        x_rest, y_rest, x_test, y_test = carve_validation(data.data, data.target, 0.2)
        return standardize_features(splits_from_train_test(x_rest, y_rest, x_test, y_test, val_fraction=0.1))
