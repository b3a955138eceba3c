"""Specifications of ``macaron``: half-step FFN, attention, half-step FFN, at the tiny transformer's cost."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.tf import keras
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tests.transformer_checks import (
    DIGITS,
    LISTOPS,
    assert_reloads_and_predicts_the_same,
    attention_sublayer,
    block_io,
    build_for,
    labels,
    mlp_sublayer,
    task_inputs,
)
from tracks.complexity import count_complexity


@pytest.fixture(scope="module")
def listops_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_for("macaron", LISTOPS)


def test_a_block_is_half_an_ffn_step_then_attention_then_half_an_ffn_step(listops_model):
    model = listops_model
    x, out = block_io(model, "block1", task_inputs(LISTOPS, 2))
    x = x + 0.5 * mlp_sublayer(model, "block1_mlp1", x)
    x = x + attention_sublayer(model, "block1", x, heads=4)
    x = x + 0.5 * mlp_sublayer(model, "block1_mlp2", x)
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-4)


def test_the_two_ffns_have_weights_of_their_own(listops_model):
    first, second = (listops_model.get_layer(f"block0_mlp{i}_in").kernel.numpy() for i in (1, 2))
    assert first.shape == second.shape == (64, 64)
    assert not np.allclose(first, second)


def test_ids_are_embedded_one_token_each():
    model = build_for("macaron", LISTOPS)
    embedding = model.get_layer("token_embedding")
    assert isinstance(embedding, keras.layers.Embedding)
    assert embedding.input_dim == LISTOPS.vocabulary and embedding.output_shape == (None, 128, 64)


@pytest.mark.parametrize("spec", [LISTOPS, DIGITS], ids=["listops-short", "digits"])
def test_at_the_default_width_it_costs_the_tiny_transformers_macs_and_one_layer_norm_more_per_block(spec):
    macaron, tiny = (count_complexity(build_for(reference, spec)) for reference in ("macaron", "tiny-transformer"))
    assert macaron.macs == tiny.macs
    # Per block (depth 2): the third LayerNorm (gamma, beta) and the second FFN's output bias, each of width 64.
    assert macaron.params == tiny.params + 2 * (2 * 64 + 64)
    assert not macaron.uncounted


def test_a_few_steps_on_one_batch_reduce_the_loss_on_image_patches():
    keras.utils.set_random_seed(1)
    model = build_for("macaron", DIGITS)
    losses = losses_over_steps(model, task_inputs(DIGITS, 16), labels(16))
    assert losses[-1] < 0.8 * losses[0]


def test_it_reloads_without_custom_objects(listops_model, tmp_path):
    assert_reloads_and_predicts_the_same(listops_model, task_inputs(LISTOPS, 3), tmp_path / "macaron.keras")


def test_it_converts_to_builtin_tflite_ops_that_compute_what_keras_does(listops_model):
    x = task_inputs(LISTOPS, 4)
    np.testing.assert_allclose(tflite_outputs(listops_model, x), listops_model(x).numpy(), rtol=1e-3, atol=1e-4)
