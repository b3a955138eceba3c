"""Specifications of ``nasnet``: the NASNet-A normal and reduction cells in the CIFAR stack."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.nasnet import factorized_reduction
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

INPUT = (8, 8, 1)
F = 4


def build(reference: str = f"nasnet:cells=1,filters={F}", input_shape: tuple[int, ...] = INPUT) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, 10)


def of_type(model: keras.Model, kind: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if type(layer) is kind]


def cell_outputs(model: keras.Model) -> list[keras.layers.Layer]:
    """The cells' concatenations (four or six blocks; the factorised reductions concatenate two paths)."""
    return [layer for layer in of_type(model, keras.layers.Concatenate) if len(layer.inbound_nodes[0].parent_nodes) > 2]


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return build()


def test_stages_of_normal_cells_between_two_reduction_cells(model):
    # normal(F) - reduction(2F) - normal(2F) - reduction(4F) - normal(4F): 6 or 4 blocks of F each.
    shapes = [(cell.output_shape[1], cell.output_shape[-1]) for cell in cell_outputs(model)]
    assert shapes == [(8, 6 * F), (4, 4 * 2 * F), (4, 6 * 2 * F), (2, 4 * 4 * F), (2, 6 * 4 * F)]
    assert len(cell_outputs(build(f"nasnet:cells=3,filters={F}"))) == 3 * 3 + 2


def test_each_cell_adds_five_pairs_and_uses_the_published_separable_kernels(model):
    assert len(of_type(model, keras.layers.Add)) == 5 * 5
    kernels = [conv.kernel_size[0] for conv in of_type(model, keras.layers.SeparableConv2D)]
    # Normal: sep5 x2, sep3 x3; reduction: sep7 x2, sep5 x2, sep3 x1; each sep is two sepconvs.
    counts = {size: kernels.count(size) for size in (3, 5, 7)}
    assert counts == {3: 3 * 6 + 2 * 2, 5: 3 * 4 + 2 * 4, 7: 2 * 4}


def test_reduction_cells_stride_four_separable_blocks_and_three_pools(model):
    strided = [conv for conv in of_type(model, keras.layers.SeparableConv2D) if conv.strides != (1, 1)]
    assert len(strided) == 2 * 4 and {conv.kernel_size for conv in strided} == {(5, 5), (7, 7)}
    pools = of_type(model, keras.layers.MaxPooling2D) + of_type(model, keras.layers.AveragePooling2D)
    strided_pools = [type(pool).__name__ for pool in pools if pool.pool_size == (3, 3) and pool.strides == (2, 2)]
    # Per reduction cell: max/2(h) twice (blocks 2 and 5) and avg/2(h) once (block 3).
    assert sorted(strided_pools) == ["AveragePooling2D"] * 2 + ["MaxPooling2D"] * 4


@pytest.mark.parametrize("shape,strides", [((6, 6, 3), (2, 2)), ((8, 1, 3), (2, 1))])
def test_factorised_reduction_concatenates_the_grid_and_the_grid_shifted_by_one(shape, strides):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *shape)).astype("float32")
    inputs = keras.Input(shape)
    reduced = keras.Model(inputs, factorized_reduction(inputs, 2 * shape[-1], strides))
    for conv in of_type(reduced, keras.layers.Conv2D):
        conv.set_weights([np.eye(shape[-1], dtype="float32")[None, None]])
    relu = np.maximum(x, 0) / np.sqrt(1 + 1e-3)  # BN at initialisation, in inference
    step, width_step = strides
    expected = np.concatenate([relu[:, ::step, ::width_step], relu[:, 1::step, width_step - 1 :: width_step]], -1)
    np.testing.assert_allclose(reduced(x, training=False), expected, rtol=1e-5, atol=1e-6)


def test_each_normal_cell_after_a_reduction_reads_the_reductions_input_through_a_factorised_reduction(model):
    # One per reduction cell: its input (twice the resolution) is the next normal cell's p.
    assert len(of_type(model, keras.layers.Cropping2D)) == 2


def test_complexity_counts_every_weighted_layer_and_converts_to_tflite_builtins(model):
    report = count_complexity(model)
    assert report.params == model.count_params() and not report.uncounted
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    model = build()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *INPUT)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert losses[-1] < 0.8 * losses[0]
