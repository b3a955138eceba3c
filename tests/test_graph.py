"""The core's graph rewrite: a model copied with layers swapped by a rule, its weights carried over by name."""

import numpy as np
import pytest

from effbench.graph import is_relu_layer, rewrite, transfer_weights
from effbench.tf import keras


def small_model() -> keras.Model:
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    x = keras.layers.ReLU(name="act")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


@keras.utils.register_keras_serializable(package="effbench_tests")
class ScaledDense(keras.layers.Dense):
    """A dense layer with one more weight (an output scale, initialised to 2) than the layer it replaces."""

    def build(self, input_shape):
        super().build(input_shape)
        self.scale = self.add_weight(name="scale", shape=(), initializer=keras.initializers.Constant(2.0))

    def call(self, inputs):
        return super().call(inputs) * self.scale


def sample(rows: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, 6)).astype(np.float32)


def test_layers_the_rule_keeps_are_fresh_copies_with_the_same_names_weights_and_outputs():
    model = small_model()
    copy = rewrite(model, lambda layer: None)
    assert [layer.name for layer in copy.layers] == [layer.name for layer in model.layers]
    assert all(copy.get_layer(layer.name) is not layer for layer in model.layers)
    for before, after in zip(model.weights, copy.weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    np.testing.assert_allclose(copy(sample()), model(sample()), atol=1e-6)


def test_a_replacement_with_extra_weights_starts_from_the_original_ones_and_keeps_its_own_initial_values():
    model = small_model()

    def rule(layer):
        return ScaledDense.from_config(layer.get_config()) if layer.name == "logits" else None

    copy = rewrite(model, rule)
    logits = copy.get_layer("logits")
    assert type(logits) is ScaledDense and float(logits.scale.numpy()) == 2.0
    np.testing.assert_array_equal(logits.kernel.numpy(), model.get_layer("logits").kernel.numpy())
    np.testing.assert_allclose(copy(sample()), 2.0 * model(sample()), atol=1e-5)


def test_a_rule_may_change_a_config_and_weight_shapes_with_its_own_transfer():
    """Channel pruning's shape of rewrite: 'hidden' keeps 3 of its 5 units, and 'logits' the matching inputs."""
    model = small_model()
    kept = [0, 2, 4]

    def rule(layer):
        if layer.name == "hidden":
            return keras.layers.Dense.from_config({**layer.get_config(), "units": len(kept)})
        return None

    def transfer(source, target):
        weights = source.get_weights()
        if source.name == "hidden":
            weights = [weights[0][:, kept], weights[1][kept]]
        elif source.name == "logits":
            weights = [weights[0][kept, :], weights[1]]
        target.set_weights(weights)

    pruned = rewrite(model, rule, transfer)
    assert pruned.get_layer("hidden").units == 3 and pruned.count_params() < model.count_params()
    inner = keras.Model(model.input, model.get_layer("act").output)(sample()).numpy()
    kernel, bias = model.get_layer("logits").get_weights()
    np.testing.assert_allclose(pruned(sample()), inner[:, kept] @ kernel[kept] + bias, atol=1e-5)


def test_a_replacement_must_keep_the_name_of_the_layer_it_replaces():
    def rule(layer):
        return keras.layers.Dense(3, name="renamed") if layer.name == "logits" else None

    with pytest.raises(ValueError, match="replaced layer 'logits' by a layer named 'renamed'"):
        rewrite(small_model(), rule)


def test_transfer_weights_names_the_weight_it_cannot_place():
    source = keras.layers.Dense(3, name="d")
    source.build((None, 4))
    target = keras.layers.Dense(3, use_bias=False, name="d")
    target.build((None, 4))
    with pytest.raises(ValueError, match=r"bias:0' of shape \(3,\) of layer 'd' has no counterpart in the rewritten"):
        transfer_weights(source, target)


class LearnedReLU(keras.layers.ReLU):
    """A subclass computes something else: it is not the ReLU the protocols rewrite."""


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        (keras.layers.ReLU(), True),
        (keras.layers.ReLU(max_value=6.0), True),
        (keras.layers.Activation("relu"), True),
        (keras.layers.Activation("relu6"), True),
        (keras.layers.Activation("tanh"), False),
        (keras.layers.LeakyReLU(), False),
        (keras.layers.Dense(3, activation="relu"), False),  # an argument, not a layer
        (LearnedReLU(), False),
    ],
)
def test_relu_layers_are_relu_and_relu6_layers_and_activations_of_exactly_those_classes(layer, expected):
    assert is_relu_layer(layer) is expected


def test_weights_of_a_model_loaded_from_a_file_transfer_by_their_name_within_the_layer(tmp_path):
    # A loaded model names some layers' weights without the layer prefix ('kernel:0', not 'dense_1/kernel:0').
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="second")(keras.layers.Dense(5, name="first")(inputs)))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    copy = rewrite(loaded, lambda layer: None)
    for original, copied in zip(model.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(original, copied)
