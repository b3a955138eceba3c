"""NSGA-II's ranking (effbench.pareto), which the multi-objective searches share."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from effbench.pareto import crowding_distance, dominates, non_dominated_fronts, rank_and_crowding


def brute_force_fronts(objectives: np.ndarray) -> list[list[int]]:
    """Peel off the rows no remaining row dominates, again and again."""
    remaining, fronts = set(range(len(objectives))), []
    while remaining:
        front = sorted(i for i in remaining if not any(dominates(objectives[j], objectives[i]) for j in remaining))
        fronts.append(front)
        remaining -= set(front)
    return fronts


@pytest.mark.parametrize("seed", range(5))
def test_the_fast_sort_matches_brute_force_peeling_on_tables_with_ties_and_duplicates(seed):
    objectives = np.random.default_rng(seed).integers(0, 4, size=(25, 2 + seed % 2)).astype(float)
    fronts = non_dominated_fronts(objectives)
    assert fronts == brute_force_fronts(objectives)
    assert sorted(itertools.chain(*fronts)) == list(range(len(objectives)))


def test_domination_needs_one_strictly_better_objective():
    assert dominates(np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    assert not dominates(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert not dominates(np.array([0.0, 3.0]), np.array([1.0, 2.0]))


def test_crowding_distance_by_hand():
    distance = crowding_distance(np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]]))
    assert np.isinf(distance[[0, 3]]).all()
    assert distance[1] == pytest.approx(3 / 4 + 3 / 4) and distance[2] == pytest.approx(3 / 4 + 2 / 4)


def test_crowding_is_measured_within_each_front():
    objectives = np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [2.0, 2.0]])
    rank, crowding = rank_and_crowding(objectives)
    assert rank.tolist() == [0, 0, 0, 1]
    assert crowding[1] == pytest.approx(2.0) and np.isinf(crowding[[0, 2, 3]]).all()
