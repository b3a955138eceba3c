"""Epoch schedules: state kept in the model as weights, advanced by the callback from the recipe's epochs."""

import larq
import numpy as np
import pytest

from effbench.schedule import EpochSchedule, EpochScheduled, scheduled_modules
from effbench.tf import keras, tf


@larq.utils.register_keras_custom_object
class ProgressScaledSign(EpochScheduled, larq.quantizers._BaseQuantizer):
    """Test quantizer: sign(x) * (1 + progress), so the schedule is visible in the output."""

    precision = 1

    def build(self, input_shape):
        self.build_schedule()
        super().build(input_shape)

    def call(self, inputs):
        return larq.quantizers.ste_sign(inputs) * (1.0 + self.progress)


class EpochRecorder(keras.callbacks.Callback):
    """Reads the scheduled quantizer's state at the start of each batch, as the training step sees it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        module = scheduled_modules(self.model)[0]
        self.seen.append((float(module.schedule_epoch), float(module.schedule_epochs)))


def scheduled_model() -> keras.Model:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="float_in")(inputs)
    x = larq.layers.QuantDense(3, input_quantizer=ProgressScaledSign(), kernel_quantizer=ProgressScaledSign())(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))


def test_the_callback_finds_quantizers_nested_in_larq_layers():
    model = scheduled_model()
    assert len(scheduled_modules(model)) == 2


def test_fit_advances_every_scheduled_module_to_the_current_epoch_of_the_recipe():
    model = scheduled_model()
    model.compile("sgd", "mse")
    recorder = EpochRecorder()
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 2), np.float32)
    model.fit(x, y, batch_size=4, epochs=3, callbacks=[EpochSchedule(3), recorder], verbose=0)
    assert recorder.seen == [(0, 3), (0, 3), (1, 3), (1, 3), (2, 3), (2, 3)]
    assert all(float(m.progress) == pytest.approx(2 / 3) for m in scheduled_modules(model))


def test_a_compiled_function_reads_the_new_epoch_without_retracing():
    quantizer = ProgressScaledSign()
    quantizer.build(tf.TensorShape([2]))
    compiled = tf.function(quantizer)
    x = tf.constant([0.5, -2.0])
    np.testing.assert_allclose(compiled(x), [1.0, -1.0])
    quantizer.set_epoch(1, 2)
    np.testing.assert_allclose(compiled(x), [1.5, -1.5])
    assert compiled.experimental_get_tracing_count() == 1


def test_the_schedule_state_is_saved_with_the_model(tmp_path):
    model = scheduled_model()
    for module in scheduled_modules(model):
        module.set_epoch(4, 5)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert [float(m.progress) for m in scheduled_modules(reloaded)] == pytest.approx([0.8, 0.8])
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(reloaded(x), model(x), atol=1e-6)


@pytest.mark.parametrize("epoch,epochs", [(-1, 3), (3, 3), (0, 0)])
def test_an_epoch_outside_the_recipe_is_an_error(epoch, epochs):
    quantizer = ProgressScaledSign()
    quantizer.build(tf.TensorShape([2]))
    with pytest.raises(ValueError, match="expected 0 <= epoch < epochs"):
        quantizer.set_epoch(epoch, epochs)
