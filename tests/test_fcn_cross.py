"""Specifications of ``fcn-cross``: an exponential and a linear cross network with Self-Mask, fused logits, Tri-BCE."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.recipe import Recipe
from effbench.registry import TASKS
from effbench.tasks.base import Splits
from effbench.tasks.ctr_synth import CARDINALITIES, VOCABULARY
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.architectures.fcn_cross import BRANCHES, TriBCETrainer, tri_bce
from tests.architecture_checks import tflite_outputs
from tracks.complexity import count_complexity

FIELDS = len(CARDINALITIES)


def build(options: str = "", input_shape: tuple[int, ...] = (FIELDS,), num_classes: int = 2) -> keras.Model:
    keras.utils.set_random_seed(0)
    return MethodRef.parse(f"fcn-cross:{options}").create().build(input_shape, num_classes)


@functools.cache
def ctr_model(options: str = f"vocabulary={VOCABULARY}") -> keras.Model:
    return build(options)


def ids(count: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCABULARY, (count, FIELDS)).astype(np.float32)


def clicks(count: int = 8) -> np.ndarray:
    return np.arange(count) % 2


def final_states(model: keras.Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x_E, x_L): the two networks' final states, which the logits layer reads."""
    states = keras.Model(model.inputs, model.get_layer(BRANCHES).input)(x, training=False)
    return tuple(state.numpy().astype(np.float64) for state in states)


def hold_the_mask_open_and_average(model: keras.Model) -> None:
    """W_l = 1/d everywhere (h_i = the mean of x_l), b_l = 0, and LayerNorm's gamma = 0, beta = 1 (mask m = 1)."""
    for layer in model.layers:
        if layer.name.endswith("_kernel"):
            layer.set_weights([np.full(layer.kernel.shape, 1.0 / layer.kernel.shape[0], np.float32)])
        elif layer.name.endswith("_bias"):
            layer.set_weights([np.zeros(layer.bias.shape, np.float32)])
        elif layer.name.endswith("_mask_norm"):
            gamma, beta = layer.get_weights()
            layer.set_weights([np.zeros_like(gamma), np.ones_like(beta)])


def test_ctr_model_outputs_the_two_logits_the_task_trains_on():
    model = ctr_model()
    assert model.input_shape == (None, FIELDS) and model.output_shape == (None, 2)
    assert model.layers[-1].name == "logits" and model.get_layer("embedding").input_dim == VOCABULARY


def test_x0_holds_the_first_half_of_every_fields_embedding_then_the_second_halves():
    model, x = ctr_model(), ids(2)
    x0 = keras.Model(model.inputs, model.get_layer("ecn0_kernel").input)(x).numpy()
    table = model.get_layer("embedding").embeddings.numpy()
    embedded = table[x.astype(int)]  # (batch, fields, dim)
    np.testing.assert_array_equal(x0, np.concatenate([embedded[..., :8], embedded[..., 8:]], axis=1).reshape(2, -1))


