"""Specifications of ``gcr``: subspace logits, the Riemannian step that keeps each class basis orthonormal, and the
core hook through which the architecture trains with it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.recipe import Recipe
from effbench.registry import TASKS
from effbench.tasks.base import Splits
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.architectures.gcr import GrassmannLogits, riemannian
from tests.architecture_checks import tflite_outputs
from tracks.complexity import count_complexity

FEATURES, CLASSES, DIM = 12, 5, 3


def bases(kernel: np.ndarray, dim: int = DIM) -> np.ndarray:
    """The (C, d, dim) class bases of a (d, C * dim) kernel."""
    return np.asarray(kernel).reshape(kernel.shape[0], -1, dim).transpose(1, 0, 2)


def orthonormality_error(kernel: np.ndarray, dim: int = DIM) -> float:
    """max |S_c^T S_c - I| over the classes."""
    blocks = bases(kernel, dim)
    return float(np.abs(blocks.transpose(0, 2, 1) @ blocks - np.eye(dim)).max())


class UnconstrainedLogits(GrassmannLogits):
    """The same head whose kernel no constraint holds: the twin an ordinary optimizer trains."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kernel_constraint = None


def head_model(head: keras.layers.Layer) -> keras.Model:
    inputs = keras.Input((FEATURES,))
    return keras.Model(inputs, head(keras.layers.Dense(FEATURES, activation="tanh")(inputs)))


def data(count: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, FEATURES)).astype("float32"), rng.integers(0, CLASSES, size=count)


def train(model: keras.Model, optimizer: keras.optimizers.Optimizer, steps: int = 20) -> list[float]:
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


def test_a_logit_is_the_norm_of_the_scaled_projection_of_the_normalised_feature():
    layer = GrassmannLogits(CLASSES, DIM, scale=7.0)
    x = data()[0]
    logits = layer(x).numpy()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.linalg.norm(7.0 * np.einsum("nd,cdk->nck", unit, bases(layer.kernel.numpy())), axis=-1)
    np.testing.assert_allclose(logits, expected, rtol=1e-5)
    assert orthonormality_error(layer.kernel.numpy()) < 1e-5  # initialised on the manifold


def test_riemannian_training_keeps_each_class_basis_orthonormal_where_an_unconstrained_twin_drifts():
    keras.utils.set_random_seed(0)
    constrained = head_model(GrassmannLogits(CLASSES, DIM))
    keras.utils.set_random_seed(0)
    twin = head_model(UnconstrainedLogits(CLASSES, DIM))
    start = constrained.layers[-1].kernel.numpy()
    np.testing.assert_array_equal(start, twin.layers[-1].kernel.numpy())
    losses = train(constrained, riemannian(keras.optimizers.Adam(0.05)))
    train(twin, keras.optimizers.Adam(0.05))
    kernel = constrained.layers[-1].kernel.numpy()
    assert losses[-1] < losses[0] and np.abs(kernel - start).max() > 0.05  # it learned, the bases moved
    assert orthonormality_error(kernel) < 1e-5
    assert orthonormality_error(twin.layers[-1].kernel.numpy()) > 0.05


def test_one_step_moves_each_basis_along_the_geodesic_of_its_projected_step():
    # On the Grassmannian, the principal angles between S and exp_S(xi) are xi's singular values; a plain step
    # followed by a QR retraction would give arctan of them, which differs at a step of this size.
    keras.utils.set_random_seed(1)
    model = head_model(GrassmannLogits(CLASSES, DIM))
    head = model.layers[-1]
    start = head.kernel.numpy()
    x, y = data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    gradient = tape.gradient(value, head.kernel).numpy()
    rate = 0.5 / np.abs(gradient).max()
    model.compile(optimizer=riemannian(keras.optimizers.SGD(rate)), loss=loss)
    model.optimizer.apply_gradients([(gradient, head.kernel)])
    step_angles, angles = [], []
    for s0, g, s1 in zip(bases(start), bases(gradient), bases(head.kernel.numpy()), strict=True):
        tangent = -rate * (g - s0 @ (s0.T @ g))
        step_angles.append(np.sort(np.linalg.svd(tangent, compute_uv=False)))
        angles.append(np.sort(np.arccos(np.clip(np.linalg.svd(s0.T @ s1, compute_uv=False), -1, 1))))
    assert max(a.max() for a in step_angles) > 0.2  # a step long enough for arctan to differ
    np.testing.assert_allclose(angles, step_angles, atol=2e-3)


def test_the_bases_take_no_weight_decay_and_the_other_weights_do():
    model = head_model(GrassmannLogits(CLASSES, DIM))
    optimizer = riemannian(keras.optimizers.AdamW(1e-3, weight_decay=0.1))
    head, dense = model.layers[-1], model.layers[1]
    assert not optimizer._use_weight_decay(head.kernel) and optimizer._use_weight_decay(dense.kernel)


def test_the_riemannian_optimizer_keeps_the_recipes_class_and_schedule():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 100)
    optimizer = riemannian(keras.optimizers.SGD(schedule, momentum=0.8, nesterov=True))
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov and optimizer.momentum == 0.8
    assert optimizer.get_config()["learning_rate"]["class_name"] == "CosineDecay"
    assert type(riemannian(keras.optimizers.SGD(0.1))) is type(optimizer)


def test_an_architecture_trains_with_the_recipes_optimizer_unless_it_says_otherwise():
    recipe_optimizer = keras.optimizers.Adam(1e-3)
    assert MethodRef.parse("resnet-cifar").create().training_optimizer(recipe_optimizer) is recipe_optimizer


def test_run_trains_the_backbone_with_the_riemannian_step_through_the_core_loop():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8, 8, 1)).astype("float32"), rng.integers(0, 10, size=32)
    recipe = Recipe(optimizer="adam", learning_rate=0.01, epochs=1, batch_size=16, schedule="constant")
    spec = TASKS.get("digits").spec
    context = TrainContext(SimpleNamespace(spec=spec), Splits(x, y, x, y, x, y), recipe, 0, "smoke")
    artifact = MethodRef.parse("gcr:backbone=(resnet-cifar:depth=8,width=0.5)").create().run(context)
    assert type(artifact.model.optimizer).__name__ == "RiemannianAdam"
    assert orthonormality_error(artifact.model.get_layer("logits").kernel.numpy(), 8) < 1e-5


def test_resnet20_logits_become_a_subspace_head_counted_as_its_matmul():
    model = MethodRef.parse("gcr").create().build((8, 8, 1), 10)
    head = model.get_layer("logits")
    assert isinstance(head, GrassmannLogits) and head.kernel.shape == (64, 80)
    report = count_complexity(model)
    assert report.uncounted == []
    assert report.row("logits").macs == 64 * 80


def test_a_subspace_wider_than_the_features_is_refused():
    with pytest.raises(ValueError, match="subspace_dim 9 exceeds the feature size 8"):
        GrassmannLogits(3, 9)(np.zeros((1, 8), "float32"))


def test_tflite_converts_the_head_with_builtins_and_agrees_with_keras():
    model = MethodRef.parse("gcr:backbone=(resnet-cifar:depth=8,width=0.5)").create().build((8, 8, 1), 10)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-4, atol=1e-4)
