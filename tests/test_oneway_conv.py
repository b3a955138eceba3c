"""Specifications of ``oneway-conv``: the one-way pair is a constrained k x k conv, at its closed-form cost."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras, tf
from suites.architectures.oneway_conv import OneWayConv2D
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

BACKBONE = "resnet-cifar:depth=8"
INPUT = (8, 8, 3)


def build(reference: str) -> keras.Model:
    return MethodRef.parse(reference).create().build(INPUT, 10)


@pytest.fixture(scope="module")
def pair() -> tuple[keras.Model, keras.Model]:
    # The rewrite keeps the backbone's layer names: compare layer by layer.
    backbone = build(BACKBONE)
    return backbone, MethodRef.parse(f"oneway-conv:backbone=({BACKBONE})").create().rebuilt(backbone)


@pytest.mark.parametrize("strides,padding", [((1, 1), "same"), ((2, 2), "same"), ((2, 1), "valid")])
def test_the_pair_is_the_kxk_conv_whose_kernel_is_the_one_way_product(strides, padding):
    x = np.random.default_rng(0).normal(size=(2, 7, 8, 4)).astype("float32")
    layer = OneWayConv2D(5, (3, 3), 6, strides=strides, padding=padding, use_bias=False)
    out = layer(x).numpy()
    # W[i, j, a, c] = sum_m V[i, a, m] H[j, m, c]
    kernel = np.einsum("iam,jmc->ijac", layer.vertical.numpy()[:, 0], layer.horizontal.numpy()[0])
    dense = tf.nn.conv2d(x, kernel, strides=[1, *strides, 1], padding=padding.upper()).numpy()
    np.testing.assert_allclose(out, dense, rtol=1e-4, atol=1e-5)


def closed_form_macs(layer: keras.layers.Layer) -> int:
    """k C_in C_mid H_out W_in + k C_mid C_out H_out W_out, with C_mid = C_out, from a conv's shapes."""
    (k, _), (_, _, w_in, c_in), (_, h_out, w_out, c_out) = layer.kernel_size, layer.input_shape, layer.output_shape
    return k * c_in * c_out * h_out * w_in + k * c_out * c_out * h_out * w_out


def test_each_replaced_conv_has_the_closed_form_params_and_macs(pair):
    backbone, model = pair
    report = count_complexity(model)
    replaced = [layer for layer in model.layers if isinstance(layer, OneWayConv2D)]
    # ResNet-8: the stem and the two 3x3 convs of each of its 3 blocks.
    assert len(replaced) == 7
    for layer in replaced:
        original = backbone.get_layer(layer.name)
        (k, _), c_in, c_out = original.kernel_size, original.input_shape[-1], original.filters
        assert layer.output_shape == original.output_shape
        assert layer.count_params() == k * c_in * c_out + k * c_out * c_out  # C_mid = C_out, no bias
        assert report.row(layer.name).macs == closed_form_macs(original)


def test_square_layers_cost_two_over_k_of_the_original(pair):
    backbone, model = pair
    ours, theirs = count_complexity(model), count_complexity(backbone)
    square = [
        layer for layer in model.layers if isinstance(layer, OneWayConv2D) and layer.input_shape == layer.output_shape
    ]
    assert len(square) == 4  # stage 1's two convs, the second conv of stages 2 and 3
    for layer in square:
        assert ours.row(layer.name).macs * 3 == theirs.row(layer.name).macs * 2


def test_whole_model_macs_are_the_backbones_with_each_kxk_conv_at_its_closed_form(pair):
    backbone, model = pair
    ours, theirs = count_complexity(model), count_complexity(backbone)
    two_way = [layer for layer in backbone.layers if type(layer) is keras.layers.Conv2D and layer.kernel_size == (3, 3)]
    expected = theirs.macs - sum(theirs.row(layer.name).macs - closed_form_macs(layer) for layer in two_way)
    assert ours.macs == expected
    # Not the 2/3 of square layers: the stem (3 -> 16) and the stride-2 convs (W_in = 2 W_out) save less.
    assert 0.8 < ours.macs / theirs.macs < 0.9
    assert ours.params_trainable < theirs.params_trainable


def test_output_shape_and_pointwise_convs_are_kept(pair):
    backbone, model = pair
    assert model.output_shape == backbone.output_shape
    pointwise = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)
    ]
    assert len(pointwise) == 2  # the projection shortcuts of stages 2 and 3
    for layer in pointwise:
        kept = model.get_layer(layer.name)
        assert type(kept) is keras.layers.Conv2D and kept.get_config()["strides"] == layer.get_config()["strides"]


def test_mobilenet_depthwise_and_pointwise_convs_are_untouched():
    model = MethodRef.parse("oneway-conv:backbone=(mobilenetv2:alpha=0.35)").create().build((16, 16, 3), 10)
    replaced = [layer for layer in model.layers if isinstance(layer, OneWayConv2D)]
    assert [layer.kernel_size for layer in replaced] == [(3, 3)]  # the stem only
    assert sum(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in model.layers) == 17


def test_converts_to_tflite_builtins_and_matches_keras(pair):
    _, model = pair
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    model = build(f"oneway-conv:backbone=({BACKBONE})")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *INPUT)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert losses[-1] < 0.8 * losses[0]
