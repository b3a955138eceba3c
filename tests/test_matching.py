"""Matched cost: an architecture sized by one knob to cost what a reference backbone costs on a task."""

from __future__ import annotations

import pytest

from effbench.cli import main
from effbench.matching import MatchError, match_size, model_cost, with_option
from effbench.registry import TASKS, RegistryError

DIGIT_SETS = TASKS.get("digit-sets").spec


def test_the_matched_width_costs_within_ten_percent_of_the_reference_and_its_neighbours_do_not_come_closer():
    found = match_size("mlp:layers=1", "units", DIGIT_SETS, reference="mlp", low=1, high=2048)
    target = model_cost("mlp", DIGIT_SETS)
    assert found.target == target and abs(found.ratio - 1) <= 0.10
    assert found.method == f"mlp:layers=1,units={found.value}"
    assert found.cost == model_cost(found.method, DIGIT_SETS)
    for neighbour in (found.value - 1, found.value + 1):
        assert abs(model_cost(with_option("mlp:layers=1", "units", neighbour), DIGIT_SETS) - target) >= abs(
            found.cost - target
        )


def test_the_reference_defaults_to_the_tasks_default_backbone():
    found = match_size("mlp", "units", DIGIT_SETS, measure="params", high=512)
    assert found.reference == DIGIT_SETS.default_backbone == "mlp"
    assert found.value == 256 and found.ratio == 1  # the default backbone matches itself at its own size


def test_a_range_that_cannot_reach_the_reference_is_refused_with_the_closest_value():
    with pytest.raises(MatchError, match=r"no units in \[1, 8\].*the closest, units=8"):
        match_size("mlp", "units", DIGIT_SETS, high=8)


def test_only_architectures_without_modifiers_are_sized():
    with pytest.raises(ValueError, match="without training modifiers"):
        with_option("mlp+kd:teacher=vgg-small", "units", 8)
    with pytest.raises(RegistryError, match="not an architecture"):
        model_cost("ptq-int8", DIGIT_SETS)


def test_the_match_command_prints_the_sized_reference_and_its_ratio(capsys):
    assert main(["match", "mlp:layers=1", "--knob", "units", "--task", "digit-sets", "--range", "1", "2048"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mlp:layers=1,units=") and "x mlp's 117,248 on digit-sets" in out


def test_the_match_command_refuses_an_empty_range(capsys):
    assert main(["match", "mlp", "--knob", "units", "--task", "digit-sets", "--range", "9", "3"]) == 2
    assert "--range 9 3: expected 1 <= LOW <= HIGH" in capsys.readouterr().err
