"""Specifications of ``shallow-again``: the residual stack's layers side by side, its first-order truncation."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

INPUT = (8, 8, 1)


def build(reference: str, input_shape: tuple[int, ...] = INPUT) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, 10)


def producers(layer: keras.layers.Layer) -> list[str]:
    return [node.layer.name for node in layer.inbound_nodes[0].parent_nodes]


def stack_output(model: keras.Model) -> keras.Model:
    """The model up to the residual stack's output (what the pooling layer reads)."""
    return keras.Model(model.inputs, model.get_layer("pool").input)


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> None:
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def scale_residual_layers(model: keras.Model, scale: float) -> None:
    """Multiply every f_i by ``scale``: BN's gamma (beta is 0), which ReLU passes through (it is homogeneous)."""
    for layer in model.layers:
        if layer.name.startswith("layer") and isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma * scale, beta * 0, mean, variance])


def test_every_layer_of_the_shallow_stack_reads_the_stems_output_and_one_sum_adds_them_to_it():
    model = build("shallow-again:depth=3,width=8")
    convs = [layer for layer in model.layers if layer.name.startswith("layer") and layer.name.endswith("_conv")]
    assert len(convs) == 3
    assert all(producers(conv) == ["stem_relu"] for conv in convs)
    assert producers(model.get_layer("stack_add")) == ["stem_relu", "layer0_relu", "layer1_relu", "layer2_relu"]
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 1


def test_the_deep_form_composes_the_same_layers_one_after_the_other():
    model = build("shallow-again:depth=3,width=8,form=deep")
    assert producers(model.get_layer("layer0_conv")) == ["stem_relu"]
    assert producers(model.get_layer("layer1_conv")) == ["layer0_add"]
    assert producers(model.get_layer("layer2_add")) == ["layer1_add", "layer2_relu"]


def test_both_forms_have_the_same_layers_params_and_macs():
    shallow, deep = build("shallow-again:depth=4,width=8"), build("shallow-again:depth=4,width=8,form=deep")
    weighted = {layer.name: [w.shape for w in layer.weights] for layer in shallow.layers if layer.weights}
    assert weighted == {layer.name: [w.shape for w in layer.weights] for layer in deep.layers if layer.weights}
    ours, theirs = count_complexity(shallow), count_complexity(deep)
    assert (ours.params, ours.macs) == (theirs.params, theirs.macs)
    # The stem, L = 4 convs and the logits: k x k x C_in x C_out per output position.
    assert ours.macs == 8 * 8 * 9 * (1 * 8 + 4 * 8 * 8) + 8 * 10


def test_the_shallow_stack_is_the_deep_one_truncated_after_the_first_order_term():
    # With every f_i scaled by e, the deep stack is x + e sum f_i(x) + O(e^2): the gap to the shallow one
    # falls as e^2, a hundredfold for a tenfold smaller e (not tenfold, as a first-order gap would).
    shallow, deep = build("shallow-again:depth=3,width=8"), build("shallow-again:depth=3,width=8,form=deep")
    copy_weights_by_name(shallow, deep)
    x = np.random.default_rng(0).normal(size=(4, *INPUT)).astype("float32")
    gaps = []
    for scale in (0.1, 0.01):
        for model in (shallow, deep):
            scale_residual_layers(model, scale)
        gap = stack_output(deep)(x, training=False) - stack_output(shallow)(x, training=False)
        gaps.append(float(np.abs(gap).max()))
        for model in (shallow, deep):
            scale_residual_layers(model, 1 / scale)
    assert gaps[0] > 0
    assert 30 < gaps[0] / gaps[1] < 300


def test_with_one_layer_the_two_forms_are_the_same_function():
    shallow, deep = build("shallow-again:depth=1,width=8"), build("shallow-again:depth=1,width=8,form=deep")
    copy_weights_by_name(shallow, deep)
    x = np.random.default_rng(0).normal(size=(4, *INPUT)).astype("float32")
    np.testing.assert_allclose(deep(x, training=False), shallow(x, training=False), rtol=1e-5, atol=1e-6)


def test_vector_inputs_get_column_kernels():
    model = build("shallow-again:depth=2,width=8", (40,))
    assert {layer.kernel_size for layer in model.layers if isinstance(layer, keras.layers.Conv2D)} == {(3, 1)}


def test_the_complexity_track_counts_every_weighted_layer():
    model = build("shallow-again:depth=3,width=8")
    report = count_complexity(model)
    assert not report.uncounted
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            assert report.row(layer.name).macs > 0, layer.name


def test_an_unknown_form_raises():
    with pytest.raises(ValueError, match="form"):
        MethodRef.parse("shallow-again:form=wide").create()


def test_a_few_steps_lower_the_loss():
    model = build("shallow-again:depth=3,width=8")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *INPUT)).astype("float32"), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert losses[-1] < 0.8 * losses[0]


def test_converts_to_tflite_builtins_and_matches_keras():
    model = build("shallow-again:depth=3,width=8")
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)
