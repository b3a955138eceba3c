"""Methods: turn a task into a trained :class:`Artifact`.

A method is a class registered with :func:`effbench.registry.register_method`. Options (for example
``depth`` of ``resnet-cifar``) are declared in ``default_options`` and given on the command line as
``slug:key=value,key=value``; they are part of the run's config hash.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from effbench.registry import METHODS, MethodSpec, RegistryError
from effbench.tf import keras
from effbench.training import TrainContext, fit


@dataclass
class Artifact:
    """What a method hands to the tracks: the deployable model, and how it was trained."""

    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    # Elastic methods put every deployable sub-model here, keyed by a name such as "width=0.5".
    submodels: dict[str, keras.Model] = field(default_factory=dict)
    # Filled by the runner after training: train_samples, peak_rss_bytes, peak_gpu_bytes.
    train_stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodRef:
    """A method slug plus options, as written on the command line: ``resnet-cifar:depth=56``."""

    slug: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "MethodRef":
        slug, _, option_text = text.partition(":")
        options: dict[str, Any] = {}
        for item in filter(None, option_text.split(",")):
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ValueError(f"method option '{item}' in '{text}' must be written key=value")
            options[key.strip()] = _parse_option_value(raw.strip())
        return cls(slug.strip(), tuple(sorted(options.items())))

    @property
    def variant(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.options)

    def __str__(self) -> str:
        return f"{self.slug}:{self.variant}" if self.options else self.slug

    def create(self) -> "Method":
        return METHODS.get(self.slug).factory(**dict(self.options))


def _parse_option_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


class Method(abc.ABC):
    """Base of every method. ``spec`` is set by ``@register_method``."""

    spec: ClassVar[MethodSpec]
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            known = ", ".join(sorted(self.default_options)) or "none"
            raise RegistryError(
                f"method '{self.spec.slug}' has no option {', '.join(unknown)} (options: {known})"
            )
        self.options = {**self.default_options, **options}

    @abc.abstractmethod
    def run(self, context: TrainContext) -> Artifact:
        """Build (or transform) a model for the task, train it with the recipe, and return it."""

    def fp32_twin(self, task_default_backbone: str) -> str | None:
        """The float reference this method is compared with on a task, as a method reference.

        ``None`` for methods that are their own reference (architectures). Compressed methods return
        the backbone they compress, so the accuracy track reports the ratio to its top-1.
        """
        return None



class ArchitectureMethod(Method):
    """A method that builds a model (a backbone) and trains it with the task's recipe as it is."""

    @abc.abstractmethod
    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        """A functional Keras model from ``input_shape`` to ``num_classes`` logits."""

    def run(self, context: TrainContext) -> Artifact:
        model = self.build(context.task.spec.input_shape, context.task.spec.num_classes)
        history, seconds = fit(model, context)
        return Artifact(model=model, history=history, train_seconds=seconds)
