"""Run configurations and their hashes.

A run is one track measured on one method, task, seed and budget. Its *config hash* covers everything
that determines the measured numbers: the method and its options, the task and its recipe for the
budget, the seed, the division and the track. Records with the same hash are the same measurement, which
is how re-runs skip work and how hand-edited results are detected. The *training hash* leaves out the
track, the division and the deployable: runs that share it share one training.

A training's config names its upstream trainings (``upstream``: role -> training hash, for a method that
starts from other trainings, and its FP32 twin), so its hash covers theirs: a changed upstream is a new
training. The key is left out when there is none, and ``deployable`` when it is the main model, so the
hashes of trainings with neither are those of records written before either existed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from effbench.hashing import stable_hash
from effbench.method import MAIN, TWIN, MethodRef
from effbench.recipe import Recipe
from effbench.registry import TASKS

CONFIG_SCHEMA = 1
DIVISIONS = ("closed", "open")


@dataclass(frozen=True)
class TrainingConfig:
    method: MethodRef
    task: str
    seed: int
    budget: str

    def upstreams(self) -> dict[str, "TrainingConfig"]:
        """Role -> the training this one starts from or compares with (same task, seed and budget)."""
        refs = self.method.upstream(TASKS.get(self.task).spec)
        return {role: TrainingConfig(ref, self.task, self.seed, self.budget) for role, ref in refs.items()}

    def consumed_upstreams(self) -> dict[str, "TrainingConfig"]:
        """The upstreams whose trained models the method loads (the twin only where another role names it)."""
        return {role: training for role, training in self.upstreams().items() if role != TWIN}

    def method_slugs(self) -> list[str]:
        """This training's method slug and its upstreams' (transitively), each once: all a worker resolves."""
        slugs = [self.method.slug]
        for upstream in self.upstreams().values():
            slugs += upstream.method_slugs()
        return list(dict.fromkeys(slugs))

    def recipe(self) -> Recipe:
        """The training recipe, or the fine-tune recipe for a method that starts from a ``trained`` upstream."""
        task = TASKS.get(self.task).factory()
        starts_trained = "trained" in self.method.create().requires(task.spec)
        return task.finetune_recipe(self.budget) if starts_trained else task.recipe(self.budget)

    def as_dict(self) -> dict[str, Any]:
        config = {
            "schema": CONFIG_SCHEMA,
            "method": self.method.slug,
            # Every option, defaults included: changing a method's default changes what it measures.
            "options": self.method.create().options,
            "task": self.task,
            "seed": self.seed,
            "budget": self.budget,
            "recipe": self.recipe().as_config(),
        }
        if self.method.modifiers:
            modifiers = self.method.create_modifiers()
            config["modifiers"] = [{"modifier": m.spec.slug, "options": m.options} for m in modifiers]
        upstream = self._upstream_hashes()
        if upstream:
            config["upstream"] = upstream
        return config

    def _upstream_hashes(self) -> dict[str, str]:
        key = (self.method, self.task)
        if key in _resolving.__dict__.setdefault("stack", set()):
            raise ValueError(f"method '{self.method}' depends on itself through its upstreams on task '{self.task}'")
        _resolving.stack.add(key)
        try:
            return {role: training.hash for role, training in self.upstreams().items()}
        finally:
            _resolving.stack.discard(key)

    @property
    def hash(self) -> str:
        return stable_hash(self.as_dict())


# The trainings whose upstreams are being resolved on this thread, to report a cycle instead of recursing.
_resolving = threading.local()


@dataclass(frozen=True)
class RunConfig:
    """One track measured on one deployable (``MAIN``, the artifact's model, or a named one) of a training."""

    training: TrainingConfig
    track: str
    division: str = "closed"
    deployable: str = MAIN

    def __post_init__(self) -> None:
        if self.division not in DIVISIONS:
            raise ValueError(f"division '{self.division}' is not one of {', '.join(DIVISIONS)}")

    def as_dict(self) -> dict[str, Any]:
        config = {**self.training.as_dict(), "track": self.track, "division": self.division}
        if self.deployable != MAIN:
            config["deployable"] = self.deployable
        return config

    @property
    def hash(self) -> str:
        return stable_hash(self.as_dict())
