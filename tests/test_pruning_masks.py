"""The pruning suite's shared masks and protocol base."""

import numpy as np
import pytest

from effbench.tf import keras
from suites.pruning._masks import MaskKeeper, apply_masks, erk_densities, magnitude_masks, sparsity_facts

L = keras.layers


def two_layer_model() -> keras.Model:
    x = keras.Input((4,))
    model = keras.Model(x, L.Dense(2, name="b")(L.Dense(3, name="a")(x)))
    model.get_layer("a").set_weights([np.arange(1, 13, dtype=np.float32).reshape(4, 3), np.zeros(3)])
    model.get_layer("b").set_weights([np.array([[0.5, 20.0], [30.0, 0.1], [7.5, 8.0]], np.float32), np.zeros(2)])
    return model


def test_global_magnitude_masks_drop_the_smallest_weights_of_all_layers_together():
    masks = magnitude_masks(two_layer_model(), sparsity=0.5)  # the 9 smallest of 18: 0.1, 0.5 and 1 to 7
    assert sparsity_facts(masks) == {"a": pytest.approx(7 / 12), "b": pytest.approx(2 / 6)}
    assert masks["b"].tolist() == [[0, 1], [1, 0], [1, 1]]


def test_layerwise_masks_prune_every_layer_at_the_same_rate():
    facts = sparsity_facts(magnitude_masks(two_layer_model(), sparsity=0.5, scope="layer"))
    assert facts == {"a": 0.5, "b": 0.5}


def test_erk_gives_small_layers_higher_density_and_meets_the_overall_budget():
    shapes = {"conv": (3, 3, 16, 32), "fc": (512, 10), "stem": (3, 3, 3, 16)}
    densities = erk_densities(shapes, sparsity=0.9)
    sizes = {name: np.prod(shape) for name, shape in shapes.items()}
    assert sum(densities[n] * sizes[n] for n in shapes) == pytest.approx(0.1 * sum(sizes.values()))
    assert densities["stem"] > densities["conv"] and max(densities.values()) <= 1.0


def test_mask_keeper_keeps_pruned_weights_at_zero_while_the_others_train():
    model = two_layer_model()
    masks = magnitude_masks(model, sparsity=0.5)
    apply_masks(model, masks)
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    before = np.asarray(model.get_layer("b").kernel).copy()
    model.fit(x, np.ones((16, 2)), epochs=2, verbose=0, callbacks=[MaskKeeper(masks)])
    after = np.asarray(model.get_layer("b").kernel)
    assert np.all(after[masks["b"] == 0] == 0) and np.any(after[masks["b"] == 1] != before[masks["b"] == 1])
