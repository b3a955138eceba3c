"""Specifications of ``s-kan``: edge functions from a pool of spaces, mixed per node, as an MLP's hidden layers."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.s_kan import SPACES, SKANDense, chebyshev_basis, fourier_basis, rbf_basis
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tests.dense_checks import converted_ops
from tracks.complexity import count_complexity

INPUT = (40,)
GRID = 4


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def numpy_basis(x: np.ndarray) -> dict[str, np.ndarray]:
    """Each space's G functions of every element of ``x``, from their closed forms: (..., G) per space."""
    t = np.tanh(x)[..., None]
    centres, width = np.linspace(-2, 2, GRID), 4 / (GRID - 1)
    return {
        "rbf": np.exp(-(((x[..., None] - centres) / width) ** 2)),
        "chebyshev": np.cos(np.arange(1, GRID + 1) * np.arccos(t)),  # T_k(cos u) = cos(k u)
        "fourier": np.stack([np.sin(x), np.cos(x), np.sin(2 * x), np.cos(2 * x)], axis=-1),
    }


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return MethodRef.parse("s-kan:units=12").create().build(INPUT, 10)


def test_each_basis_is_its_closed_form():
    x = np.random.default_rng(0).normal(0, 2, size=(3, 5)).astype("float32")
    expected = numpy_basis(x)
    for space, function in (("rbf", rbf_basis), ("chebyshev", chebyshev_basis), ("fourier", fourier_basis)):
        np.testing.assert_allclose(function(x, GRID), expected[space], rtol=1e-4, atol=1e-5, err_msg=space)


def test_every_edge_is_its_own_function_mixing_the_spaces_by_the_nodes_softmax():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5)).astype("float32")
    layer = SKANDense(2, GRID)
    layer.build(x.shape)
    logits = rng.normal(size=(len(SPACES), 2)).astype("float32")
    layer.selection.assign(logits)
    layer.bias.assign([0.5, -1.0])
    alpha = np.exp(logits) / np.exp(logits).sum(axis=0)
    base, coefficients = layer.base_kernel.numpy(), layer.coefficients.numpy()
    basis = numpy_basis(x)
    # phi_ij(x_i) = w_ij silu(x_i) + sum_s alpha_sj sum_g c_sgij B_sg(x_i); y_j = sum_i phi_ij(x_i) + b_j
    expected = np.zeros((3, 2))
    for j in range(2):
        for i in range(5):
            edge = base[i, j] * silu(x[:, i])
            for s, space in enumerate(SPACES):
                edge += alpha[s, j] * basis[space][:, i] @ coefficients[i, s, :, j]
            expected[:, j] += edge
    np.testing.assert_allclose(layer(x), expected + [0.5, -1.0], rtol=1e-4, atol=1e-4)


def test_selection_starts_even_and_a_node_can_select_one_space():
    x = np.random.default_rng(2).normal(size=(4, 5)).astype("float32")
    layer = SKANDense(3, GRID)
    layer.build(x.shape)
    np.testing.assert_allclose(layer.space_weights(), 1 / len(SPACES))
    layer.base_kernel.assign(np.zeros((5, 3)))
    chebyshev_only = np.full((len(SPACES), 3), -30.0, dtype="float32")
    chebyshev_only[SPACES.index("chebyshev")] = 30.0
    layer.selection.assign(chebyshev_only)
    coefficients = layer.coefficients.numpy()[:, SPACES.index("chebyshev")]  # (d, G, units)
    expected = np.einsum("big,igj->bj", numpy_basis(x)["chebyshev"], coefficients)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-5)


def test_hidden_dense_layers_become_s_kan_layers_of_the_chosen_width(model):
    layers = [layer for layer in model.layers if isinstance(layer, SKANDense)]
    assert len(layers) == 2 and [layer.units for layer in layers] == [12, 12]
    assert type(model.get_layer("logits")) is keras.layers.Dense and model.get_layer("logits").input_shape == (None, 12)


def test_parameters_and_macs_are_one_plus_spaces_times_grid_per_edge(model):
    report = count_complexity(model)
    per_edge = 1 + len(SPACES) * GRID
    edges = 40 * 12 + 12 * 12
    assert report.params == model.count_params() == edges * per_edge + 2 * (len(SPACES) * 12 + 12) + 12 * 10 + 10
    assert report.macs == edges * per_edge + 12 * 10


def test_grid_below_two_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        SKANDense(4, grid=1)


def test_converts_to_builtins_with_the_bases_own_ops_and_matches_keras(model):
    _, ops = converted_ops(model)
    assert {"EXP", "TANH", "SIN", "LOGISTIC", "FULLY_CONNECTED"} <= set(ops)
    assert not any(op.startswith(("FLEX", "CUSTOM")) or op == "SOFTMAX" for op in ops)  # the softmax folds
    assert ops.count("FULLY_CONNECTED") == 5  # per layer the base term and the bases' one matrix; the logits
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-4, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    model = MethodRef.parse("s-kan:units=12").create().build(INPUT, 10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, *INPUT)).astype("float32"), rng.integers(0, 10, size=32)
    losses = losses_over_steps(model, x, y, steps=8)
    assert losses[-1] < 0.7 * losses[0]
