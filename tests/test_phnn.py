"""Specifications of ``phnn``: kernels that are sums of Kronecker products, 1/n of the parameters, the same MACs."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras, tf
from suites.architectures.phnn import PHConv2D, PHDense, kronecker_sum, ph_parameters
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tests.dense_checks import converted_ops
from tracks.complexity import count_complexity

BACKBONE = "resnet-cifar:depth=8"
INPUT = (8, 8, 3)


@pytest.fixture(scope="module")
def pair() -> tuple[keras.Model, keras.Model]:
    backbone = MethodRef.parse(BACKBONE).create().build(INPUT, 10)
    return backbone, MethodRef.parse(f"phnn:backbone=({BACKBONE})").create().rebuilt(backbone)


def test_kernel_is_the_sum_of_kronecker_products_at_every_position():
    rng = np.random.default_rng(0)
    algebra, blocks = rng.normal(size=(3, 3, 3)), rng.normal(size=(3, 2, 2, 4, 5))
    kernel = kronecker_sum(tf.constant(algebra), tf.constant(blocks)).numpy()
    assert kernel.shape == (2, 2, 12, 15)
    for h in range(2):
        for w in range(2):
            expected = sum(np.kron(algebra[i], blocks[i, h, w]) for i in range(3))
            np.testing.assert_allclose(kernel[h, w], expected, rtol=1e-6, atol=1e-6)
    dense = kronecker_sum(tf.constant(algebra), tf.constant(blocks[:, 0, 0])).numpy()
    np.testing.assert_allclose(dense, sum(np.kron(algebra[i], blocks[i, 0, 0]) for i in range(3)), atol=1e-6)


@pytest.mark.parametrize("strides,padding", [((1, 1), "same"), ((2, 2), "same"), ((2, 1), "valid")])
def test_ph_conv_is_the_conv_with_its_kronecker_kernel(strides, padding):
    x = np.random.default_rng(0).normal(size=(2, 7, 8, 8)).astype("float32")
    layer = PHConv2D(4, 12, (3, 3), strides, padding, use_bias=True)
    layer.build(x.shape)
    layer.bias.assign(np.linspace(-1, 1, 12).astype("float32"))
    kernel = kronecker_sum(layer.algebra, layer.blocks)
    expected = tf.nn.conv2d(x, kernel, strides=[1, *strides, 1], padding=padding.upper()) + np.linspace(-1, 1, 12)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-4)


def test_parameters_are_n_cubed_plus_the_full_kernel_over_n():
    conv, dense = PHConv2D(4, 32, (3, 3), use_bias=False), PHDense(8, 64)
    conv.build((None, 8, 8, 16))
    dense.build((None, 40))
    assert conv.count_params() == ph_parameters(4, (3, 3, 16, 32)) == 4**3 + 3 * 3 * 16 * 32 // 4
    assert dense.count_params() == 8**3 + 40 * 64 // 8 + 64


def test_initial_kernel_has_the_replaced_initializers_variance():
    layer = PHConv2D(4, 64, (3, 3), use_bias=False)
    layer.build((None, 8, 8, 64))
    glorot = 2 / (9 * 64 + 9 * 64)
    assert 0.75 < float(tf.math.reduce_variance(layer.kernel())) / glorot < 1.33


def test_channels_n_does_not_divide_are_refused_by_the_layer_and_kept_by_the_rewrite():
    with pytest.raises(ValueError, match="n=3"):
        PHConv2D(3, 16, (3, 3)).build((None, 8, 8, 16))
    model = MethodRef.parse(f"phnn:backbone=({BACKBONE}),n=3").create().build(INPUT, 10)
    assert not any(isinstance(layer, PHConv2D) for layer in model.layers)


def test_every_conv_but_the_stem_is_hypercomplex_with_the_same_macs_and_a_quarter_of_the_weights(pair):
    backbone, model = pair
    replaced = [layer for layer in model.layers if isinstance(layer, PHConv2D)]
    # ResNet-8: six 3x3 convs in the blocks and two 1x1 projections; the stem reads 3 channels.
    assert len(replaced) == 8 and type(model.layers[1]) is keras.layers.Conv2D
    ours, theirs = count_complexity(model), count_complexity(backbone)
    assert ours.macs == theirs.macs
    for layer in replaced:
        original = backbone.get_layer(layer.name)
        assert layer.count_params() == ph_parameters(4, original.kernel.shape)
        assert ours.row(layer.name).macs == theirs.row(layer.name).macs
    saved = sum(backbone.get_layer(layer.name).count_params() - layer.count_params() for layer in replaced)
    assert theirs.params - ours.params == saved
    assert 0.7 < saved / sum(backbone.get_layer(layer.name).count_params() for layer in replaced) < 0.75


def test_an_mlp_gets_hypercomplex_hidden_layers_and_keeps_its_logits():
    model = MethodRef.parse("phnn:backbone=mlp").create().build((40,), 10)
    assert [type(layer) for layer in model.layers[2:]] == [PHDense, PHDense, keras.layers.Dense]
    assert model.get_layer("logits").count_params() == 256 * 10 + 10


def test_tflite_folds_the_kronecker_sum_into_the_backbones_constant_kernels(pair):
    backbone, model = pair
    _, ours = converted_ops(model)
    _, theirs = converted_ops(backbone)
    assert collections.Counter(ours) == collections.Counter(theirs)
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    model = MethodRef.parse(f"phnn:backbone=({BACKBONE})").create().build(INPUT, 10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *INPUT)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert losses[-1] < 0.8 * losses[0]
