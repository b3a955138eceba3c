"""Specifications of ``ibn-net``: the IBN-a layer against its halves, and which BNs of a backbone it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.graph import rewrite
from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.ibn_net import IBN
from tests.architecture_checks import tflite_outputs
from tracks.complexity import count_complexity

CHANNELS = 6
HALF = 3


def feature_map(batch: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Each sample and channel its own offset and scale, so per-sample and per-batch statistics differ.
    offsets = rng.normal(0.0, 3.0, size=(batch, 1, 1, CHANNELS))
    scales = rng.uniform(0.5, 4.0, size=(batch, 1, 1, CHANNELS))
    return (offsets + scales * rng.normal(size=(batch, 5, 5, CHANNELS))).astype("float32")


def ibn_models(reference: str, input_shape: tuple[int, ...] = (16, 16, 3)) -> list[IBN]:
    model = MethodRef.parse(reference).create().build(input_shape, 10)
    return [layer for layer in model.layers if isinstance(layer, IBN)]


def test_instance_half_is_normalized_per_sample_and_channel_at_init():
    x = feature_map()
    out = IBN()(x, training=True).numpy()[..., :HALF]
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.var(axis=(1, 2)), 1.0, atol=1e-3)  # eps 1e-5 against variances >= 0.25


def test_instance_half_is_its_formula_with_a_learned_affine():
    x = feature_map()
    layer = IBN()
    layer.build(x.shape)
    gamma, beta = np.array([0.5, 2.0, -1.0]), np.array([1.0, -3.0, 0.25])
    layer.instance_norm.gamma.assign(gamma)
    layer.instance_norm.beta.assign(beta)
    part = x[..., :HALF]
    normalized = (part - part.mean(axis=(1, 2), keepdims=True)) / np.sqrt(part.var(axis=(1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(layer(x, training=False)[..., :HALF], normalized * gamma + beta, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_batch_half_is_a_plain_batch_norm_of_those_channels(training):
    x = feature_map()
    layer, plain = IBN(momentum=0.9, epsilon=1e-3), keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    layer.build(x.shape)
    plain.build((*x.shape[:-1], CHANNELS - HALF))
    rng = np.random.default_rng(2)
    for ours, theirs in zip(layer.batch_norm.weights, plain.weights, strict=True):
        value = rng.uniform(0.5, 1.5, size=ours.shape).astype("float32")
        ours.assign(value)
        theirs.assign(value)
    np.testing.assert_allclose(
        layer(x, training=training)[..., HALF:], plain(x[..., HALF:], training=training), atol=1e-5
    )
    np.testing.assert_allclose(layer.batch_norm.moving_mean, plain.moving_mean, atol=1e-6)


def test_instance_half_is_batch_independent_and_batch_half_is_not():
    x = feature_map(batch=8)
    layer = IBN()
    alone, in_batch = layer(x[:1], training=True).numpy()[0], layer(x, training=True).numpy()[0]
    np.testing.assert_allclose(alone[..., :HALF], in_batch[..., :HALF], atol=1e-5)
    assert not np.allclose(alone[..., HALF:], in_batch[..., HALF:], atol=1e-2)


def test_odd_channel_count_splits_as_the_official_int_of_half():
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 5)).astype("float32")
    layer = IBN()
    layer(x)
    assert layer.half == 2 and layer.instance_norm.gamma.shape == (2,) and layer.batch_norm.gamma.shape == (3,)


@pytest.mark.parametrize(
    "reference,counts",
    [
        # ResNet-20: conv1's BN of each of the 3 blocks per stage; the stem, conv2 and projection BNs stay.
        ("ibn-net", {16: 3, 8: 3}),
        ("ibn-net:stages=3", {16: 3, 8: 3, 4: 3}),
        ("ibn-net:backbone=(resnet-cifar:shortcut=A)", {16: 3, 8: 3}),
        ("ibn-net:backbone=(resnet-cifar:depth=32),stages=1", {16: 5}),
    ],
)
def test_resnet_first_bn_of_each_block_in_the_chosen_stages(reference, counts):
    found: dict[int, int] = {}
    for layer in ibn_models(reference):
        assert layer.output_shape[-1] == {16: 16, 8: 32, 4: 64}[layer.output_shape[1]]
        found[layer.output_shape[1]] = found.get(layer.output_shape[1], 0) + 1
    assert found == counts


def test_mobilenetv2_expansion_bns_by_resolution():
    # 16x16, stem stride 1, the last stride skipped: the expanding blocks read 16 (1), 8 (2), 4 (3) and 2 (10)
    # pixels a side: 16 expansions, none in the first block (expansion 1), none for the final 1x1 conv.
    layers = ibn_models("ibn-net:backbone=(mobilenetv2:alpha=0.35),stages=4")
    shapes = [layer.output_shape[1:] for layer in layers]
    assert shapes[:6] == [(16, 16, 48), (8, 8, 48), (8, 8, 48), *[(4, 4, 96)] * 3]
    assert len(shapes) == 16 and all(shape[:2] == (2, 2) for shape in shapes[6:])


def test_other_bns_stay_and_the_cost_is_the_backbones_but_the_norms():
    backbone = MethodRef.parse("resnet-cifar:depth=8").create().build((8, 8, 3), 10)
    model = MethodRef.parse("ibn-net:backbone=(resnet-cifar:depth=8)").create().build((8, 8, 3), 10)
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    kept = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(kept) == len(norms) - 2  # one block in each of stages 1 and 2
    ours, theirs = count_complexity(model), count_complexity(backbone)
    assert ours.macs == theirs.macs and ours.params_trainable == theirs.params_trainable
    # Each IBN: 8x8x16 then 4x4x32 elements, half at IN's 5 ops instead of BN's 2.
    assert ours.flops - theirs.flops == 3 * (8 * 8 * 8 + 4 * 4 * 16)


def test_converts_to_tflite_builtins_and_matches_keras():
    model = MethodRef.parse("ibn-net:backbone=(resnet-cifar:depth=8)").create().build((8, 8, 3), 10)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)


def test_a_later_rewrite_carries_each_halfs_weights_over_by_name():
    # Compression methods rebuild a model with effbench.graph.rewrite, matching weights by name within a layer.
    model = MethodRef.parse("ibn-net:backbone=(resnet-cifar:depth=8)").create().build((8, 8, 3), 10)
    layer = next(layer for layer in model.layers if isinstance(layer, IBN))
    for index, weight in enumerate(layer.weights):
        weight.assign(np.full(weight.shape, index + 2.0, dtype="float32"))
    copy = rewrite(model, lambda _: None).get_layer(layer.name)
    assert len({weight.name for weight in layer.weights}) == len(layer.weights) == 6
    for ours, theirs in zip(layer.weights, copy.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
