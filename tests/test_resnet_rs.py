"""Specifications of ``resnet-rs``: ResNet-D bottlenecks with squeeze-and-excitation and stochastic depth."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures._layers import squeeze_excitation
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

INPUT = (8, 8, 1)


def build(reference: str = "resnet-rs:depth=11,base=8", input_shape: tuple[int, ...] = INPUT) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, 10)


def producers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers whose outputs ``layer`` takes, in order."""
    return [node.layer for node in layer.inbound_nodes[0].parent_nodes]


def of_type(model: keras.Model, kind: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if type(layer) is kind]


def test_squeeze_excitation_gates_each_channel_by_its_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 3, 8)).astype("float32")
    inputs = keras.Input((3, 3, 8))
    model = keras.Model(inputs, squeeze_excitation(inputs, 0.25))
    reduce, expand = (layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert reduce.filters == 2 and expand.filters == 8
    (w1, b1), (w2, b2) = reduce.get_weights(), expand.get_weights()
    s = x.mean(axis=(1, 2))
    gates = 1 / (1 + np.exp(-(np.maximum(s @ w1[0, 0] + b1, 0) @ w2[0, 0] + b2)))
    np.testing.assert_allclose(model(x), x * gates[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_each_stage_has_n_bottlenecks_of_width_base_times_two_to_the_stage():
    model = build("resnet-rs:depth=20,base=8")  # n = 2
    adds = of_type(model, keras.layers.Add)
    assert len(adds) == 6
    assert [add.output_shape[-1] for add in adds] == [32, 32, 64, 64, 128, 128]
    assert [add.output_shape[1] for add in adds] == [8, 8, 4, 4, 2, 2]


def test_stem_is_three_3x3_convs_at_full_resolution():
    model = build()
    stem = of_type(model, keras.layers.Conv2D)[:3]
    assert [(conv.filters, conv.kernel_size, conv.strides) for conv in stem] == [(4, (3, 3), (1, 1))] * 2 + [
        (8, (3, 3), (1, 1))
    ]


def test_strided_blocks_carry_the_stride_on_the_3x3_and_pool_before_the_shortcut_conv():
    model = build()
    convs = of_type(model, keras.layers.Conv2D)
    strided = [conv for conv in convs if conv.strides != (1, 1)]
    assert [conv.kernel_size for conv in strided] == [(3, 3), (3, 3)]  # stages 2 and 3, nothing else
    pools = of_type(model, keras.layers.AveragePooling2D)
    assert len(pools) == 2
    for pool in pools:
        assert pool.pool_size == pool.strides == (2, 2)
        shortcut_conv = next(layer for layer in convs if producers(layer) == [pool])
        assert shortcut_conv.kernel_size == (1, 1) and shortcut_conv.strides == (1, 1)
        assert not shortcut_conv.use_bias


def test_every_block_ends_in_a_quarter_width_squeeze_excitation_before_the_add():
    model = build()
    gates = [layer for layer in model.layers if isinstance(layer, keras.layers.Multiply)]
    assert len(gates) == 3
    for gate in gates:
        channels = gate.output_shape[-1]
        _, expand = producers(gate)
        assert expand.filters == channels and producers(expand)[0].filters == channels // 4
        assert [type(layer) for layer in model.layers if gate in producers(layer)] == [keras.layers.Add]
    assert not any(isinstance(layer, keras.layers.Multiply) for layer in build("resnet-rs:depth=11,se_ratio=0").layers)


def test_stochastic_depth_rates_grow_linearly_over_the_stages():
    model = build("resnet-rs:depth=20,base=8,drop_rate=0.2,dropout=0")
    drops = [layer.rate for layer in of_type(model, keras.layers.Dropout)]
    assert drops == pytest.approx([0.1, 0.1, 0.15, 0.15, 0.2, 0.2])
    assert not of_type(build("resnet-rs:depth=20,base=8,dropout=0"), keras.layers.Dropout)


def test_stochastic_depth_drops_whole_residuals_per_sample_in_training_only():
    model = build("resnet-rs:depth=11,base=8,drop_rate=0.6,dropout=0")
    drop = of_type(model, keras.layers.Dropout)[-1]
    residual = np.ones((64, 2, 2, 32), dtype="float32")
    dropped = drop(residual, training=True).numpy()
    per_sample = dropped.reshape(64, -1)
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))  # all of a sample or nothing
    assert set(np.unique(per_sample).round(4)) == {0.0, round(1 / (1 - drop.rate), 4)}
    np.testing.assert_array_equal(drop(residual, training=False), residual)


def test_depth_must_be_nine_n_plus_two():
    for depth in (10, 12, 2):
        with pytest.raises(ValueError, match="9n \\+ 2"):
            MethodRef.parse(f"resnet-rs:depth={depth}").create()


def test_vector_inputs_keep_the_unit_axis_unstrided():
    model = build(input_shape=(40,))
    pools = of_type(model, keras.layers.AveragePooling2D)
    assert [pool.strides for pool in pools] == [(2, 1), (2, 1)]
    pooled = of_type(model, keras.layers.GlobalAveragePooling2D)[-1]
    assert pooled.input_shape == (None, 10, 1, 16 * 8)


def test_complexity_counts_every_weighted_layer_and_converts_to_tflite_builtins():
    model = build()
    report = count_complexity(model)
    assert report.params == model.count_params() and not report.uncounted
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    model = build("resnet-rs:depth=11,base=8,dropout=0")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *INPUT)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert losses[-1] < 0.8 * losses[0]
