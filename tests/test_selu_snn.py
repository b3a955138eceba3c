"""Specifications of ``selu-snn``: a backbone rebuilt without batch norm, self-normalizing at initialisation."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras


def build(reference: str, input_shape: tuple[int, ...]) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, 10)


def activation_stats(model: keras.Model, layer: str, input_shape: tuple[int, ...]) -> tuple[float, float]:
    x = np.random.default_rng(0).normal(size=(512, *input_shape)).astype("float32")
    values = np.asarray(keras.Model(model.inputs, model.get_layer(layer).output)(x))
    return float(values.mean()), float(values.var())


def test_deep_mlp_keeps_zero_mean_unit_variance_without_normalization():
    # The paper's fixed point: SELU with LeCun-normal weights maps (0, 1) to itself, layer after layer.
    model = build("selu-snn:backbone=(mlp:layers=8,units=512)", (64,))
    last_hidden = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)][-2]
    mean, variance = activation_stats(model, last_hidden, (64,))
    assert abs(mean) < 0.1 and 0.85 < variance < 1.15


def test_the_relu_twin_drifts_where_selu_does_not():
    relu = build("mlp:layers=8,units=512", (64,))
    last_hidden = [layer.name for layer in relu.layers if isinstance(layer, keras.layers.Dense)][-2]
    mean, variance = activation_stats(relu, last_hidden, (64,))
    assert mean > 0.1 or not 0.85 < variance < 1.15


def test_mobilenet_depthwise_kernels_keep_the_signal():
    # Keras's fan-in of a depthwise kernel counts every channel; LeCun's counts the window only.
    model = build("selu-snn:backbone=(mobilenetv2:alpha=0.35)", (32, 32, 3))
    last = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Activation)][-1]
    _, variance = activation_stats(model, last, (32, 32, 3))
    assert 0.3 < variance < 3.0


@pytest.mark.parametrize("backbone", ["resnet-cifar", "(mobilenetv2:alpha=0.35)", "(mlp:dropout=0.1)"])
def test_no_batch_norm_or_rectifier_is_left(backbone):
    model = build(f"selu-snn:backbone={backbone}", (32, 32, 3))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    activations = {layer.get_config().get("activation") for layer in model.layers} - {None}
    assert activations <= {"selu", "linear"} and "selu" in activations
    assert not any(isinstance(layer, keras.layers.ReLU) for layer in model.layers)
    weighted = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert all(layer.use_bias for layer in weighted)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert all(isinstance(layer, keras.layers.AlphaDropout) for layer in dropouts)


def test_nested_backbone_reference_gives_a_valid_model_name():
    model = build("selu-snn:backbone=(mobilenetv2:alpha=0.35)", (32, 32, 3))
    assert model.name == "selu-snn-backbonemobilenetv2_alpha_0.35"
