"""Specifications of ``astroformer``: the C-C-T-T stack, CoAtNet's relative bias, its cost and its conversion."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures._attention2d import RelativeBiasAttentionCore, grid_positions
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

DIGITS = (8, 8, 1)


@functools.cache
def build(reference: str = "astroformer", input_shape: tuple[int, ...] = DIGITS) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, 10)


def cores(model: keras.Model) -> list[RelativeBiasAttentionCore]:
    return [layer for layer in model.layers if isinstance(layer, RelativeBiasAttentionCore)]


def test_two_mbconv_stages_then_two_relative_attention_stages():
    model = build()
    depthwise = [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert [layer.name for layer in depthwise] == ["s1_block0_depthwise", "s2_block0_depthwise"]
    assert depthwise[1].strides == (2, 2) and depthwise[1].output_shape[1:3] == (4, 4)
    # S3 attends over the 4x4 map with 64 channels (4 heads of 16), S4 downsamples to 2x2 with 128 (8 heads).
    assert [(core.name, core.grid, core.heads) for core in cores(model)] == [
        ("s3_block0_attention", (4, 4), 4), ("s4_block0_attention", (2, 2), 8)
    ]  # fmt: skip
    assert model.get_layer("pool").input_shape[1:] == (2, 2, 128)


def test_vector_inputs_attend_over_a_column_of_tokens():
    assert [core.grid for core in cores(build(input_shape=(40,)))] == [(20, 1), (10, 1)]


def test_relative_bias_is_its_table_entry_for_each_offset_so_equal_offsets_share_it():
    core = RelativeBiasAttentionCore(2, (3, 4))
    tokens, dim = 12, 8
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(1, tokens, dim)).astype("float32") for _ in range(3))
    core([q, k, v])
    assert core.relative_bias.shape == (2, 5 * 7)  # (2H - 1)(2W - 1) offsets per head
    table = rng.normal(size=core.relative_bias.shape).astype("float32")
    core.relative_bias.assign(table)
    positions = grid_positions((3, 4))
    bias = core.bias().numpy()
    for i, (yi, xi) in enumerate(positions):
        for j, (yj, xj) in enumerate(positions):
            np.testing.assert_array_equal(bias[:, i, j], table[:, (yj - yi + 2) * 7 + (xj - xi + 3)])
    q_heads, k_heads = core.split_heads(q).numpy(), core.split_heads(k).numpy()
    expected = q_heads @ k_heads.transpose(0, 1, 3, 2) / np.sqrt(dim // 2) + bias
    np.testing.assert_allclose(core.scores(core.split_heads(q), core.split_heads(k)), expected, rtol=1e-5, atol=1e-5)


def test_the_complexity_track_counts_the_attention_products_and_every_weighted_layer():
    model = build()
    report = count_complexity(model)
    assert not report.uncounted
    for core in cores(model):
        tokens, dim = core.input_shape[0][1], core.input_shape[0][2]
        assert report.row(core.name).macs == 2 * tokens * tokens * dim  # QK^T and PV
        assert report.row(core.name).params == core.heads * (2 * core.grid[0] - 1) * (2 * core.grid[1] - 1)
    assert report.params == model.count_params()


def test_width_18_costs_what_resnet20_costs_on_digits():
    ours, reference = count_complexity(build("astroformer:width=18")), count_complexity(build("resnet-cifar"))
    assert abs(ours.macs / reference.macs - 1) <= 0.1


def test_a_few_steps_lower_the_loss():
    model = MethodRef.parse("astroformer:width=8").create().build(DIGITS, 10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *DIGITS)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=8)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("input_shape", [DIGITS, (40,)])
def test_converts_to_tflite_builtins_and_matches_keras(input_shape):
    model = build("astroformer:width=8", input_shape)
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)
