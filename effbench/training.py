"""The one training loop every method goes through: Keras ``fit`` with the task's recipe."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from effbench.recipe import Budget, Recipe
from effbench.registry import TaskSpec
from effbench.tasks.base import Splits
from effbench.tf import keras, tf

if TYPE_CHECKING:
    from effbench.method import Artifact
    from effbench.modifiers import Modifier
    from effbench.tasks.base import Task


@dataclass(frozen=True)
class TrainContext:
    """Everything a method needs to train: the task, the run's splits, recipe, seed and budget.

    ``upstream`` holds the trained artifacts of the method's upstreams by role (``Method.requires``, and
    ``twin``), each loaded from the cache when first looked up, a fresh copy per run: a method may
    fine-tune an upstream's model in place. ``recipe`` is the task's fine-tune recipe for a method that
    starts from a ``trained`` upstream. ``modifiers`` are the training modifiers :func:`fit` applies.
    """

    task: "Task"
    splits: Splits
    recipe: Recipe
    seed: int
    budget: Budget
    upstream: Mapping[str, "Artifact"] = field(default_factory=dict)
    modifiers: tuple["Modifier", ...] = ()


def classification_loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def task_loss(spec: TaskSpec) -> keras.losses.Loss:
    """The training loss of the task's kind (``spec.quality.loss``): the cross-entropy of the class logits for
    classification, of each pixel's class logits for segmentation, of the two logits (no click, click) for CTR;
    the mean squared error for super-resolution and regression."""
    if spec.kind in ("classification", "segmentation", "ctr"):
        return classification_loss()
    return keras.losses.MeanSquaredError()


# What a method may put in place of the recipe's optimizer: a function of it (see ``fit``).
OptimizerChoice = Callable[[keras.optimizers.Optimizer], keras.optimizers.Optimizer]


def compile_for_recipe(
    model: keras.Model,
    context: TrainContext,
    loss: keras.losses.Loss | None = None,
    optimizer: OptimizerChoice | None = None,
) -> None:
    steps_per_epoch = -(-len(context.splits.x_train) // context.recipe.batch_size)
    metric = context.task.spec.quality.training_metric
    recipe_optimizer = context.recipe.make_optimizer(steps_per_epoch)
    model.compile(
        optimizer=optimizer(recipe_optimizer) if optimizer else recipe_optimizer,
        loss=loss or task_loss(context.task.spec),
        metrics=[metric] if metric else [],
    )


def crop_flip(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Pad by 4 pixels, take a random crop of the original size, flip left-right at random."""
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
    cropped = tf.image.random_crop(padded, tf.shape(images))
    return tf.image.random_flip_left_right(tf.reshape(cropped, [-1, height, width, images.shape[3]])), labels


