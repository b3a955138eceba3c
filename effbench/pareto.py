"""NSGA-II's ranking, shared by the multi-objective searches (Deb, Pratap, Agarwal & Meyarivan, 2002).

Every objective is minimised. :func:`non_dominated_fronts` is Deb et al.'s fast non-dominated sort;
:func:`crowding_distance` ranks the points within one front by the gap their neighbours leave on each
objective, with the extremes infinitely far so that a front's ends always survive.
"""

from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_fronts(objectives: np.ndarray) -> list[list[int]]:
    """The fronts of ``objectives``' rows, best first, each a sorted list of row indices."""
    objectives = np.asarray(objectives, dtype=np.float64)
    no_worse = (objectives[:, None, :] <= objectives[None, :, :]).all(axis=-1)
    better = (objectives[:, None, :] < objectives[None, :, :]).any(axis=-1)
    dominance = no_worse & better  # [i, j]: row i dominates row j
    dominated_by = dominance.sum(axis=0)
    fronts, current = [], sorted(np.flatnonzero(dominated_by == 0).tolist())
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in np.flatnonzero(dominance[i]):
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(int(j))
        current = sorted(following)
    return fronts


def crowding_distance(objectives: np.ndarray) -> np.ndarray:
    """Each row's crowding distance within its front: infinite at each objective's extremes."""
    objectives = np.asarray(objectives, dtype=np.float64)
    distance = np.zeros(len(objectives))
    for column in objectives.T:
        order = np.argsort(column, kind="stable")
        distance[order[[0, -1]]] = np.inf
        span = column[order[-1]] - column[order[0]]
        if span > 0 and len(order) > 2:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


def rank_and_crowding(objectives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's front index and its crowding distance within that front."""
    rank, crowding = np.zeros(len(objectives), int), np.zeros(len(objectives))
    for index, front in enumerate(non_dominated_fronts(objectives)):
        rank[front] = index
        crowding[front] = crowding_distance(objectives[front])
    return rank, crowding
