"""Training recipes and budgets.

A task declares one :class:`Recipe` per budget: ``smoke`` (seconds, for tests), ``quick`` (minutes on
two CPU cores) and ``paper`` (the recipe a paper used, for GPU machines). Methods train with the
task's recipe, so the closed division compares methods under one recipe.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from effbench.tf import keras, tf

BUDGETS: tuple[str, ...] = ("smoke", "quick", "paper")
Budget = Literal["smoke", "quick", "paper"]


@dataclass(frozen=True)
class Recipe:
    """Optimizer, schedule, epochs, batch size and augmentation for one budget.

    ``distribution`` says how one run uses several devices: ``none`` (TensorFlow's default device),
    ``mirrored`` (``tf.distribute.MirroredStrategy`` over every visible GPU, data-parallel with
    synchronous all-reduce; on a machine without GPUs, the CPU) or ``tpu`` (``TPUStrategy`` on the
    attached TPU). The model is built, compiled and trained inside the strategy's scope; ``batch_size``
    is the global batch, split across the replicas.

    ``schedule`` is ``cosine`` (to zero over all steps), ``step`` (x0.1 at 50% and 75% of the epochs)
    or ``constant``. ``max_train_samples`` caps the training split (``None`` = all of it), which is
    how ``smoke`` stays fast. ``augmentation`` is ``none`` or ``crop-flip`` (pad 4 px, random crop,
    horizontal flip; for natural images only).
    """

    # "sgd" (Nesterov, ``momentum``), "adam", "adamw" (decoupled ``weight_decay``), or the name of any other
    # tf_keras optimizer ("rmsprop", "adagrad", "nadam", "lion", ...), built with the scheduled learning rate.
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    epochs: int = 10
    batch_size: int = 64
    augmentation: Literal["none", "crop-flip"] = "none"
    max_train_samples: int | None = None
    distribution: Literal["none", "mirrored", "tpu"] = "none"

    def __post_init__(self) -> None:
        if self.optimizer not in NAMED_OPTIMIZERS and self.optimizer not in keras_optimizers():
            known = ", ".join(sorted({*NAMED_OPTIMIZERS, *keras_optimizers()}))
            raise ValueError(f"recipe optimizer '{self.optimizer}' is not a tf_keras optimizer (known: {known})")

    def as_config(self) -> dict:
        return asdict(self)

    def learning_rate_schedule(self, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
        total_steps = max(1, self.epochs * steps_per_epoch)
        if self.schedule == "cosine":
            return keras.optimizers.schedules.CosineDecay(self.learning_rate, total_steps)
        if self.schedule == "step":
            boundaries = [math.ceil(total_steps * 0.5), math.ceil(total_steps * 0.75)]
            values = [self.learning_rate, self.learning_rate * 0.1, self.learning_rate * 0.01]
            return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        return self.learning_rate

    def make_optimizer(self, steps_per_epoch: int) -> keras.optimizers.Optimizer:
        rate = self.learning_rate_schedule(steps_per_epoch)
        decay = self.weight_decay or None
        if self.optimizer == "sgd":
            return keras.optimizers.SGD(rate, momentum=self.momentum, nesterov=True, weight_decay=decay)
        if self.optimizer == "adam":
            return keras.optimizers.Adam(rate, weight_decay=decay)
        if self.optimizer == "adamw":
            return keras.optimizers.AdamW(rate, weight_decay=self.weight_decay)
        return keras_optimizers()[self.optimizer](learning_rate=rate, weight_decay=decay)


NAMED_OPTIMIZERS = ("sgd", "adam", "adamw")


def keras_optimizers() -> dict[str, type]:
    """tf_keras's optimizer classes by lower-case name (``rmsprop``, ``lion``, ...)."""
    base = keras.optimizers.Optimizer
    return {
        name.lower(): value
        for name, value in vars(keras.optimizers).items()
        if isinstance(value, type) and issubclass(value, base) and value is not base
    }


def distribution_strategy(recipe: Recipe) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy a recipe asks for (see :class:`Recipe`)."""
    if recipe.distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    if recipe.distribution == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


def check_budget(budget: str) -> Budget:
    if budget not in BUDGETS:
        raise ValueError(f"budget '{budget}' is not one of {', '.join(BUDGETS)}")
    return budget  # type: ignore[return-value]
