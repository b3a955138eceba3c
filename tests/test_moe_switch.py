"""Specifications of ``moe-switch``: top-1 routing with a capacity, the balancing loss, active MACs, expert load."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effbench.tf import keras
from suites.architectures.moe_switch import SwitchFeedForward, expert_load
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tests.dense_checks import converted_ops
from tests.transformer_checks import (
    DIGITS,
    LISTOPS,
    assert_reloads_and_predicts_the_same,
    build_for,
    gelu_tanh,
    labels,
    softmax,
    task_inputs,
)
from tracks.complexity import count_complexity

TOKENS, DIM, EXPERTS, HIDDEN = 12, 8, 3, 5


@pytest.fixture(scope="module")
def layer() -> SwitchFeedForward:
    """A Switch FFN whose capacity (2 slots of 12 tokens over 3 experts) must drop tokens."""
    keras.utils.set_random_seed(0)
    switch = SwitchFeedForward(EXPERTS, HIDDEN, capacity_factor=0.5)
    switch.build((None, TOKENS, DIM))
    # A router far from its small initialisation, so that the choices are clear-cut.
    switch.router_kernel.assign(np.random.default_rng(1).normal(size=(DIM, EXPERTS)).astype(np.float32))
    return switch


def tokens(seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, TOKENS, DIM)).astype(np.float32)


def test_each_token_gets_its_top_expert_gated_by_its_probability_until_that_expert_is_full(layer):
    x = tokens()
    out = layer(x).numpy()
    probabilities = softmax(x @ layer.router_kernel.numpy())
    experts = probabilities.argmax(-1)
    capacity = math.ceil(0.5 * TOKENS / EXPERTS)
    w1, b1, w2, b2 = (w.numpy() for w in (layer.in_kernel, layer.in_bias, layer.out_kernel, layer.out_bias))
    dropped = 0
    for b in range(2):
        for t in range(TOKENS):
            e = experts[b, t]
            earlier = int((experts[b, :t] == e).sum())
            if earlier >= capacity:  # its expert's slots went to earlier tokens
                dropped += 1
                np.testing.assert_array_equal(out[b, t], 0.0)
                continue
            ffn = gelu_tanh(x[b, t] @ w1[e] + b1[e, 0]) @ w2[e] + b2[e, 0]
            np.testing.assert_allclose(out[b, t], probabilities[b, t, e] * ffn, rtol=1e-4, atol=1e-5)
    assert 0 < dropped < 2 * TOKENS


def test_the_capacity_is_the_factor_times_an_even_share_of_the_tokens_rounded_up():
    switch = SwitchFeedForward(4, 8, capacity_factor=1.25)
    assert (switch.capacity(128), switch.capacity(16), switch.capacity(3)) == (40, 5, 1)
    assert SwitchFeedForward(2, 8, capacity_factor=4.0).capacity(10) == 10  # never more slots than tokens


def test_the_balancing_loss_is_alpha_e_times_the_sum_of_token_fractions_times_mean_probabilities(layer):
    x = tokens(3)
    routing = layer.route(x)
    probabilities = softmax(x @ layer.router_kernel.numpy())
    fractions = np.bincount(probabilities.argmax(-1).ravel(), minlength=EXPERTS) / (2 * TOKENS)
    expected = 0.01 * EXPERTS * np.sum(fractions * probabilities.mean(axis=(0, 1)))
    assert float(layer.balance_loss(routing)) == pytest.approx(expected, rel=1e-5)


def test_the_model_adds_one_balancing_loss_per_switch_layer_and_training_moves_the_router():
    keras.utils.set_random_seed(1)
    model = build_for("moe-switch", DIGITS)
    x, y = task_inputs(DIGITS, 16), labels(16)
    model(x, training=True)
    assert len(model.losses) == 2 and all(float(loss) >= 0.01 for loss in model.losses)  # alpha at the least
    router = model.get_layer("block0_mlp").router_kernel.numpy().copy()
    losses = losses_over_steps(model, x, y)
    assert losses[-1] < 0.8 * losses[0]
    assert not np.allclose(model.get_layer("block0_mlp").router_kernel.numpy(), router)


def test_complexity_counts_the_expert_buffers_as_executed_and_one_expert_per_token_as_active():
    report = count_complexity(build_for("moe-switch", LISTOPS))
    row = report.row("block0_mlp")
    tokens, dim, capacity = 128, 64, 40
    assert row.macs == tokens * dim * 4 + 4 * capacity * 2 * dim * 128
    assert row.macs_active == tokens * dim * 4 + tokens * 2 * dim * 128
    assert row.params == dim * 4 + 4 * (dim * 128 + 128 + 128 * dim + dim)
    whole = {m.name: m.value for m in report.metrics() if not m.scope}
    assert whole["macs_active"] < whole["macs"] and not report.uncounted
    # The attention sublayers run whole: their active MACs are their MACs.
    assert whole["macs"] - whole["macs_active"] == 2 * (row.macs - row.macs_active)


def test_with_experts_as_wide_as_the_dense_mlp_the_active_macs_are_the_tiny_transformers_plus_the_routers():
    switch, tiny = (count_complexity(build_for(reference, LISTOPS)) for reference in ("moe-switch", "tiny-transformer"))
    assert switch.macs_active == tiny.macs + 2 * 128 * 64 * 4


def test_expert_load_gives_each_switch_layers_token_fractions_and_drops():
    keras.utils.set_random_seed(2)
    model = build_for("moe-switch:capacity_factor=1.0", DIGITS)
    loads = expert_load(model, task_inputs(DIGITS, 8))
    assert set(loads) == {"block0_mlp", "block1_mlp"}
    for load in loads.values():
        assert load.fractions.shape == (4,) and load.fractions.sum() == pytest.approx(1.0)
        # With room for an even share (a quarter) each, every token over an expert's share is dropped.
        assert load.dropped >= np.maximum(load.fractions - 0.25, 0.0).sum() - 1e-6


def test_it_reloads_without_custom_objects(tmp_path):
    model = build_for("moe-switch", LISTOPS)
    reloaded = assert_reloads_and_predicts_the_same(model, task_inputs(LISTOPS, 3), tmp_path / "moe.keras")
    assert reloaded.get_layer("block1_mlp").get_config()["capacity_factor"] == 1.25


def test_tflite_converts_the_routing_to_builtin_ops_and_routes_as_keras_does():
    keras.utils.set_random_seed(3)
    model = build_for("moe-switch", DIGITS)
    _, ops = converted_ops(model)
    assert {"ARG_MAX", "ONE_HOT", "CUMSUM", "TOPK_V2", "GATHER", "BATCH_MATMUL"} <= set(ops)
    x = task_inputs(DIGITS, 4)
    np.testing.assert_allclose(tflite_outputs(model, x), model(x).numpy(), rtol=1e-3, atol=1e-4)
