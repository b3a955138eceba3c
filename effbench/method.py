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
from typing import TYPE_CHECKING, Any, ClassVar

from effbench.modifiers import checked_options
from effbench.protocol import default_twin
from effbench.registry import METHODS, MethodSpec, RegistryError, TaskSpec
from effbench.tf import keras
from effbench.training import TrainContext, fit

if TYPE_CHECKING:
    from effbench.modifiers import Modifier

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

    ``facts`` are what the method decided for this deployable and a reader needs to re-run or judge it, as
    JSON values: a mixed-precision method's per-layer bit widths (``{"bit_widths": {layer: [w, a]}}``), the
    calibration data a post-training quantizer used (``{"calibration": {"split": "train", "samples": 128}}``).
    Every record of the deployable carries them (``Record.facts``).
    """

    model: keras.Model
    tflite: bytes | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Artifact:
    """What a method hands to the tracks: the deployable models, and how they were trained."""

    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    # Wall time of this method's own training (its upstreams' trainings are not in it).
    train_seconds: float = 0.0
    # Further deployables by name (a sub-network "width=0.5", a variant "int8"), besides ``model`` (MAIN).
    deployables: dict[str, Deployable] = field(default_factory=dict)
    # The main deployable's converted flatbuffer, where that is the deployment, and its facts (see Deployable).
    tflite: bytes | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    # Filled by the runner after training: train_samples, peak_rss_bytes, peak_gpu_bytes.
    train_stats: dict[str, float] = field(default_factory=dict)
    # Filled by the runner: training hash -> train seconds of every upstream training this one consumed,
    # transitively, each once (the FP32 twin as a mere reference is not consumed).
    upstream_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, deployables: dict[str, Deployable], **fields: Any) -> Artifact:
        """The artifact of ``deployables``, the main one (``MAIN``) among them; ``fields`` as in the constructor."""
        others = dict(deployables)
        main = others.pop(MAIN)
        return cls(model=main.model, tflite=main.tflite, facts=main.facts, deployables=others, **fields)

    def all_deployables(self) -> dict[str, Deployable]:
        """Every deployable by name, the main one (``MAIN``) first."""
        if MAIN in self.deployables:
            raise ValueError("the main deployable is Artifact.model; name the others with non-empty names")
        return {MAIN: Deployable(self.model, self.tflite, self.facts), **self.deployables}


def _split_outside_parentheses(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` that is not inside parentheses; unbalanced ones raise."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"unbalanced ')' in '{text}'")
        if char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth:
        raise ValueError(f"unbalanced '(' in '{text}'")
    return [*parts, text[start:]]


def _parse_ref(text: str, noun: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """``slug:key=value,key=value`` -> (slug, sorted options).

    A value that holds commas or ``+`` (a backbone with options of its own) is written in parentheses:
    ``qat-4bit:bits=2,backbone=(resnet-cifar:depth=8,width=0.5)``; the parentheses are not part of it.
    """
    slug, _, option_text = text.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, _split_outside_parentheses(option_text, ",")):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{noun} option '{item}' in '{text}' must be written key=value")
        raw = raw.strip()
        if raw.startswith("(") and raw.endswith(")"):
            options[key.strip()] = raw[1:-1]
        else:
            options[key.strip()] = _parse_option_value(raw)
    return slug.strip(), tuple(sorted(options.items()))


def _option_value_text(value: Any) -> str:
    text = str(value)
    return f"({text})" if isinstance(value, str) and ("," in text or "+" in text) else text


def _options_text(options: tuple[tuple[str, Any], ...]) -> str:
    return ",".join(f"{key}={_option_value_text(value)}" for key, value in options)


@dataclass(frozen=True)
class ModifierRef:
    """A training modifier's slug plus options: ``kd:teacher=vgg-small`` (see :mod:`effbench.modifiers`)."""

    slug: str
    options: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        return f"{self.slug}:{_options_text(self.options)}" if self.options else self.slug

    def create(self) -> "Modifier":
        from effbench.modifiers import MODIFIERS

        return MODIFIERS.get(self.slug).factory(**dict(self.options))


@dataclass(frozen=True)
class MethodRef:
    """A method slug plus options, and any training modifiers: ``resnet-cifar:depth=56+kd:teacher=vgg-small``."""

    slug: str
    options: tuple[tuple[str, Any], ...] = ()
    modifiers: tuple[ModifierRef, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "MethodRef":
        method, *modifiers = _split_outside_parentheses(text, "+")
        slug, options = _parse_ref(method, "method")
        return cls(slug, options, tuple(ModifierRef(*_parse_ref(item, "modifier")) for item in modifiers))

    @property
    def variant(self) -> str:
        """The options and the modifiers, as written: ``depth=56+kd:teacher=vgg-small``."""
        return _options_text(self.options) + "".join(f"+{modifier}" for modifier in self.modifiers)

    def __str__(self) -> str:
        text = f"{self.slug}:{_options_text(self.options)}" if self.options else self.slug
        return text + "".join(f"+{modifier}" for modifier in self.modifiers)

    def create(self) -> "Method":
        return METHODS.get(self.slug).factory(**dict(self.options))

    def create_modifiers(self) -> tuple["Modifier", ...]:
        return tuple(modifier.create() for modifier in self.modifiers)

    def upstream(self, task: TaskSpec) -> dict[str, "MethodRef"]:
        """The method's upstreams by role (:meth:`Method.upstream`) and its modifiers' (a teacher)."""
        refs = self.create().upstream(task)
        for modifier in self.create_modifiers():
            for role, ref in modifier.requires(task).items():
                if role in refs:
                    raise RegistryError(f"'{self}': modifier '{modifier.spec.slug}' and the method share role '{role}'")
                refs[role] = ref
        return refs


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
        self.options = checked_options("method", self.spec.slug, self.default_options, options)

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

        By default the method's suite protocol chooses (:func:`effbench.protocol.default_twin`): the
        backbone a binarization method binarizes, so the accuracy track reports the ratio to its top-1;
        ``None`` for methods that are their own reference (architectures). A method may override it.
        """
        return default_twin(self, task_default_backbone)

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

    def build_for(self, spec: TaskSpec) -> keras.Model:
        """The model this architecture trains on the task ``spec``: :meth:`build` of its input shape and classes.

        Architectures whose model depends on more of the task (its kind's head, an id vocabulary) override it;
        :meth:`run` trains what it returns, and size matching (:mod:`effbench.matching`) counts it.
        """
        return self.build(spec.input_shape, spec.num_classes)

    def training_optimizer(self, recipe_optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
        """The optimizer :meth:`run` trains with, given the one the task's recipe makes: that one, by default.

        An architecture whose weights live on a manifold that the recipe's update would leave (class subspaces,
        orthonormal bases) returns an optimizer that moves those along the manifold and the others as the
        recipe's does, with the recipe's schedule: the training loop and the modifiers stay the core's.
        """
        return recipe_optimizer

    def run(self, context: TrainContext) -> Artifact:
        model = self.build_for(context.task.spec)
        history, seconds = fit(model, context, optimizer=self.training_optimizer)
        return Artifact(model=model, history=history, train_seconds=seconds)
