"""Tracks: pure measurements of a model, returning metrics with units."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from effbench.registry import TrackSpec

if TYPE_CHECKING:
    from effbench.method import Artifact
    from effbench.recipe import Recipe
    from effbench.tasks.base import Splits, Task
    from effbench.tf import keras


class MetricError(ValueError):
    """A metric a track produced cannot be recorded (NaN, infinite, wrong type)."""


@dataclass(frozen=True)
class Metric:
    """One measured number (or, for outcomes such as a converter error, a string).

    ``scope`` is empty for a whole-model metric; otherwise it names what the value is about: a layer
    (per-layer complexity), a converted variant (edge), a corruption (robustness).
    """

    name: str
    value: float | int | str
    unit: str
    scope: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float, str)):
            raise MetricError(f"metric '{self.name}': value {self.value!r} is not a number or a string")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise MetricError(f"metric '{self.name}'{self._where()}: value {self.value} is not finite")

    def _where(self) -> str:
        return f" (layer '{self.scope}')" if self.scope else ""


@dataclass
class MeasureContext:
    """What a track may look at. ``task``/``splits`` are None when measuring a bare model file."""

    model: keras.Model
    artifact: "Artifact | None" = None
    task: "Task | None" = None
    splits: "Splits | None" = None
    seed: int = 0
    # The recipe the model was trained with; None for a bare model file.
    recipe: Recipe | None = None
    # The FP32 twin's whole-model accuracy metrics (metric -> value) on the same task, seed, budget.
    reference: dict[str, float] | None = None
    # A folder for files that belong to this run's record (for example converted .tflite models);
    # None when there is nowhere to keep them.
    files_dir: Path | None = None
    # Trains the run's method again on the same task and seed under another recipe (sensitivity);
    # None when the model did not come from a method.
    retrain: Callable[[Recipe], Artifact] | None = None
    # Which of the artifact's deployables ``model`` is: "" for the main one, else its name.
    deployable: str = ""
    # The deployable's converted flatbuffer, where that is the deployment (post-training quantization);
    # the tracks that run flatbuffers measure it instead of converting ``model``.
    tflite: bytes | None = None
    # The edge variant that is the method's deployment ("int8", "lce"), reported again as scope "deployed".
    deployment: str | None = None
    # The run's budget (smoke, quick, paper); None for a bare model file. Timing tracks time smoke runs briefly.
    budget: str | None = None
    # Loads the FP32 twin's trained model (a fresh copy); None when the method has no twin, or the twin's model
    # is not cached (its records were there, so it was not trained again).
    twin_model: Callable[[], keras.Model | None] | None = None


class Track(abc.ABC):
    """Base of every track. ``spec`` is set by ``@register_track``."""

    spec: ClassVar[TrackSpec]

    @abc.abstractmethod
    def measure(self, context: MeasureContext) -> list[Metric]:
        """Measure ``context.model`` and return its metrics."""
