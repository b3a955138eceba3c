"""Specifications of ``seg-efficient`` (FFNet): a basic-block ResNet and a tiny FPN-like head, plain operators only."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.litert import litert_predict
from effbench.method import MethodRef
from effbench.registry import TASKS
from effbench.tf import keras
from tests.dense_checks import converted_ops, eager_training_losses, float_ops, segmentation_data, segmentation_spec
from tracks.complexity import count_complexity

# What the paper keeps to: operators every runtime and quantizer handles well.
PLAIN_OPS = {"CONV_2D", "ADD", "CONCATENATION", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"}


def segmenter(reference: str = "seg-efficient:blocks=1", side: int = 64, classes: int = 3) -> keras.Model:
    return MethodRef.parse(reference).create().build_for(segmentation_spec(side, classes))


def producers(model: keras.Model, name: str) -> list[str]:
    return [node.layer.name for node in model.get_layer(name).inbound_nodes[0].parent_nodes]


def test_segments_every_pixel_of_seg_shapes():
    model = MethodRef.parse("seg-efficient").create().build_for(TASKS.get("seg-shapes").spec)
    assert model.output_shape == (None, 64, 64, 7)


def test_the_stem_strides_by_4_and_the_stages_give_features_at_strides_4_to_32_without_dilation():
    model = segmenter()
    assert [model.get_layer(f"stem{k}_conv").strides for k in (1, 2)] == [(2, 2), (2, 2)]
    # Each stage's features, as its adapter reads them: 64 / 4, 64 / 8, 64 / 16, 64 / 32.
    assert [model.get_layer(f"adapter{s}_conv").input_shape[1:3] for s in (4, 8, 16, 32)] == [
        (16, 16), (8, 8), (4, 4), (2, 2)
    ]  # fmt: skip
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {conv.dilation_rate for conv in convs} == {(1, 1)}
    assert model.get_layer("stride4_logits").output_shape[1:3] == (16, 16)
    assert model.get_layer("logits").get_config()["interpolation"] == "bilinear"


def test_the_head_adds_each_coarser_level_upsampled_to_the_next_and_concatenates_all_at_stride_4():
    model = segmenter()
    # T_16 = up(cbr1x1(T_32)) + A_16, with T_32 = A_32, and so on down to T_4.
    assert producers(model, "top_down16") == ["up32to16", "adapter16_relu"]
    assert producers(model, "lateral32to16_conv") == ["adapter32_relu"]
    assert producers(model, "lateral8to4_conv") == ["top_down8"]
    assert model.get_layer("up32to16").get_config()["interpolation"] == "nearest"
    assert producers(model, "multiscale") == ["smooth4_relu", "smooth8_to4", "smooth16_to4", "smooth32_to4"]
    # Head B's smoothing widths 96, 96, 64, 32 times the default width 0.25.
    assert [model.get_layer(f"smooth{s}_conv").filters for s in (4, 8, 16, 32)] == [24, 24, 16, 8]


def test_far_away_pixels_change_the_prediction_the_receptive_field_is_the_whole_image():
    model = segmenter(side=32)
    x = np.random.default_rng(0).random((1, 32, 32, 3)).astype(np.float32)
    moved = x.copy()
    moved[:, :4, :4] = 1.0 - moved[:, :4, :4]  # the top-left corner only
    change = np.abs(np.asarray(model(moved, training=False) - model(x, training=False)))
    assert change[0, -4:, -4:].max() > 1e-4  # seen at the bottom-right corner


def test_costs_fewer_macs_than_unetpp_and_fcn_small_on_seg_shapes():
    spec = TASKS.get("seg-shapes").spec
    macs = {slug: count_complexity(MethodRef.parse(slug).create().build_for(spec)).macs
            for slug in ("seg-efficient", "unetpp", "fcn-small")}  # fmt: skip
    assert macs["seg-efficient"] < macs["fcn-small"] < macs["unetpp"]


def test_converts_to_int8_with_plain_builtin_operators_only_and_agrees_with_keras():
    model = segmenter(side=16)
    content, ops = converted_ops(model)
    assert set(ops) <= PLAIN_OPS
    x = np.random.default_rng(3).random((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(litert_predict(content, x, 1), model(x, training=False), atol=1e-4)
    int8, int8_ops = converted_ops(model, "int8")
    assert set(int8_ops) <= PLAIN_OPS | {"QUANTIZE", "DEQUANTIZE"} and float_ops(int8) == []


def test_a_few_training_steps_lower_the_loss():
    x, y = segmentation_data(8, 16, 3)
    losses = eager_training_losses(segmenter("seg-efficient:blocks=1,width=0.125", side=16), x, y, steps=5)
    assert losses[-1] < 0.8 * losses[0]


def test_bad_options_are_refused():
    for reference in ("seg-efficient:blocks=0", "seg-efficient:width=0"):
        with pytest.raises(ValueError, match="expected a positive"):
            MethodRef.parse(reference).create()