def training_input(context: TrainContext) -> dict:
    """Arguments for ``model.fit`` that feed the training split as the recipe says."""
    splits, recipe = context.splits, context.recipe
    if recipe.augmentation == "none":
        return {"x": splits.x_train, "y": splits.y_train, "batch_size": recipe.batch_size, "shuffle": True}
    dataset = (
        tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
        .shuffle(len(splits.x_train), seed=context.seed, reshuffle_each_iteration=True)
        .batch(recipe.batch_size)
        .map(crop_flip, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return {"x": dataset}


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS counter (VmHWM) for this process, where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last :func:`reset_peak_rss` (0 if unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def gpu_devices() -> list[str]:
    return [device.name.replace("physical_device:", "") for device in tf.config.list_physical_devices("GPU")]


class TrainingClock(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall time of each epoch, validation excluded) to the history."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._validation_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        validation_start = getattr(self, "_validation_started", None)
        end = validation_start if validation_start and validation_start > self._started else time.perf_counter()
        if logs is not None:
            logs["epoch_seconds"] = end - self._started
        self._validation_started = None


def reset_peak_memory() -> None:
    """Start counting peak host and GPU memory afresh, before a method trains."""
    reset_peak_rss()
    for device in gpu_devices():
        tf.config.experimental.reset_memory_stats(device)


def training_stats(context: TrainContext) -> dict[str, float]:
    """Samples per epoch, and peak host and GPU memory since :func:`reset_peak_memory`."""
    stats = {"train_samples": float(len(context.splits.x_train)), "peak_rss_bytes": float(peak_rss_bytes())}
    peaks = [tf.config.experimental.get_memory_info(device)["peak"] for device in gpu_devices()]
    if peaks:
        stats["peak_gpu_bytes"] = float(max(peaks))
    return stats


class TrainingObjective(keras.Model):
    """A training-only wrapper: trains ``deployed`` on an objective of its own, and is ``deployed`` otherwise.

    Distillation, deep supervision, multi-branch losses: the step minimises :meth:`objective`, while
    ``call`` (what validation, callbacks and modifiers see) is the deployed model's, and so are the logged
    ``loss`` (the compiled loss of the deployed output) and the compiled metrics. The objective's own term is
    logged beside them under :attr:`tracked` (``val_`` prefixed in validation). The step updates every
    trainable variable the wrapper holds: layers outside the deployed model (a pruned head) train too, a
    frozen teacher does not. Training inputs are ``(x, y)`` pairs: no sample weights.
    """

    tracked: ClassVar[str] = "objective"

    def __init__(self, deployed: keras.Model, **kwargs: Any):
        super().__init__(**kwargs)
        self.deployed = deployed
        self.objective_tracker = keras.metrics.Mean(name=self.tracked)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.deployed(inputs, training=training)

    @abc.abstractmethod
    def objective(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(the deployed model's output, the loss the step minimises, the term logged as :attr:`tracked`)."""

    def supervised_loss(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """The compiled (task) loss of ``logits`` plus the deployed model's regularization losses, unlogged."""
        loss = keras.losses.get(self.loss)(y, logits)
        return loss + tf.add_n(self.deployed.losses) if self.deployed.losses else loss

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            prediction, loss, term = self.objective(x, y, training=True)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return self.logged(y, prediction, term)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y = data[0], data[1]
        prediction, _, term = self.objective(x, y, training=False)
        return self.logged(y, prediction, term)

    def logged(self, y: tf.Tensor, prediction: tf.Tensor, term: tf.Tensor) -> dict[str, tf.Tensor]:
        # "loss" stays the deployed output's loss, as fit reports it for every other model.
        self.compiled_loss(y, prediction, regularization_losses=self.deployed.losses)
        self.compiled_metrics.update_state(y, prediction)
        self.objective_tracker.update_state(term)
        return {metric.name: metric.result() for metric in self.metrics}


def fit(
    model: keras.Model,
    context: TrainContext,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    loss: keras.losses.Loss | None = None,
    optimizer: OptimizerChoice | None = None,
) -> tuple[dict[str, list[float]], float]:
    """Compile ``model`` for the recipe and train it; return the per-epoch history and wall seconds.

    The history has Keras's curves plus ``epoch_seconds``. The run's training modifiers wrap ``model``
    first (each trains it through a model of its own, such as a distiller); ``model`` is what is trained.
    ``optimizer``, where given, maps the recipe's optimizer to the one that trains (one that updates some
    weights its own way, such as a Riemannian step for weights on a manifold, and keeps the recipe's schedule).
    """
    for modifier in context.modifiers:
        model = modifier.training_model(model, context)
    compile_for_recipe(model, context, loss, optimizer)
    started = time.perf_counter()
    history = model.fit(
        **training_input(context),
        epochs=context.recipe.epochs,
        validation_data=(context.splits.x_val, context.splits.y_val),
        callbacks=[TrainingClock(), *callbacks],
        verbose=0,
    )
    seconds = time.perf_counter() - started
    return {name: [float(v) for v in values] for name, values in history.history.items()}, seconds
