"""Specifications of ``poincare-resnet``: the ball's maps, the Poincaré layers against their definitions, activations
that stay inside the ball, and the network's training, cost and conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras, tf
from suites.architectures._layers import Geometry
from suites.architectures.poincare_resnet import (
    BALL_MARGIN,
    PoincareBatchNorm,
    PoincareConv2D,
    PoincareDense,
    PoincareResidual,
    distance,
    expmap0,
    logmap0,
    midpoint,
    mobius_add,
)
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

C = 0.1
SMALL = "poincare-resnet:depth=8,base=4"


def one_block_network() -> keras.Model:
    """Stem conv and BN, one strided block (its 1x1 shortcut, the residual) and the Poincaré logits: every layer
    kind of the network, at a fraction of the cost of tracing it."""
    method, geometry = MethodRef.parse(SMALL).create(), Geometry((8, 8, 1))
    inputs, x = geometry.inputs()
    x = keras.layers.ReLU()(method.conv_bn(x, 4, (3, 3), (1, 1), C))
    x = keras.layers.GlobalAveragePooling2D()(method.block(x, 8, (2, 2), geometry, C))
    return keras.Model(inputs, PoincareDense(10, curvature=C, name="logits")(x))


def tangents(shape: tuple[int, ...], scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


def test_log_inverts_exp_and_the_origin_is_the_identity_of_mobius_addition():
    v = tangents((6, 5))
    x = expmap0(v, C)
    np.testing.assert_allclose(logmap0(x, C), v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mobius_add(x, tf.zeros_like(x), C), x, atol=1e-6)
    np.testing.assert_allclose(mobius_add(tf.zeros_like(x), x, C), x, atol=1e-6)
    np.testing.assert_allclose(distance(x, x, C), 0.0, atol=1e-2)  # the 1e-12 norm floor, through artanh


def test_identity_initialised_layers_pass_their_input_through_so_norms_survive_depth():
    # Z = I / 2 and r = 0 make the Poincaré fully connected layer the identity map of the ball (the paper's init).
    v = tangents((4, 3, 3, 6))
    x = v
    for _ in range(10):
        x = PoincareConv2D(6, (1, 1), curvature=C)(x)
    np.testing.assert_allclose(x, v, rtol=1e-3, atol=1e-4)
    flat = v.reshape(-1, 6)
    np.testing.assert_allclose(PoincareDense(6, curvature=C)(flat), flat, rtol=1e-3, atol=1e-4)


def test_the_convolution_is_the_fully_connected_layer_on_each_beta_concatenated_patch():
    rng = np.random.default_rng(1)
    v = tangents((2, 5, 5, 3), scale=0.5)
    conv = PoincareConv2D(4, (3, 3), curvature=C)
    conv.build(v.shape)
    conv.kernel.assign(rng.normal(0, 0.3, size=conv.kernel.shape).astype("float32"))
    conv.bias.assign(rng.normal(0, 0.1, size=(4,)).astype("float32"))
    patches = tf.image.extract_patches(v, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")  # (row, column, channel)
    dense = PoincareDense(4, curvature=C)
    dense.build((None, 27))
    dense.set_weights([conv.kernel.numpy().reshape(27, 4), conv.bias.numpy()])
    scale = math.exp(math.lgamma(13.5) - math.lgamma(14.0)) / math.exp(math.lgamma(1.5) - math.lgamma(2.0))
    expected = dense(tf.reshape(patches, [-1, 27]) * scale).numpy().reshape(2, 5, 5, 4)
    np.testing.assert_allclose(conv(v), expected, rtol=1e-4, atol=1e-5)


def test_batch_norm_moves_the_batch_midpoint_to_the_learned_mean_with_the_learned_variance():
    v = tangents((64, 4), scale=2.0) + 1.0
    norm = PoincareBatchNorm(curvature=C, momentum=0.5)
    out = expmap0(norm(v, training=True), C)
    np.testing.assert_allclose(midpoint(out, C), 0.0, atol=0.05)  # exp_0 of the initial mean, zeros
    np.testing.assert_allclose(tf.reduce_mean(tf.square(distance(out, tf.zeros((1, 4)), C))), 1.0, rtol=0.05)
    batch_mean = logmap0(midpoint(expmap0(v, C), C), C)[0]
    np.testing.assert_allclose(norm.moving_mean, 0.5 * batch_mean, rtol=1e-4)
    assert norm(v, training=False).shape == v.shape


def test_every_layer_output_is_the_log_of_a_point_inside_the_ball_even_for_huge_inputs():
    model = MethodRef.parse(SMALL).create().build((8, 8, 1), 10)
    hyperbolic = (PoincareConv2D, PoincareBatchNorm, PoincareResidual, PoincareDense)
    probes = [layer.output for layer in model.layers if isinstance(layer, hyperbolic)]
    outputs = keras.Model(model.inputs, probes)(tangents((4, 8, 8, 1), scale=100.0), training=True)
    assert len(outputs) == len(probes) > 10
    for output in outputs:
        norms = np.linalg.norm(output.numpy().astype("float64"), axis=-1)
        assert np.isfinite(norms).all()
        ball_norms = np.tanh(math.sqrt(C) * norms) / math.sqrt(C)
        assert ball_norms.max() <= (1 - BALL_MARGIN) / math.sqrt(C) + 1e-4 < 1 / math.sqrt(C)


def test_a_few_training_steps_reduce_the_loss_with_finite_gradients():
    keras.utils.set_random_seed(0)
    model = one_block_network()
    rng = np.random.default_rng(0)
    x, y = tangents((16, 8, 8, 1)), rng.integers(0, 10, size=16)
    losses = losses_over_steps(model, x, y, steps=6)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_complexity_counts_every_layer_and_the_matched_size_is_resnet20s():
    model = MethodRef.parse("poincare-resnet").create().build((8, 8, 1), 10)
    report = count_complexity(model)
    assert report.uncounted == []
    stem = next(layer for layer in model.layers if isinstance(layer, PoincareConv2D))
    # The convolution with Z plus the window sum of squares, at each of the 8 x 8 positions.
    assert report.row(stem.name).macs == 64 * 9 * (16 + 1)
    assert isinstance(model.get_layer("logits"), PoincareDense)


def test_bad_depth_and_curvature_are_refused():
    with pytest.raises(ValueError, match="8, 20, 32, 56"):
        MethodRef.parse("poincare-resnet:depth=18").create()
    with pytest.raises(ValueError, match="curvature must be positive"):
        MethodRef.parse("poincare-resnet:curvature=0").create()


def test_tflite_converts_every_layer_kind_with_builtins_and_agrees_with_keras():
    model = one_block_network()
    x = tangents((2, 8, 8, 1))
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)
