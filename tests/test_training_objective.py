"""Specifications of :class:`effbench.training.TrainingObjective`, the base of the training-only wrappers."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.tf import keras, tf
from effbench.training import TrainingObjective


class AuxiliaryHead(TrainingObjective):
    """Trains a deployed model and a head outside it on the sum of both heads' losses."""

    tracked = "both_heads"

    def __init__(self, deployed: keras.Model, auxiliary: keras.layers.Layer):
        super().__init__(deployed)
        self.auxiliary = auxiliary

    def objective(self, x, y, training):
        prediction = self.deployed(x, training=training)
        both = self.supervised_loss(y, prediction) + self.supervised_loss(y, self.auxiliary(x))
        return prediction, both, both


def wrapper() -> tuple[AuxiliaryHead, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    deployed = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    trainer = AuxiliaryHead(deployed, keras.layers.Dense(3))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss, metrics=["accuracy"], run_eagerly=True)
    rng = np.random.default_rng(0)
    return trainer, rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, size=16)


def test_it_predicts_and_logs_loss_and_metrics_as_the_deployed_model_and_its_own_term_beside_them():
    trainer, x, y = wrapper()
    logs = trainer.evaluate(x, y, verbose=0, return_dict=True)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    deployed_loss = float(cross_entropy(y, trainer.deployed(x)))
    np.testing.assert_allclose(trainer.predict(x, verbose=0), trainer.deployed(x).numpy(), rtol=1e-6)
    assert logs["loss"] == pytest.approx(deployed_loss, rel=1e-5)
    assert logs["both_heads"] == pytest.approx(deployed_loss + float(cross_entropy(y, trainer.auxiliary(x))), rel=1e-5)
    assert logs["accuracy"] == pytest.approx(np.mean(np.argmax(trainer.deployed(x), -1) == y))


def test_a_step_trains_the_layers_outside_the_deployed_model_too_and_fit_logs_the_term_in_validation():
    trainer, x, y = wrapper()
    trainer(x), trainer.auxiliary(x)
    before = [tf.identity(w) for w in (*trainer.deployed.trainable_weights, *trainer.auxiliary.trainable_weights)]
    history = trainer.fit(x, y, epochs=3, validation_data=(x, y), verbose=0).history
    after = [*trainer.deployed.trainable_weights, *trainer.auxiliary.trainable_weights]
    assert all(np.abs(a.numpy() - b.numpy()).max() > 1e-4 for a, b in zip(after, before, strict=True))
    assert {"loss", "both_heads", "accuracy", "val_loss", "val_both_heads", "val_accuracy"} <= set(history)
    assert history["both_heads"][-1] < history["both_heads"][0]
