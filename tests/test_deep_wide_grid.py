"""Specifications of ``deep-wide-grid``: one run trains and deploys the depth x width grid in both forms."""

from __future__ import annotations

import numpy as np
import pytest

from effbench.method import MAIN, MethodRef
from effbench.recipe import Recipe
from effbench.registry import TASKS
from effbench.tasks.base import Splits
from effbench.tf import keras
from effbench.training import TrainContext
from tests.architecture_checks import tflite_outputs
from tracks.complexity import count_complexity

INPUT = (8, 8, 1)


def grid(reference: str = "deep-wide-grid"):
    return MethodRef.parse(reference).create()


def stack_convs(model: keras.Model) -> list[keras.layers.Conv2D]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.name != "stem_conv"]


def adds(model: keras.Model) -> int:
    return sum(isinstance(layer, keras.layers.Add) for layer in model.layers)


def test_the_default_grid_is_three_depths_by_two_widths_in_both_forms_named_by_its_coordinates():
    method = grid()
    points = {(p.form, p.depth, p.width) for p in method.grid()}
    assert points == {(form, d, w) for form in ("deep", "shallow") for d in (1, 2, 4) for w in (16, 32)}
    names = method.deployable_names()
    assert len(names) == len(set(names)) == 12 and names[0] == MAIN
    assert "deep-depth4-width32" in names and "shallow-depth1-width16" in names
    assert (method.main_point().form, method.main_point().depth, method.main_point().width) == ("shallow", 4, 32)


def test_the_grid_options_set_where_it_starts_and_how_many_doublings_it_takes():
    points = grid("deep-wide-grid:min_depth=2,depths=2,min_width=8,widths=3").grid()
    assert sorted({p.depth for p in points}) == [2, 4] and sorted({p.width for p in points}) == [8, 16, 32]


@pytest.mark.parametrize("option", ["depths=0", "min_width=0", "kernel=2.5"])
def test_options_that_are_not_positive_integers_raise(option):
    with pytest.raises(ValueError, match="positive integers"):
        grid(f"deep-wide-grid:{option}")


def test_at_each_point_the_two_forms_cost_the_same_and_cost_grows_with_depth_and_width():
    method = grid("deep-wide-grid:depths=2,widths=2,min_width=8")
    macs = {}
    for point in method.grid():
        report = count_complexity(method.build_point(point, INPUT, 10))
        macs[point.form, point.depth, point.width] = (report.macs, report.params)
    for depth in (1, 2):
        for width in (8, 16):
            assert macs["deep", depth, width] == macs["shallow", depth, width]
    assert macs["shallow", 1, 8] < macs["shallow", 2, 8] < macs["shallow", 2, 16]


def test_build_is_the_main_deployable_the_widest_shallow_network():
    model = grid().build(INPUT, 10)
    assert model.name == "deep-wide-grid-depth4-formshallow-kernel3-width32"
    assert [conv.filters for conv in stack_convs(model)] == [32] * 4 and adds(model) == 1


def test_one_run_trains_every_point_and_deploys_it_with_its_coordinates_as_facts():
    method = grid("deep-wide-grid:depths=2,widths=1,min_width=4")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, *INPUT)).astype("float32"), rng.integers(0, 10, size=32)
    task = TASKS.get("digits").factory()
    context = TrainContext(task, Splits(x, y, x[:8], y[:8], x[:8], y[:8]), Recipe(epochs=1, batch_size=16), 0, "smoke")
    artifact = method.run(context)
    deployables = artifact.all_deployables()
    assert tuple(deployables) == method.deployable_names() == (
        MAIN, "deep-depth1-width4", "deep-depth2-width4", "shallow-depth1-width4"
    )  # fmt: skip
    assert deployables[MAIN].facts == {"depth": 2, "width": 4, "form": "shallow"}
    for deployable in deployables.values():
        facts, model = deployable.facts, deployable.model
        assert [conv.filters for conv in stack_convs(model)] == [facts["width"]] * facts["depth"]
        assert adds(model) == (facts["depth"] if facts["form"] == "deep" else 1)
        # Trained: the logits bias moved from its zero initialisation.
        assert np.abs(model.get_layer("logits").bias.numpy()).max() > 0
    assert {"loss", "val_loss"} <= set(artifact.history) and artifact.train_seconds > 0


def test_a_deep_point_converts_to_tflite_builtins_and_matches_keras():
    method = grid("deep-wide-grid:depths=2,widths=1,min_width=8")
    model = method.build_point(method.grid()[1], INPUT, 10)
    x = np.random.default_rng(0).normal(size=(2, *INPUT)).astype("float32")
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-3, atol=1e-4)
