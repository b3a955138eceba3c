"""Run configurations and their hashes.

A run is one track measured on one method, task, seed and budget. Its *config hash* covers everything
that determines the measured numbers: the method and its options, the task and its recipe for the
budget, the seed, the division and the track. Records with the same hash are the same measurement, which
is how re-runs skip work and how hand-edited results are detected. The *training hash* leaves out the
track and the division: runs that share it share one trained model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from effbench.hashing import stable_hash
from effbench.method import MethodRef
from effbench.registry import TASKS

CONFIG_SCHEMA = 1
DIVISIONS = ("closed", "open")


@dataclass(frozen=True)
class TrainingConfig:
    method: MethodRef
    task: str
    seed: int
    budget: str

    def as_dict(self) -> dict[str, Any]:
        recipe = TASKS.get(self.task).factory().recipe(self.budget)
        return {
            "schema": CONFIG_SCHEMA,
            "method": self.method.slug,
            # Every option, defaults included: changing a method's default changes what it measures.
            "options": self.method.create().options,
            "task": self.task,
            "seed": self.seed,
            "budget": self.budget,
            "recipe": recipe.as_config(),
        }

    @property
    def hash(self) -> str:
        return stable_hash(self.as_dict())


@dataclass(frozen=True)
class RunConfig:
    training: TrainingConfig
    track: str
    division: str = "closed"

    def __post_init__(self) -> None:
        if self.division not in DIVISIONS:
            raise ValueError(f"division '{self.division}' is not one of {', '.join(DIVISIONS)}")

    def as_dict(self) -> dict[str, Any]:
        return {**self.training.as_dict(), "track": self.track, "division": self.division}

    @property
    def hash(self) -> str:
        return stable_hash(self.as_dict())
