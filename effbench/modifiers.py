"""Training modifiers: a change to how any method trains, composed on the command line with ``+``.

``--method resnet-cifar+kd:teacher=vgg-small`` trains ``resnet-cifar`` as it always does, through
:func:`effbench.training.fit`, with the ``kd`` modifier applied: a training trick (an extra loss,
distillation against a teacher, a regularizer, an optimizer wrapper such as SAM) combines with every
method without a subclass per pair. A modifier is a class registered with :func:`register_modifier`; like a
method it has options (``default_options``) and may start from other trainings (:meth:`Modifier.requires`,
for example a ``teacher``), which join the method's upstreams. Modifiers and their options are part of the
training's config hash, and a record's ``variant`` names them (``+kd:teacher=vgg-small``).

A modifier acts through :meth:`Modifier.training_model`: ``fit`` hands it the model about to be compiled
and trained and trains what it returns (a wrapper with its own ``train_step``), while the method deploys
its own model, untouched by the wrapper. Several modifiers wrap in the order written.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from effbench.registry import Paper, Registry, RegistryError, TaskSpec, check_slug

if TYPE_CHECKING:
    from effbench.method import MethodRef
    from effbench.tf import keras
    from effbench.training import TrainContext


@dataclass(frozen=True)
class ModifierSpec:
    slug: str
    summary: str
    paper: Paper


MODIFIERS: Registry[ModifierSpec] = Registry("modifier")


def register_modifier(slug: str, *, summary: str, paper: Paper) -> Any:
    """Class decorator: register a :class:`Modifier` subclass under ``slug``."""
    check_slug(slug)
    spec = ModifierSpec(slug, summary, paper)

    def decorate(cls: type) -> type:
        cls.spec = spec
        MODIFIERS.add(spec, cls)
        return cls

    return decorate


def checked_options(noun: str, slug: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``; an option that ``defaults`` does not declare is an error."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise RegistryError(f"{noun} '{slug}' has no option {', '.join(unknown)} (options: {known})")
    return {**defaults, **given}


class Modifier(abc.ABC):
    """Base of every training modifier. ``spec`` is set by ``@register_modifier``."""

    spec: ClassVar[ModifierSpec]
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any):
        self.options = checked_options("modifier", self.spec.slug, self.default_options, options)

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        """Trainings the modifier needs, by role (a ``teacher``); they join the method's upstreams."""
        return {}

    @abc.abstractmethod
    def training_model(self, model: keras.Model, context: TrainContext) -> keras.Model:
        """The model ``fit`` compiles and trains in place of ``model`` (which it must train)."""