def test_parameter_count_is_embeddings_plus_half_width_cross_layers_plus_the_fused_head():
    dim, layers, classes = 16, 4 + 4, 2
    width = FIELDS * dim
    # Per cross layer: W (d x d/2, no bias), LayerNorm's gamma and beta (d/2 each), b (d).
    cross_layer = width * (width // 2) + 2 * (width // 2) + width
    expected = VOCABULARY * dim + layers * cross_layer + (2 * width) * classes + classes
    assert ctr_model().count_params() == expected == 135_970


def test_the_self_mask_and_both_cross_formulas_at_random_weights():
    model = build("ecn_layers=2,lcn_layers=2", input_shape=(6,))
    x0 = np.random.default_rng(0).normal(size=(5, 6))

    def masked(x, name):
        h = x @ model.get_layer(f"{name}_kernel").kernel.numpy()
        gamma, beta = model.get_layer(f"{name}_mask_norm").get_weights()
        normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * gamma + beta
        return np.concatenate([h, h * np.maximum(normed, 0.0)], axis=-1) + model.get_layer(f"{name}_bias").bias.numpy()

    exponential, linear = x0, x0
    for layer in range(2):
        exponential = exponential * masked(exponential, f"ecn{layer}") + exponential
        linear = x0 * masked(linear, f"lcn{layer}") + linear
    got_exponential, got_linear = final_states(model, x0.astype(np.float32))
    np.testing.assert_allclose(got_exponential, exponential, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_linear, linear, rtol=1e-4, atol=1e-5)


def test_interaction_order_is_exponential_in_ecn_depth_and_linear_in_lcn_depth():
    # x_0 = (t, t, t, t): with the mask open and W averaging, every coordinate of x_l is one polynomial s_l(t):
    # ECN s_{l+1} = s_l^2 + s_l (degree 2^l), LCN s_{l+1} = t s_l + s_l (degree l + 1), both with leading
    # coefficient 1. Small integers t keep every value an exact float32 integer, so the finite differences are exact.
    model = build("ecn_layers=3,lcn_layers=3,ecn_dropout=0,lcn_dropout=0", input_shape=(4,))
    hold_the_mask_open_and_average(model)
    t = np.arange(-4, 6, dtype=np.float32)
    exponential, linear = final_states(model, np.repeat(t[:, None], 4, axis=1))
    assert np.all(exponential == exponential[:, :1]) and np.all(linear == linear[:, :1])
    assert np.diff(exponential[:, 0], n=8).tolist() == [math.factorial(8)] * 2  # degree 2^3 = 8
    assert np.diff(exponential[:, 0], n=9).tolist() == [0.0]
    assert np.diff(linear[:, 0], n=4).tolist() == [math.factorial(4)] * 6  # degree 3 + 1 = 4
    assert np.diff(linear[:, 0], n=5).tolist() == [0.0] * 5


def test_fused_logits_are_the_mean_of_the_two_branch_logits():
    model = ctr_model()
    x = ids()
    fused, exponential, linear = TriBCETrainer(model).branch_logits(x, training=False)
    np.testing.assert_allclose(fused, (exponential + linear) / 2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model(x, training=False), fused, rtol=1e-5, atol=1e-5)
    assert np.abs(exponential - linear).max() > 1e-3  # two heads, not one logit counted twice


@pytest.mark.parametrize(
    "losses,expected",
    [
        ((0.5, 0.75, 0.25), 0.5 + 0.25 * 0.75),  # only the lagging ECN is weighted, by its excess
        ((0.5, 0.25, 1.0), 0.5 + 0.5 * 1.0),
        ((0.5, 0.5, 0.25), 0.5),  # no branch lags: the fused loss alone
    ],
)
def test_tri_bce_adds_each_branch_loss_weighted_by_its_excess_over_the_fused_loss(losses, expected):
    assert float(tri_bce(*(tf.constant(value) for value in losses))) == pytest.approx(expected)


def test_the_trainer_optimises_tri_bce_of_the_three_logits_and_lowers_it():
    model = build(f"vocabulary={VOCABULARY},ecn_layers=2,lcn_layers=2")
    trainer = TriBCETrainer(model)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), loss=cross_entropy, run_eagerly=True)
    x, y = ids(16), clicks(16)
    fused, exponential, linear = trainer.branch_logits(x, training=False)
    expected = tri_bce(cross_entropy(y, fused), cross_entropy(y, exponential), cross_entropy(y, linear))
    logged = trainer.evaluate(x, y, return_dict=True, verbose=0)
    assert logged["tri_bce"] == pytest.approx(float(expected), rel=1e-5)
    assert logged["loss"] == pytest.approx(float(cross_entropy(y, fused)), rel=1e-5)
    steps = [trainer.train_on_batch(x, y, return_dict=True) for _ in range(6)]
    assert steps[-1]["tri_bce"] < steps[0]["tri_bce"]


def test_run_trains_through_tri_bce_and_deploys_the_fcn_itself():
    task = TASKS.get("ctr-synth").factory()
    x, y = ids(64), clicks(64)
    splits = Splits(x, y, x[:16], y[:16], x[:16], y[:16])
    context = TrainContext(task, splits, Recipe(optimizer="adam", epochs=1, batch_size=32), 0, "smoke")
    artifact = MethodRef.parse("fcn-cross:ecn_layers=1,lcn_layers=1").create().run(context)
    assert {"loss", "tri_bce", "accuracy", "val_loss", "val_tri_bce", "val_accuracy"} <= set(artifact.history)
    assert not isinstance(artifact.model, TriBCETrainer) and artifact.model.output_shape == (None, 2)


def test_complexity_counts_every_layer_and_the_cross_kernels_macs():
    report = count_complexity(ctr_model())
    width = FIELDS * 16
    assert report.uncounted == []
    assert report.row("ecn3_kernel").macs == report.row("lcn0_kernel").macs == width * width // 2


def test_an_odd_embedding_width_is_an_error():
    with pytest.raises(ValueError, match="dim must be even"):
        build(f"vocabulary={VOCABULARY},dim=5")


def test_converts_to_tflite_builtins_and_computes_what_keras_computes():
    model = build(f"vocabulary={VOCABULARY},ecn_layers=1,lcn_layers=1")
    x = ids()
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-4, atol=1e-5)
