"""Specifications of ``bcn-ws``: weight-standardized convs and batch-channel norms, against their formulas."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras, tf
from suites.architectures.bcn_ws import BatchChannelNormalization, WSConv2D, WSDepthwiseConv2D
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tests.dense_checks import converted_ops
from tracks.complexity import count_complexity

BACKBONE = "resnet-cifar:depth=8"
INPUT = (8, 8, 3)


def numpy_standardized(kernel: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    centred = kernel - kernel.mean(axis=axes, keepdims=True)
    return centred / (np.std(kernel, axis=axes, ddof=1, keepdims=True) + 1e-5)


def feature_map(batch: int = 4, channels: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 3.0, size=(batch, 1, 1, channels))
    return (offsets + rng.uniform(0.5, 4.0, size=(batch, 1, 1, channels)) * rng.normal(size=(batch, 5, 5, channels))
            ).astype("float32")  # fmt: skip


@pytest.fixture(scope="module")
def pair() -> tuple[keras.Model, keras.Model]:
    backbone = MethodRef.parse(BACKBONE).create().build(INPUT, 10)
    return backbone, MethodRef.parse(f"bcn-ws:backbone=({BACKBONE})").create().rebuilt(backbone)


def test_ws_conv_is_the_conv_with_each_filter_standardized_over_its_fan_in():
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    layer = WSConv2D(5, 3, padding="same", use_bias=False)
    out = layer(x).numpy()
    kernel = numpy_standardized(layer.kernel.numpy(), (0, 1, 2))
    assert np.allclose(kernel.mean(axis=(0, 1, 2)), 0, atol=1e-6)
    assert np.allclose(kernel.reshape(-1, 5).std(axis=0, ddof=1), 1, atol=1e-4)
    expected = tf.nn.conv2d(x, kernel, strides=1, padding="SAME").numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # Not the raw kernel's convolution: standardizing changes the output.
    assert not np.allclose(out, tf.nn.conv2d(x, layer.kernel, strides=1, padding="SAME").numpy(), atol=1e-2)


def test_ws_depthwise_conv_standardizes_each_channels_window():
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    layer = WSDepthwiseConv2D(3, strides=2, padding="same", use_bias=False)
    out = layer(x).numpy()
    kernel = numpy_standardized(layer.depthwise_kernel.numpy(), (0, 1))
    expected = tf.nn.depthwise_conv2d(x, kernel, strides=[1, 2, 2, 1], padding="SAME").numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_bcn_is_a_batch_norm_then_a_group_norm_with_a_per_group_affine(training):
    x = feature_map()
    layer, plain = BatchChannelNormalization(groups=4, momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    layer.build(x.shape)
    plain.build(x.shape)
    rng = np.random.default_rng(1)
    for ours, theirs in zip(layer.batch_norm.weights, plain.weights, strict=True):
        value = rng.uniform(0.5, 1.5, size=ours.shape).astype("float32")
        ours.assign(value)
        theirs.assign(value)
    gamma, beta = rng.uniform(0.5, 2.0, size=(4, 1)), rng.normal(size=(4, 1))
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    z = plain(x, training=training).numpy().reshape(4, 5, 5, 4, 2)
    mean, variance = z.mean(axis=(1, 2, 4), keepdims=True), z.var(axis=(1, 2, 4), keepdims=True)
    expected = ((z - mean) / np.sqrt(variance + 1e-5) * gamma + beta).reshape(x.shape)
    np.testing.assert_allclose(layer(x, training=training), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.batch_norm.moving_mean, plain.moving_mean, atol=1e-6)


def test_group_count_drops_until_it_divides_the_channels():
    layer = BatchChannelNormalization(groups=32)
    layer(feature_map(channels=24))
    assert layer.channel_groups == 24 and layer.gamma.shape == (24, 1)


def test_every_bn_becomes_bcn_and_every_conv_weight_standardized(pair):
    backbone, model = pair
    counts = collections.Counter(type(layer) for layer in model.layers)
    # ResNet-8: 7 3x3 convs, 2 projection 1x1 convs, each followed by its BN.
    assert counts[WSConv2D] == 9 and counts[BatchChannelNormalization] == 9
    assert counts[keras.layers.Conv2D] == counts[keras.layers.BatchNormalization] == 0
    ours, theirs = count_complexity(model), count_complexity(backbone)
    # Same MACs; the only extra parameters are each BCN's per-group gamma and beta (16, 32 or 64 channels:
    # 16 or 32 groups).
    groups = [layer.channel_groups for layer in model.layers if isinstance(layer, BatchChannelNormalization)]
    assert ours.macs == theirs.macs
    assert ours.params - theirs.params == 2 * sum(groups) and set(groups) == {16, 32}


def test_mobilenet_depthwise_convs_are_standardized_too():
    model = MethodRef.parse("bcn-ws:backbone=(mobilenetv2:alpha=0.35)").create().build((16, 16, 3), 10)
    assert sum(isinstance(layer, WSDepthwiseConv2D) for layer in model.layers) == 17
    assert not any(type(layer) is keras.layers.DepthwiseConv2D for layer in model.layers)


def test_a_conv_with_a_single_weight_per_filter_is_kept():
    inputs = keras.Input((4, 4, 1))
    backbone = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="pointwise")(inputs))
    method = MethodRef.parse("bcn-ws").create()
    assert method.replace(backbone.get_layer("pointwise")) is None


def test_tflite_folds_ws_into_constant_kernels_and_keeps_the_channel_norms_means(pair):
    _, model = pair
    _, ops = converted_ops(model)
    counts = collections.Counter(ops)
    assert counts["CONV_2D"] == 9 and not any(op.startswith(("FLEX", "CUSTOM")) for op in ops)
    # Two MEANs per BCN (the group's mean and variance), one for the global pooling; none for WS.
    assert counts["MEAN"] == 2 * 9 + 1


def test_converts_to_tflite_builtins_and_matches_keras(pair):
    _, model = pair
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    model = MethodRef.parse(f"bcn-ws:backbone=({BACKBONE})").create().build(INPUT, 10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *INPUT)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert losses[-1] < 0.8 * losses[0]
