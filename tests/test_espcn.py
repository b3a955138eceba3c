"""Specifications of ``espcn``: every convolution at the low resolution, one pixel shuffle to the high one."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.litert import litert_predict
from effbench.method import MethodRef
from effbench.registry import TASKS
from effbench.tf import keras
from suites.architectures._dense import DepthToSpace
from tests.dense_checks import (
    converted_ops,
    float_ops,
    segmentation_spec,
    super_resolution_data,
    super_resolution_spec,
    train,
)
from tracks.complexity import count_complexity


def upscaler(scale: int, side: int = 8, reference: str = "espcn") -> keras.Model:
    return MethodRef.parse(reference).create().build_for(super_resolution_spec(side, scale))


@pytest.mark.parametrize("task", ["sr-photos-x2", "sr-photos-x3"])
def test_the_output_is_the_tasks_high_resolution_image(task):
    spec = TASKS.get(task).spec
    model = MethodRef.parse("espcn").create().build_for(spec)
    assert model.input_shape == (None, *spec.input_shape) and model.output_shape == (None, *spec.output_shape)


@pytest.mark.parametrize("scale", [2, 3])
def test_every_convolution_runs_at_the_low_resolution_and_only_the_shuffle_reaches_the_high_one(scale):
    model = upscaler(scale)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.output_shape[1:3] for conv in convs] == [(8, 8)] * 3
    high = [layer for layer in model.layers if layer.output_shape[1:3] == (8 * scale, 8 * scale)]
    assert len(high) == 1 and isinstance(high[0], DepthToSpace) and high[0] is model.layers[-1]


def test_the_layers_are_the_papers_5_64_tanh_3_32_tanh_3_to_c_r_squared():
    convs = [layer for layer in upscaler(3).layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.kernel_size, c.filters, c.get_config()["activation"]) for c in convs] == [
        ((5, 5), 64, "tanh"), ((3, 3), 32, "tanh"), ((3, 3), 3 * 3 * 3, "linear")
    ]  # fmt: skip


@pytest.mark.parametrize("scale", [2, 3])
def test_macs_are_the_closed_form_per_low_resolution_pixel(scale):
    channels, height, width = 3, 8, 8
    per_pixel = 25 * channels * 64 + 9 * 64 * 32 + 9 * 32 * channels * scale**2
    assert count_complexity(upscaler(scale)).macs == per_pixel * height * width


def test_the_shuffle_puts_each_pixels_groups_into_its_block():
    # Channel (i r + j) C + c of low-resolution pixel (h, w) is channel c of output pixel (r h + i, r w + j).
    low = np.arange(2 * 2 * 12, dtype=np.float32).reshape(1, 2, 2, 12)
    high = np.asarray(DepthToSpace(2)(low))
    assert high.shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(high[0, 2 * 1 + 1, 2 * 0 + 0], low[0, 1, 0, 6:9])


def test_converts_to_tflite_builtins_with_depth_to_space_in_float_and_in_int8():
    model = upscaler(2)
    x = np.random.default_rng(1).random((4, 8, 8, 3)).astype(np.float32)
    content, ops = converted_ops(model)
    assert ops.count("CONV_2D") == 3 and ops.count("DEPTH_TO_SPACE") == 1 and "TANH" in ops
    assert float_ops(content) == ops  # the float model: every op computes in float
    np.testing.assert_allclose(litert_predict(content, x, 1), model.predict(x, verbose=0), atol=1e-5)
    # Full integer: every op an int8 builtin, floats only at the model's input and output.
    int8, int8_ops = converted_ops(model, "int8")
    assert int8_ops[0] == "QUANTIZE" and int8_ops[-1] == "DEQUANTIZE" and "DEPTH_TO_SPACE" in int8_ops
    assert float_ops(int8) == []


def test_a_few_training_steps_lower_the_reconstruction_error():
    low, high = super_resolution_data(32, 8, 2)
    history = train(MethodRef.parse("espcn").create(), super_resolution_spec(8, 2), low, high).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]


def test_the_bilinear_residual_option_learns_a_residual_over_bilinear_upsampling():
    model = upscaler(2, reference="espcn:bilinear_residual=true")
    subpixel = model.get_layer("subpixel")
    subpixel.set_weights([np.zeros_like(weight) for weight in subpixel.get_weights()])
    flat = np.full((1, 8, 8, 3), 0.25, np.float32)
    np.testing.assert_allclose(model(flat, training=False), 0.25, atol=1e-6)
    assert "bilinear" not in [layer.name for layer in upscaler(2).layers]  # not part of ESPCN itself


def test_the_upscaler_round_trips_through_a_keras_file(tmp_path):
    model = upscaler(3)
    x = np.random.default_rng(2).random((2, 8, 8, 3)).astype(np.float32)
    model.save(tmp_path / "espcn.keras")
    reloaded = keras.models.load_model(tmp_path / "espcn.keras", compile=False)
    np.testing.assert_allclose(reloaded(x), model(x), atol=1e-6)


def test_there_is_no_segmentation_head():
    with pytest.raises(ValueError, match="'espcn' has no segmentation head"):
        MethodRef.parse("espcn").create().build_for(segmentation_spec(16, 3))
