"""Specifications of ``snnk``: random ReLU features whose dot product is the arc-cosine kernel, as a dense layer."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.snnk import SNNKDense, relu_features
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tests.dense_checks import converted_ops
from tracks.complexity import count_complexity

INPUT = (40,)


def arc_cosine(x: np.ndarray, w: np.ndarray) -> float:
    """E_g[relu(g.x) relu(g.w)], g ~ N(0, I): ||x|| ||w|| (sin t + (pi - t) cos t) / (2 pi)."""
    norms = np.linalg.norm(x) * np.linalg.norm(w)
    angle = np.arccos(np.clip(x @ w / norms, -1.0, 1.0))
    return float(norms * (np.sin(angle) + (np.pi - angle) * np.cos(angle)) / (2 * np.pi))


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return MethodRef.parse("snnk:features=24").create().build(INPUT, 10)


def test_feature_product_estimates_the_relu_kernel_and_more_features_estimate_it_better():
    rng = np.random.default_rng(0)
    pairs = [rng.normal(size=(2, 16)).astype("float32") for _ in range(20)]

    def mean_relative_error(features: int) -> float:
        projection = rng.normal(size=(16, features)).astype("float32")
        errors = []
        for x, w in pairs:
            x_features, w_features = relu_features(np.stack([x, w]), projection).numpy()
            estimate = float(x_features @ w_features)
            errors.append(abs(estimate - arc_cosine(x, w)) / arc_cosine(x, w))
        return float(np.mean(errors))

    coarse, fine = mean_relative_error(16), mean_relative_error(16_384)
    assert fine < 0.05 and fine < coarse / 4  # Monte Carlo: the error falls as 1 / sqrt(m)


def test_layer_is_the_dot_product_of_the_inputs_features_with_trained_weights_plus_bias():
    x = np.random.default_rng(0).normal(size=(3, 7)).astype("float32")
    layer = SNNKDense(5, 11)
    layer.build(x.shape)
    layer.bias.assign(np.arange(5, dtype="float32"))
    projection, weights = layer.projection.numpy(), layer.feature_weights.numpy()
    features = np.maximum(x @ projection, 0) / np.sqrt(11)
    np.testing.assert_allclose(layer(x), features @ weights + np.arange(5), rtol=1e-5, atol=1e-5)
    # The projection is a fixed N(0, 1) draw; the weights start as the features of a kernel, all >= 0.
    assert not layer.projection.trainable and 0.7 < projection.std() < 1.3 and (weights >= 0).all()


def test_hidden_dense_layers_become_snnk_layers_and_the_logits_stay(model):
    kinds = [type(layer) for layer in model.layers]
    assert kinds.count(SNNKDense) == 2 and type(model.get_layer("logits")) is keras.layers.Dense
    first, second = (layer for layer in model.layers if isinstance(layer, SNNKDense))
    # Trainable: features x units and the bias; the projection d x features is fixed.
    assert [w.shape for w in first.trainable_weights] == [(24, 256), (256,)]
    assert first.projection.shape == (40, 24) and second.projection.shape == (256, 24)


def test_complexity_counts_the_projection_and_the_feature_weights(model):
    report = count_complexity(model)
    # By position, not by name: Keras numbers layer names per process, so they depend on what ran before.
    kernel_layers = [layer for layer in model.layers if isinstance(layer, SNNKDense)]
    for layer, inputs in zip(kernel_layers, (40, 256), strict=True):
        assert report.row(layer.name).macs == inputs * 24 + 24 * 256
    assert report.macs == (40 + 256) * 24 + 2 * 24 * 256 + 256 * 10
    assert report.params == model.count_params() == (40 + 256) * 24 + 2 * (24 * 256 + 256) + 2570


def test_converts_to_fully_connected_builtins_and_matches_keras(model):
    _, ops = converted_ops(model)
    assert set(ops) <= {"FULLY_CONNECTED", "RESHAPE", "RELU"}
    assert collections.Counter(ops)["FULLY_CONNECTED"] == 5  # two per SNNK layer, the logits
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-4, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    model = MethodRef.parse("snnk:features=24").create().build(INPUT, 10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, *INPUT)).astype("float32"), rng.integers(0, 10, size=32)
    losses = losses_over_steps(model, x, y, steps=8)
    assert losses[-1] < 0.7 * losses[0]
