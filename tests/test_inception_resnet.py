"""Specifications of ``inception-resnet``: scaled residual Inception blocks between reduction blocks."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

INPUT = (8, 8, 1)
# At the paper's width every channel count is the paper's.
PAPER = "inception-resnet:width=384"


def build(reference: str = "inception-resnet:width=24", input_shape: tuple[int, ...] = INPUT) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, 10)


def producers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers whose outputs ``layer`` takes, in order."""
    return [node.layer for node in layer.inbound_nodes[0].parent_nodes]


def of_type(model: keras.Model, kind: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if type(layer) is kind]


@pytest.fixture(scope="module")
def paper_model() -> keras.Model:
    return build(PAPER)


def test_grid_widths_are_the_papers_v2_widths(paper_model):
    adds = of_type(paper_model, keras.layers.Add)
    # blocks=1: one A at 8x8, two B at 4x4, one C at 2x2.
    assert [(add.output_shape[1], add.output_shape[-1]) for add in adds] == [
        (8, 384), (4, 1152), (4, 1152), (2, 2144)
    ]  # fmt: skip


def test_residual_blocks_add_a_scaled_linear_1x1_of_the_concatenated_branches(paper_model):
    scales = []
    for add in of_type(paper_model, keras.layers.Add):
        block_input, rescaled = producers(add)
        up = producers(rescaled)[0]
        assert type(up) is keras.layers.Conv2D and up.kernel_size == (1, 1) and up.use_bias
        assert up.get_config()["activation"] == "linear" and up.filters == block_input.output_shape[-1]
        assert type(producers(up)[0]) is keras.layers.Concatenate
        assert [type(layer) for layer in paper_model.layers if add in producers(layer)][0] is keras.layers.ReLU
        scales.append(rescaled.scale)
    assert scales == pytest.approx([0.17, 0.1, 0.1, 0.2])


def test_b_and_c_blocks_factorise_7x7_and_3x3_into_1xk_then_kx1(paper_model):
    kernels = [(conv.kernel_size, conv.filters) for conv in of_type(paper_model, keras.layers.Conv2D)]
    assert kernels.count(((1, 7), 160)) == kernels.count(((7, 1), 192)) == 2
    assert kernels.count(((1, 3), 224)) == kernels.count(((3, 1), 256)) == 1


def test_vector_inputs_turn_1xk_kernels_pointwise_and_keep_kx1():
    model = build("inception-resnet:width=384", (40,))
    kernels = {conv.kernel_size for conv in of_type(model, keras.layers.Conv2D)}
    assert kernels == {(1, 1), (3, 1), (7, 1)}


def test_reductions_halve_the_grid_with_a_max_pool_beside_strided_conv_branches(paper_model):
    pools = of_type(paper_model, keras.layers.MaxPooling2D)
    assert [(pool.input_shape[1], pool.output_shape[1], pool.output_shape[-1]) for pool in pools] == [
        (8, 4, 384), (4, 2, 1152)
    ]  # fmt: skip
    strided = [conv for conv in of_type(paper_model, keras.layers.Conv2D) if conv.strides != (1, 1)]
    assert [conv.filters for conv in strided] == [384, 384, 384, 288, 320]
    assert all(conv.kernel_size == (3, 3) for conv in strided)


def test_blocks_repeat_one_two_one():
    assert len(of_type(build("inception-resnet:width=24,blocks=3"), keras.layers.Add)) == 3 + 6 + 3


def test_width_scales_every_channel_count():
    half = [conv.filters for conv in of_type(build("inception-resnet:width=192"), keras.layers.Conv2D)]
    full = [conv.filters for conv in of_type(build(PAPER), keras.layers.Conv2D)]
    assert half == [round(channels / 2) for channels in full]


def test_complexity_counts_every_weighted_layer_and_converts_to_tflite_builtins():
    model = build()
    report = count_complexity(model)
    assert report.params == model.count_params() and not report.uncounted
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    model = build("inception-resnet:width=24,dropout=0")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *INPUT)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert losses[-1] < 0.8 * losses[0]
