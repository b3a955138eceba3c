"""Specifications of ``overlock``: ContMix against a direct loop, GRN against its formula, the three sub-networks'
wiring on small maps, its cost and its conversion."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.overlock import ContMix, GlobalResponseNorm
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

DIGITS = (8, 8, 1)


@functools.cache
def build(reference: str = "overlock", input_shape: tuple[int, ...] = DIGITS) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, 10)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def direct_contmix(layer: ContMix, query: np.ndarray, key: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per position and group: affinities to the region keys, the kernel projection, bias, softmax per kernel, then
    the weighted sum of the zero-padded neighbourhood, small kernel on the first half of the channels."""
    batch, height, width, channels = value.shape
    groups, small_size = layer.groups, layer.kernel_sizes[0]
    cq, cv = query.shape[-1] // groups, channels // 2 // groups
    projection, bias, position = (w.numpy() for w in (layer.kernel_projection, layer.kernel_bias, layer.position_bias))
    regions = key.reshape(batch, -1, key.shape[-1])
    out = np.zeros_like(value)
    for n in range(batch):
        for i in range(height):
            for j in range(width):
                for g in range(groups):
                    affinity = regions[n, :, g * cq : (g + 1) * cq] @ query[n, i, j, g * cq : (g + 1) * cq]
                    logits = (affinity / np.sqrt(channels / groups)) @ projection + bias + position[g, 0]
                    for half, (size, kernel) in enumerate(
                        [(layer.small, softmax(logits[:small_size])), (layer.large, softmax(logits[small_size:]))]
                    ):
                        part = slice(half * channels // 2 + g * cv, half * channels // 2 + (g + 1) * cv)
                        for offset, weight in enumerate(kernel):
                            y = i + offset // size[1] - size[0] // 2
                            x = j + offset % size[1] - size[1] // 2
                            if 0 <= y < height and 0 <= x < width:
                                out[n, i, j, part] += weight * value[n, y, x, part]
    return out


@pytest.mark.parametrize("small,large", [((3, 3), (5, 5)), ((3, 1), (5, 1))])
def test_contmix_mixes_each_neighbourhood_with_kernels_made_from_region_affinities(small, large):
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 4, 5, 4)).astype("float32")
    key = rng.normal(size=(2, 2, 2, 4)).astype("float32")
    value = rng.normal(size=(2, 4, 5, 8)).astype("float32")
    layer = ContMix(2, small, large)
    layer([query, key, value])
    for weight in layer.weights:  # away from zero biases, so every term matters
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    out = layer([query, key, value]).numpy()
    np.testing.assert_allclose(out, direct_contmix(layer, query, key, value), rtol=1e-4, atol=1e-5)


def test_contmix_refuses_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="divisible"):
        ContMix(2, (3, 3), (5, 5))([np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 8))])


def test_grn_scales_each_channel_by_its_l2_norm_over_the_channel_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    layer = GlobalResponseNorm()
    layer(x)
    gamma, beta = rng.normal(size=(2, 5)).astype("float32")
    layer.gamma.assign(gamma), layer.beta.assign(beta)
    norm = np.sqrt((x**2).sum(axis=(1, 2), keepdims=True))
    expected = (gamma * norm / (norm.mean(axis=-1, keepdims=True) + 1e-6) + 1) * x + beta
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_focus_net_runs_at_base_net_resolution_then_at_the_overviews_guided_by_its_context():
    model = build()
    mixes = [layer for layer in model.layers if isinstance(layer, ContMix)]
    # (features at, region centres, channels): 4x4 with 16 channels twice, then 2x2 with 32 after the overview's step.
    assert [(m.input_shape[2][1:3], m.input_shape[1][1:3], m.input_shape[2][3]) for m in mixes] == [
        ((4, 4), (4, 4), 16), ((4, 4), (4, 4), 16), ((2, 2), (2, 2), 32)
    ]  # fmt: skip
    assert model.get_layer("overview_down_conv").output_shape[1:3] == (2, 2)
    upsampled = model.get_layer("overview_context_up")
    assert upsampled.input_shape[1:] == (2, 2, 8) and upsampled.output_shape[1:] == (4, 4, 8)
    # The context flow beside the features: each block's fusion concatenates [x, h] (C + w channels).
    assert [model.get_layer(f"{block}_fuse").output_shape[-1] for block in ("focus1_block0", "focus2_block0")] == [
        24, 40
    ]  # fmt: skip
    assert model.get_layer("pool").input_shape[-1] == 64


def test_vectors_pool_region_centres_along_the_column():
    model = build(input_shape=(40,))
    regions = model.get_layer("focus1_block0_regions")
    assert regions.input_shape[1:3] == (20, 1) and regions.pool_size == (5, 1)


def test_the_complexity_track_counts_every_weighted_layer_and_the_dynamic_kernels():
    model = build()
    report = count_complexity(model)
    assert not report.uncounted and report.params == model.count_params()
    mix = model.get_layer("focus1_block0_contmix")
    # 16 positions: affinities to 16 regions over 8 query channels, the 16 -> 9 + 25 projection for 2 groups,
    # then 8 channels aggregated over 9 and 8 over 25 neighbours.
    assert report.row(mix.name).macs == 16 * 16 * 8 + 2 * 16 * 34 * 16 + 16 * 8 * 34


def test_width_22_costs_what_resnet20_costs_on_digits():
    ours, reference = count_complexity(build("overlock:width=22")), count_complexity(build("resnet-cifar"))
    assert abs(ours.macs / reference.macs - 1) <= 0.1


def test_a_few_steps_lower_the_loss():
    model = MethodRef.parse("overlock").create().build(DIGITS, 10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *DIGITS)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("input_shape", [DIGITS, (40,)])
def test_converts_to_tflite_builtins_and_matches_keras(input_shape):
    model = build("overlock", input_shape)
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)
