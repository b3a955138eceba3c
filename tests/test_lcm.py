"""Specifications of ``lcm``: a set classifier whose aggregator is a learnable commutative operator, reduced as a
balanced binary tree of depth ceil(log2 n)."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.lcm import GRU_GATES, add, monoid_tree
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import count_complexity

# Small widths keep the graphs (and their conversion) quick; the mechanism does not depend on them.
SMALL = "units=8,phi_layers=1"


@functools.cache
def build(options: str = SMALL, set_size: int = 3, features: int = 64) -> keras.Model:
    keras.utils.set_random_seed(0)
    return MethodRef.parse(f"lcm:{options}").create().build((set_size, features), 10)


def sets(set_size: int = 3, features: int = 64, count: int = 4) -> np.ndarray:
    return np.random.default_rng(1).random((count, set_size, features)).astype(np.float32)


def logits(model: keras.Model, x: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    return model(x[:, list(order)], training=False).numpy()


@pytest.mark.parametrize("count", range(1, 10))
def test_the_tree_has_ceil_log2_n_levels_and_combines_n_minus_1_pairs(count):
    pairs_per_level = []

    def counting_add(left, right):
        pairs_per_level.append(left.shape[1])
        return add(left, right)

    elements = keras.Input((count, 3))
    monoid_tree(elements, counting_add)
    assert len(pairs_per_level) == math.ceil(math.log2(count))
    assert sum(pairs_per_level) == count - 1


@pytest.mark.parametrize(
    "count,expected",
    [
        (3, lambda e: (e[0] - e[1]) - e[2]),
        (4, lambda e: (e[0] - e[1]) - (e[2] - e[3])),
        (5, lambda e: ((e[0] - e[1]) - (e[2] - e[3])) - e[4]),
        (6, lambda e: ((e[0] - e[1]) - (e[2] - e[3])) - (e[4] - e[5])),
    ],
)
def test_each_level_pairs_neighbours_and_carries_an_unpaired_last_element_up(count, expected):
    # Subtraction is not commutative, so the result shows which element sat where in the tree.
    elements = keras.Input((count, 2))
    tree = keras.Model(elements, monoid_tree(elements, lambda a, b: keras.layers.Subtract()([a, b])))
    values = np.random.default_rng(0).normal(size=(3, count, 2)).astype(np.float32)
    np.testing.assert_allclose(tree(values), expected(values.transpose(1, 0, 2)), rtol=1e-5, atol=1e-6)


def test_the_operator_is_commutative_so_swapping_the_first_pair_leaves_the_logits_unchanged():
    model, x = build(), sets()
    np.testing.assert_allclose(logits(model, x, (1, 0, 2)), logits(model, x, (0, 1, 2)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("order", [(1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0)])
def test_every_symmetry_of_the_tree_of_four_leaves_the_logits_unchanged(order):
    model, x = build(set_size=4), sets(set_size=4)
    np.testing.assert_allclose(logits(model, x, order), logits(model, x, (0, 1, 2, 3)), rtol=0, atol=1e-6)


def test_the_operator_is_not_associative_by_construction_so_another_pairing_changes_the_logits():
    # ((a + b) + c) against ((a + c) + b): only training can bring these together (the paper's operator is
    # commutative by construction, associative only as far as it is learnt).
    model, x = build(), sets()
    assert np.abs(logits(model, x, (0, 2, 1)) - logits(model, x, (0, 1, 2))).max() > 1e-3


def test_the_sum_aggregator_is_deepsets_invariant_to_every_permutation():
    model, x = build(f"{SMALL},aggregator=sum"), sets()
    reference = logits(model, x, (0, 1, 2))
    for order in itertools.permutations(range(3)):
        np.testing.assert_allclose(logits(model, x, order), reference, rtol=1e-5, atol=1e-5)


def test_phi_is_one_set_of_weights_for_every_element():
    three, six = build(set_size=3), build(set_size=6)
    assert three.count_params() == six.count_params()


def test_complexity_counts_each_gate_projection_for_both_members_of_each_of_the_n_minus_1_pairs():
    model, units, count = build(set_size=5), 8, 5
    report = count_complexity(model)
    assert report.uncounted == []
    for gate in GRU_GATES:
        for side in ("input", "hidden"):
            assert report.row(f"monoid_{side}_{gate}").macs == (count - 1) * 2 * units * units
    assert report.row("phi_0").macs == count * 64 * units  # phi once per element


def test_a_few_training_steps_lower_the_loss():
    model = MethodRef.parse(f"lcm:{SMALL}").create().build((3, 64), 10)
    losses = losses_over_steps(model, sets(count=16), np.arange(16) % 10)
    assert losses[-1] < losses[0]


def test_converts_to_tflite_builtins_and_computes_what_keras_computes():
    # Two elements: one level of the tree, every op of the operator; a third adds only a slice and a
    # concatenation, and doubles the conversion time.
    model, x = build(set_size=2), sets(set_size=2)
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-4, atol=1e-5)


def test_an_unknown_aggregator_is_an_error():
    with pytest.raises(ValueError, match="aggregator must be one of lcm, sum"):
        MethodRef.parse("lcm:aggregator=max").create()
