"""Binary layers with a learned output scale, and how binarize builds and fills custom binary layers."""

import larq
import numpy as np
import pytest

from effbench.tf import keras, tf
from suites.binarization._layers import ScaledQuantConv2D, ScaledQuantDense, output_scaled_layer
from suites.binarization.operators import binarize


def float_model():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", use_bias=False, name="inner")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(7, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def scaled(output_scale):
    return binarize(
        float_model(), "ste_sign", "ste_sign", binary_layer=lambda cls, cfg: output_scaled_layer(cls, cfg, output_scale)
    )


def test_channel_scale_is_one_factor_per_output_channel_and_rank1_adds_height_and_width():
    channel, rank1 = scaled("channel"), scaled("rank1")
    assert isinstance(channel.get_layer("inner"), ScaledQuantConv2D)
    assert [tuple(w.shape) for w in channel.get_layer("inner").scale_factors] == [(5,)]
    assert [tuple(w.shape) for w in rank1.get_layer("inner").scale_factors] == [(5,), (3, 1, 1), (1, 3, 1)]
    # A dense output has channels only.
    assert [tuple(w.shape) for w in rank1.get_layer("hidden").scale_factors] == [(7,)]


def test_the_scale_multiplies_the_binary_product_before_the_bias_and_activation():
    model = scaled("channel")
    layer = model.get_layer("hidden")
    assert isinstance(layer, ScaledQuantDense) and layer.get_config()["activation"] == "hard_tanh"
    layer.scale_factors[0].assign(np.arange(1, 8, dtype=np.float32))
    layer.bias.assign(np.full(7, 0.25, np.float32))
    x = tf.constant(np.random.default_rng(0).normal(size=(2, layer.kernel.shape[0])).astype(np.float32))
    product = tf.matmul(larq.quantizers.ste_sign(x), larq.quantizers.ste_sign(tf.convert_to_tensor(layer.kernel)))
    expected = np.clip((product.numpy() + 0.25) * np.arange(1, 8), -1, 1)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6)


def test_rank1_scale_is_the_outer_product_and_learns():
    layer = scaled("rank1").get_layer("inner")
    o, h, w = (np.array(v, np.float32) for v in ([1, 2, 3, 4, 5], [[[1]], [[2]], [[3]]], [[[1], [10], [100]]]))
    for factor, value in zip(layer.scale_factors, (o, h, w), strict=True):
        factor.assign(value)
    np.testing.assert_allclose(layer.output_scale_tensor().numpy(), h * w * o)
    x = tf.random.normal((2, 6, 6, 4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    assert all(np.any(g.numpy() != 0) for g in tape.gradient(loss, layer.scale_factors))


@pytest.mark.parametrize("output_scale", ["channel", "rank1"])
def test_scaled_models_start_from_the_float_weights_and_save_and_reload(output_scale, tmp_path):
    source = float_model()
    model = binarize(source, "ste_sign", "ste_sign",
                     binary_layer=lambda cls, cfg: output_scaled_layer(cls, cfg, output_scale))  # fmt: skip
    np.testing.assert_array_equal(model.get_layer("inner").kernel, source.get_layer("inner").kernel)
    model.get_layer("inner").scale_factors[0].assign(np.linspace(0.5, 2, 5).astype(np.float32))
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 1)).astype(np.float32)
    np.testing.assert_allclose(reloaded(x), model(x), atol=1e-6)
    assert type(reloaded.get_layer("inner")) is ScaledQuantConv2D


def test_unknown_scales_and_layers_without_a_scaled_counterpart_are_errors():
    with pytest.raises(ValueError, match="output_scale is 'row'"):
        ScaledQuantDense(3, output_scale="row")
    with pytest.raises(ValueError, match="not QuantDepthwiseConv2D"):
        output_scaled_layer(larq.layers.QuantDepthwiseConv2D, {"kernel_size": 3}, "channel")
