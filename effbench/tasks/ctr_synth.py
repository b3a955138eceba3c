r"""``ctr-synth``: synthetic click-through-rate prediction with planted feature crosses of known order.

Why: CTR models (DCN, xDeepFM, FCN, ...) claim to learn explicit feature crosses that an MLP over embeddings
learns poorly, and real CTR logs (Criteo, Avazu) cannot be downloaded here. In ``ctr-synth`` the crosses are
planted, so which orders a model captures can be measured. Each example has ``len(CARDINALITIES)`` = 10
categorical fields of 3 to 1,000 values, each drawn from a Zipf law (exponent 1.1, ranks shuffled), as CTR
features are; the input holds the ids with per-field offsets, so all fields share one id space of
``VOCABULARY`` = 1,898 ids (one embedding table, as hashed-embedding CTR models use), stored as float32.

The click probability is :math:`\sigma(b + \sum_f w_f[x_f] + \sum_{S} \frac{1}{\sqrt K}\sum_{k=1}^{K}
\prod_{f \in S} e_{f}[x_f]_k)`: first-order weights :math:`w \sim N(0, 0.5^2)`, and for every planted cross
:math:`S` in ``CROSSES`` (three of order 2, two of order 3, one of order 4) a factorization-machine-style
interaction of latent factors :math:`e \sim N(0, 1)` of dimension K = 4: each term has variance 1 and no
first-order part. :math:`b` puts the mean click rate at ``CLICK_RATE`` = 0.25. Labels are Bernoulli draws:
the best possible test AUC, that of the true probabilities, is 0.914, while a logistic regression on the
one-hot fields (first order only, no crosses) reaches 0.733 (measured when the task was built).
Quality: AUC and log-loss (the ``accuracy`` track, kind ``ctr``); a model outputs two logits
(no click, click) and trains on their cross-entropy, the binary log-loss.

100,000 training and 20,000 test examples, with a fixed seed; 10% of training (stratified) is validation.
"""

from __future__ import annotations

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks._shared import smoke_recipe, splits_from_train_test
from effbench.tasks.base import Splits, Task

CARDINALITIES = (3, 5, 8, 12, 20, 50, 100, 200, 500, 1000)
OFFSETS = np.cumsum((0, *CARDINALITIES[:-1]))
VOCABULARY = sum(CARDINALITIES)
CROSSES = ((0, 1), (2, 5), (4, 8), (1, 3, 6), (0, 7, 9), (2, 4, 6, 8))
ZIPF_EXPONENT = 1.1
FACTORS = 4
FIRST_ORDER_STD = 0.5
CLICK_RATE = 0.25
TRAIN_EXAMPLES, TEST_EXAMPLES = 100_000, 20_000
SEED = 5_2024


class ClickModel:
    """The planted model: field value frequencies, weights, latent factors and bias, all from one seed."""

    def __init__(self, seed: int = SEED):
        rng = np.random.default_rng([seed, 0])
        self.frequencies = [self._zipf(rng, size) for size in CARDINALITIES]
        self.first_order = [rng.normal(0.0, FIRST_ORDER_STD, size) for size in CARDINALITIES]
        self.factors = [rng.normal(0.0, 1.0, (size, FACTORS)) for size in CARDINALITIES]
        self.bias = 0.0
        self.bias = self._bias_for_rate(self.logits(self.draw_fields(np.random.default_rng([seed, 1]), 50_000)))

    @staticmethod
    def _zipf(rng: np.random.Generator, size: int) -> np.ndarray:
        weights = 1.0 / np.arange(1, size + 1) ** ZIPF_EXPONENT
        return rng.permutation(weights / weights.sum())

    def draw_fields(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Field values (count, fields), each field's value in [0, its cardinality)."""
        return np.stack([rng.choice(len(p), size=count, p=p) for p in self.frequencies], axis=1)

    def logits(self, fields: np.ndarray) -> np.ndarray:
        """The click logit of every example, bias included."""
        logit = np.full(len(fields), self.bias)
        for field, weights in enumerate(self.first_order):
            logit += weights[fields[:, field]]
        for cross in CROSSES:
            product = np.ones((len(fields), FACTORS))
            for field in cross:
                product *= self.factors[field][fields[:, field]]
            logit += product.sum(axis=1) / np.sqrt(FACTORS)
        return logit

    @staticmethod
    def _bias_for_rate(logits: np.ndarray) -> float:
        """The shift b with mean(sigmoid(logits + b)) = CLICK_RATE, by bisection."""
        low, high = -20.0, 20.0
        for _ in range(60):
            middle = (low + high) / 2
            rate = np.mean(1.0 / (1.0 + np.exp(-(logits + middle))))
            low, high = (middle, high) if rate < CLICK_RATE else (low, middle)
        return (low + high) / 2


def ctr_examples(model: ClickModel, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids float32 (count, fields) with field offsets, clicks int32, true click probabilities float64)."""
    rng = np.random.default_rng(seed)
    fields = model.draw_fields(rng, count)
    probability = 1.0 / (1.0 + np.exp(-model.logits(fields)))
    clicks = (rng.random(count) < probability).astype(np.int32)
    return (fields + OFFSETS).astype(np.float32), clicks, probability


@register_task(
    TaskSpec(
        slug="ctr-synth",
        summary="SYNTHETIC click-through rate: 10 Zipf-distributed categorical fields (1,898 ids), planted "
        "crosses of order 2, 3 and 4; AUC and log-loss (100,000 train / 20,000 test)",
        input_shape=(len(CARDINALITIES),),
        num_classes=2,
        default_backbone="embedding-mlp",
        modality="categorical",
        embedded=True,
        # Click accuracy: always guessing "no click" gets 0.75, the true probabilities 0.865.
        target_accuracy=0.8,
        kind="ctr",
        vocabulary=VOCABULARY,
    )
)
class CtrSynth(Task):
    recipes = {
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=3, batch_size=256),
        "paper": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=20, batch_size=256),
    }

    def load_splits(self) -> Splits:
        model = ClickModel(SEED)
        x_train, y_train, _ = ctr_examples(model, TRAIN_EXAMPLES, SEED + 1)
        x_test, y_test, _ = ctr_examples(model, TEST_EXAMPLES, SEED + 2)
        return splits_from_train_test(x_train, y_train, x_test, y_test, val_fraction=0.1)
