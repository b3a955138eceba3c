"""Methods: turn a task (and the trainings a method starts from) into a trained :class:`Artifact`.

A method is a class registered with :func:`effbench.registry.register_method`. Options (for example
``depth`` of ``resnet-cifar``) are declared in ``default_options`` and given on the command line as
``slug:key=value,key=value``; they are part of the run's config hash.

**Upstreams.** A method that starts from other trainings declares them in :meth:`Method.requires`: role ->
method reference, for example ``{"trained": MethodRef("bnn")}`` for a post-training compression of a trained
BNN, or ``{"teacher": ...}`` for distillation. The runner trains each upstream once per task, seed and budget
(before the method, and shared by every method that names it), caches it, and hands the loaded artifacts to
:meth:`Method.run` as ``context.upstream[role]``. The FP32 twin (:meth:`Method.fp32_twin`) is the upstream of
role ``twin``. Upstream training hashes are part of the method's training hash, and every record names them.

**Deployables.** One training may yield several models to deploy (an elastic super-network's sub-networks,
a quantizer's converted flatbuffer): :attr:`Artifact.deployables`, named; the main model is named ``""``.
A method declares their names up front (:meth:`Method.deployable_names`), so a plan knows every run before
anything trains; every track measures every deployable.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from effbench.registry import METHODS, MethodSpec, RegistryError, TaskSpec
from effbench.tf import keras
from effbench.training import TrainContext, fit

# The name of an artifact's main deployable (``Artifact.model``).
MAIN = ""
# The role of the FP32 twin among a method's upstreams.
TWIN = "twin"


@dataclass
class Deployable:
    """One thing a method deploys: a Keras model and, where the deployment is a converted file, that file.

    ``tflite`` is a TFLite flatbuffer that *is* the deployment (post-training quantization): the tracks that
    can run a flatbuffer (accuracy, edge) measure it, the others measure ``model``, the Keras model it was
    converted from.
    """

    model: keras.Model
    tflite: bytes | None = None


@dataclass
class Artifact:
    """What a method hands to the tracks: the deployable models, and how they were trained."""

    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    # Wall time of this method's own training (its upstreams' trainings are not in it).
    train_seconds: float = 0.0
    # Further deployables by name (a sub-network "width=0.5", a variant "int8"), besides ``model`` (MAIN).
    deployables: dict[str, Deployable] = field(default_factory=dict)
    # The main deployable's converted flatbuffer, where that is the deployment (see Deployable).
    tflite: bytes | None = None
    # Filled by the runner after training: train_samples, peak_rss_bytes, peak_gpu_bytes.
    train_stats: dict[str, float] = field(default_factory=dict)
    # Filled by the runner: training hash -> train seconds of every upstream training this one consumed,
    # transitively, each once (the FP32 twin as a mere reference is not consumed).
    upstream_seconds: dict[str, float] = field(default_factory=dict)

    def all_deployables(self) -> dict[str, Deployable]:
        """Every deployable by name, the main one (``MAIN``) first."""
        if MAIN in self.deployables:
            raise ValueError("the main deployable is Artifact.model; name the others with non-empty names")
        return {MAIN: Deployable(self.model, self.tflite), **self.deployables}


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
        """Build (or transform ``context.upstream``'s models), train with the recipe, and return the artifact."""

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        """The trainings this method starts from, by role (``trained``, ``teacher``, ...); none by default.

        Each is trained once per task, seed and budget before this method, and reaches :meth:`run` loaded,
        as ``context.upstream[role]``. A method with a ``trained`` upstream starts from trained weights and
        trains with the task's fine-tune recipe (:meth:`effbench.tasks.base.Task.finetune_recipe`).
        """
        return {}

    def deployable_names(self) -> tuple[str, ...]:
        """Names of the deployables :meth:`run` returns: ``(MAIN,)`` plus those in ``Artifact.deployables``."""
        return (MAIN,)

    # The converted variant of the edge track that is this method's deployment ("int8" for a QAT method,
    # "lce" for a binary one); the edge track reports it again under the scope "deployed".
    deployment: ClassVar[str | None] = None

    def fp32_twin(self, task_default_backbone: str) -> str | None:
        """The float reference this method is compared with on a task, as a method reference.

        ``None`` for methods that are their own reference (architectures). Compressed methods return
        the backbone they compress, so the accuracy track reports the ratio to its top-1.
        """
        return None

    def upstream(self, task: TaskSpec) -> dict[str, MethodRef]:
        """Every upstream by role: :meth:`requires`, plus the FP32 twin as role ``twin``."""
        refs = dict(self.requires(task))
        if TWIN in refs:
            raise RegistryError(f"method '{self.spec.slug}': role '{TWIN}' is declared by fp32_twin, not requires")
        twin = self.fp32_twin(task.default_backbone)
        if twin:
            refs[TWIN] = MethodRef.parse(twin)
        return refs


class ArchitectureMethod(Method):
    """A method that builds a model (a backbone) and trains it with the task's recipe as it is."""

    @abc.abstractmethod
    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        """A functional Keras model from ``input_shape`` to ``num_classes`` logits."""

    def run(self, context: TrainContext) -> Artifact:
        model = self.build(context.task.spec.input_shape, context.task.spec.num_classes)
        history, seconds = fit(model, context)
        return Artifact(model=model, history=history, train_seconds=seconds)
