"""Specifications of ``evonorm``: the B0 / S0 layers against their formulas, and the BN-ReLU rewrite."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.evonorm import EvoNorm

EPS = 1e-5


def feature_map(batch: int = 4, channels: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 2.0, size=(batch, 5, 5, channels)).astype("float32")


def built(layer: EvoNorm, x: np.ndarray, seed: int = 1) -> EvoNorm:
    layer.build(x.shape)
    rng = np.random.default_rng(seed)
    for weight in layer.weights:  # away from the initial ones and zeros, so every term matters
        weight.assign(rng.uniform(0.5, 1.5, size=weight.shape).astype("float32"))
    return layer


def test_b0_at_inference_is_its_formula_with_the_moving_variance():
    x = feature_map()
    layer = built(EvoNorm("b0"), x)
    gamma, beta, v, moving = (w.numpy() for w in (layer.gamma, layer.beta, layer.v, layer.moving_variance))
    instance_std = np.sqrt(x.var(axis=(1, 2), keepdims=True) + EPS)
    expected = x / np.maximum(np.sqrt(moving + EPS), v * x + instance_std) * gamma + beta
    np.testing.assert_allclose(layer(x, training=False), expected, rtol=1e-5, atol=1e-5)


def test_b0_in_training_uses_the_batch_variance_and_moves_the_average():
    x = feature_map()
    layer = built(EvoNorm("b0", momentum=0.9), x)
    before = layer.moving_variance.numpy()
    gamma, beta, v = (w.numpy() for w in (layer.gamma, layer.beta, layer.v))
    batch_std = np.sqrt(x.var(axis=(0, 1, 2)) + EPS)
    instance_std = np.sqrt(x.var(axis=(1, 2), keepdims=True) + EPS)
    expected = x / np.maximum(batch_std, v * x + instance_std) * gamma + beta
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance, 0.9 * before + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize("channels,groups", [(8, 4), (48, 24), (20, 20)])
def test_s0_is_its_formula_over_channel_groups(channels, groups):
    # Official code: the group count drops from 32 until it divides the channels.
    x = feature_map(channels=channels)
    layer = built(EvoNorm("s0", groups=32 if channels > 8 else 4), x)
    assert layer.channel_groups == groups
    gamma, beta, v = (w.numpy() for w in (layer.gamma, layer.beta, layer.v))
    grouped = x.reshape(*x.shape[:3], groups, channels // groups)
    group_std = np.sqrt(grouped.var(axis=(1, 2, 4), keepdims=True) + EPS)
    group_std = np.broadcast_to(group_std, grouped.shape).reshape(x.shape)
    sigmoid = 1.0 / (1.0 + np.exp(-v * x))
    np.testing.assert_allclose(layer(x, training=True), x * sigmoid / group_std * gamma + beta, rtol=1e-4, atol=1e-5)


def test_s0_is_batch_independent_and_b0_is_not():
    x = feature_map(batch=8)
    for variant, independent in (("s0", True), ("b0", False)):
        layer = built(EvoNorm(variant), x)
        alone = layer(x[:1], training=True).numpy()
        in_batch = layer(x, training=True).numpy()[:1]
        assert np.allclose(alone, in_batch, atol=1e-5) == independent, variant


def test_without_nonlinearity_it_is_the_affine_alone():
    x = feature_map()
    layer = built(EvoNorm("b0", nonlinearity=False), x)
    assert not hasattr(layer, "v") and not hasattr(layer, "moving_variance")
    np.testing.assert_allclose(layer(x), x * layer.gamma.numpy() + layer.beta.numpy(), rtol=1e-6)


def test_bad_variant_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="b0, s0"):
        EvoNorm("b1")


@pytest.mark.parametrize("variant", ["b0", "s0"])
def test_resnet20_bn_relu_pairs_become_one_evonorm_and_other_bns_affine(variant):
    model = MethodRef.parse(f"evonorm:variant={variant}").create().build((8, 8, 1), 10)
    norms = [layer for layer in model.layers if isinstance(layer, EvoNorm)]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    # ResNet-20: 21 BNs; the stem's and each block's first are followed by a ReLU (10); the blocks' second
    # BNs (9) and the two projection shortcuts' BNs feed an add.
    assert len(norms) == 21 and sum(layer.nonlinearity for layer in norms) == 10
    assert {layer.variant for layer in norms} == {variant}
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    after_adds = [isinstance(layer.inbound_nodes[0].inbound_layers, keras.layers.Add) for layer in relus]
    assert len(relus) == 9 and all(after_adds)
