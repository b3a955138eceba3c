"""Specifications of ``halonet``: blocked local attention over haloed windows against a direct loop, its layout
on small maps, its cost and its conversion."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.halonet import HaloAttention
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

DIGITS = (8, 8, 1)


@functools.cache
def build(reference: str = "halonet", input_shape: tuple[int, ...] = DIGITS) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, 10)


def direct_attention(layer: HaloAttention, q_map: np.ndarray, k_map: np.ndarray, v_map: np.ndarray) -> np.ndarray:
    """Each query, one at a time: the keys of its block's window (zero outside the map), logits q.k / sqrt(d) plus
    q . (r_row[dy] + r_col[dx]) with the tables indexed from the smallest offset, softmax, sum of values."""
    batch, out_h, out_w, channels = q_map.shape
    height, width = k_map.shape[1:3]
    heads, d = layer.heads, channels // layer.heads
    (by, bx), (hy, hx), (sy, sx) = layer.block, layer.halo, layer.stride
    low_y, low_x = -hy - (by - sy), -hx - (bx - sx)  # the last query of a block to the first key of its window
    rows, columns = layer.row_embedding.numpy(), layer.column_embedding.numpy()
    out = np.zeros_like(q_map)
    for n in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                py, px = i * sy, j * sx
                top, left = (py // by) * by - hy, (px // bx) * bx - hx
                keys = [(y, x) for y in range(top, top + by + 2 * hy) for x in range(left, left + bx + 2 * hx)]
                k, v = (
                    np.stack(
                        [m[n, y, x] if 0 <= y < height and 0 <= x < width else np.zeros(channels) for y, x in keys]
                    )
                    for m in (k_map, v_map)
                )
                for h in range(heads):
                    part = slice(h * d, (h + 1) * d)
                    q = q_map[n, i, j, part]
                    relative = np.stack([rows[y - py - low_y] + columns[x - px - low_x] for y, x in keys])
                    logits = k[:, part] @ q / np.sqrt(d) + relative @ q
                    weights = np.exp(logits - logits.max())
                    out[n, i, j, part] = (weights / weights.sum()) @ v[:, part]
    return out


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (2, 1)])
def test_each_query_attends_to_its_blocks_haloed_window_with_relative_embeddings(stride):
    rng = np.random.default_rng(0)
    k_map, v_map = (rng.normal(size=(2, 4, 6, 4)).astype("float32") for _ in range(2))
    q_map = rng.normal(size=(2, 4 // stride[0], 6 // stride[1], 4)).astype("float32")
    layer = HaloAttention(2, (2, 2), (1, 1), stride)
    out = layer([q_map, k_map, v_map]).numpy()
    np.testing.assert_allclose(out, direct_attention(layer, q_map, k_map, v_map), rtol=1e-4, atol=1e-5)


def test_a_block_without_halo_along_an_axis_attends_within_the_block_there():
    rng = np.random.default_rng(1)
    q_map, k_map, v_map = (rng.normal(size=(1, 6, 2, 4)).astype("float32") for _ in range(3))
    layer = HaloAttention(1, (3, 1), (1, 0))
    np.testing.assert_allclose(
        layer([q_map, k_map, v_map]).numpy(), direct_attention(layer, q_map, k_map, v_map), rtol=1e-4, atol=1e-5
    )


def test_halos_over_half_a_block_are_refused():
    with pytest.raises(ValueError, match="at most half a block"):
        HaloAttention(1, (4, 4), (3, 3))


def attention_layouts(model: keras.Model) -> list[tuple]:
    return [
        (layer.block, layer.halo, layer.stride, layer.output_shape[1:3])
        for layer in model.layers
        if isinstance(layer, HaloAttention)
    ]


def test_on_digits_blocks_of_4_with_halo_1_and_attention_downsampling():
    assert attention_layouts(build()) == [
        ((4, 4), (1, 1), (1, 1), (8, 8)), ((4, 4), (1, 1), (2, 2), (4, 4)), ((4, 4), (1, 1), (2, 2), (2, 2))
    ]  # fmt: skip


def test_vectors_get_column_blocks_of_one_position_without_halo():
    assert attention_layouts(build(input_shape=(40,))) == [
        ((4, 1), (1, 0), (1, 1), (40, 1)), ((4, 1), (1, 0), (2, 1), (20, 1)), ((4, 1), (1, 0), (2, 1), (10, 1))
    ]  # fmt: skip


def test_the_complexity_track_counts_the_three_attention_products_per_query_and_window_key():
    model = build()
    report = count_complexity(model)
    assert not report.uncounted and report.params == model.count_params()
    first = model.get_layer("s1_block0_attention")  # 8x8 queries, 6x6 windows, 8 channels
    assert report.row(first.name).macs == 3 * 64 * 36 * 8
    assert report.row(first.name).params == 2 * (4 + 2 + 4 - 1) * 8  # (2b + 2h - 1) offsets per axis, d = 8


def test_width_22_costs_what_resnet20_costs_on_digits():
    ours, reference = count_complexity(build("halonet:width=22")), count_complexity(build("resnet-cifar"))
    assert abs(ours.macs / reference.macs - 1) <= 0.1


def test_a_few_steps_lower_the_loss():
    model = MethodRef.parse("halonet").create().build(DIGITS, 10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *DIGITS)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=8)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("input_shape", [DIGITS, (40,)])
def test_converts_to_tflite_builtins_and_matches_keras(input_shape):
    model = build("halonet", input_shape)
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)
