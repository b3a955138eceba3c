"""Suite protocols: what a suite's closed division fixes, how its twins are chosen, what its summary shows.

A benchmark compares methods "number for number" only under a protocol: BiBench's binarization protocol
fixes the backbone, which layers are binarized and the recipe, so only the operator differs. Each suite
declares its own as ``PROTOCOL = SuiteProtocol(...)`` in ``suites/<suite>/protocol.py``, a module that
imports nothing but this one, so the leaderboard (which never imports TensorFlow) reads the declarations
too. A suite that declares none gets :data:`DEFAULT_PROTOCOL`: no closed division (every run open), no
twins, a generic summary.

**Which protocol judges a method.** The one its class names in a ``protocol`` class attribute (a suite
slug), else its suite's. A protocol's method base names its suite: ``OperatorMethod`` says
``protocol = "binarization"``, so an operator registered by a submission (suite ``submissions``) is judged
by the binarization protocol, as a binarization-suite operator is.

**Divisions.** :func:`division_of` is the one rule, used by ``effbench run``, ``effbench submit`` and
``effbench paper-records``. A run is ``closed`` when its method may enter its protocol's closed division:

- its kind is one the closed division takes (``closed_kinds``) and, where the protocol names a method base
  (``closed_base``), its class subclasses it: the base is the code that applies the protocol;
- its reference sets none of the options the closed division fixes (``fixed_options``) to a value other
  than the method's default (the default is the protocol's choice: ``bivit``'s tiny transformer; a run's
  config holds every option, so ``bivit:backbone=tiny-transformer`` is the same run as ``bivit``) or one of
  the other values the protocol takes for it (``closed_values``: the binarization protocol's second
  backbone, ``bnn:backbone=vgg-small``);
- it has no training modifier (``+kd:...``) but those the closed division takes (``closed_modifiers``, none
  by default): a modifier changes how the method trains, which a closed division fixes.

Everything else is ``open``. So in the binarization suite, whose closed division is BiBench's operator
comparison (the trained backbone, binarized, fine-tuned once with the task's fine-tune recipe), the
compression methods ``mst`` and ``pb-partial`` are open: each is defined by what it does beside that
training (``pb-partial`` binarizes weights only and keeps float activations; ``mst`` takes a trained BNN
and changes how its cost is counted), so their numbers are not operator-for-operator comparisons. A run may always be
asked to be open; asking for closed where the method may not enter is an error (:class:`DivisionError`).

**Twins.** ``twin`` says how a method's FP32 reference is chosen: ``"backbone"``, the method's ``backbone``
option, else the task's default backbone; ``"none"``, no twin (the method is its own reference).
:meth:`effbench.method.Method.fp32_twin` returns the protocol's choice unless a method overrides it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effbench.registry import KINDS, METHODS, MethodSpec

if TYPE_CHECKING:
    from effbench.method import Method, MethodRef

SUITES_PACKAGE = "suites"
PROTOCOL_MODULE = "protocol"
TWIN_RULES = ("none", "backbone")
# What every suite's summary shows unless its protocol says otherwise: column -> (scope, metric).
DEFAULT_SUMMARY: Mapping[str, tuple[str, str]] = {
    "top1": ("", "top1"),
    "params": ("", "params"),
    "macs": ("", "macs"),
    "packed_bytes": ("", "size_bytes"),
    "train_seconds": ("", "train_seconds"),
}


class DivisionError(ValueError):
    """A run asked for the closed division with a method (or options) the closed division does not take."""


@dataclass(frozen=True)
class SuiteProtocol:
    """A suite's protocol: its closed division, its twins, its options and its summary columns.

    ``closed_kinds``: method kinds the closed division takes. ``closed_base``: ``"module:Class"`` that a
    closed method's class must subclass, or None; imported only when a method is judged. ``options``:
    the protocol's options, name -> what it does (a method takes those of them its class declares).
    ``fixed_options``: those the closed division fixes. ``closed_values``: fixed option -> the values
    besides each method's default that the closed division takes. ``closed_modifiers``: training
    modifiers (slugs) the closed division takes. ``twin``: one of :data:`TWIN_RULES`. ``summary_columns``:
    column -> (scope, metric) of ``effbench table --suite S`` and the leaderboard's suite summary, ``""``
    the whole-model scope. ``summary_outcomes``: scopes of converted variants (``lce``) whose outcome
    (``converted``, or the error) gets a column of that name. ``summary_sort``: the column sorting each
    task's rows, best first.
    """

    suite: str
    description: str
    closed_kinds: tuple[str, ...] = KINDS
    closed_base: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    fixed_options: tuple[str, ...] = ()
    closed_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    closed_modifiers: tuple[str, ...] = ()
    twin: str = "none"
    summary_columns: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_SUMMARY))
    summary_outcomes: tuple[str, ...] = ()
    summary_sort: str = "top1"

    def __post_init__(self) -> None:
        kinds, options = set(self.closed_kinds) - set(KINDS), set(self.fixed_options) - set(self.options)
        problems = [f"kind '{kind}' is not one of {', '.join(KINDS)}" for kind in sorted(kinds)]
        problems += [f"fixed option '{name}' is not one of its options" for name in sorted(options)]
        unfixed = set(self.closed_values) - set(self.fixed_options)
        problems += [f"closed values of '{name}', which is not a fixed option" for name in sorted(unfixed)]
        if self.twin not in TWIN_RULES:
            problems.append(f"twin '{self.twin}' is not one of {', '.join(TWIN_RULES)}")
        if self.twin == "backbone" and "backbone" not in self.options:
            problems.append("twin 'backbone' needs a 'backbone' option")
        if self.summary_sort not in self.summary_columns:
            problems.append(f"summary_sort '{self.summary_sort}' is not one of its summary columns")
        if problems:
            raise ValueError(f"protocol of suite '{self.suite}': {'; '.join(problems)}")

    def twin_for(self, options: Mapping[str, Any], task_default_backbone: str) -> str | None:
        """The FP32 twin (a method reference) of a method with ``options`` on a task, or None."""
        if self.twin == "backbone":
            return options.get("backbone") or task_default_backbone
        return None

    def as_dict(self) -> dict[str, Any]:
        """The declaration as plain JSON values (the generated index's ``protocols`` section)."""
        fields = dataclasses.asdict(self)
        fields["summary_columns"] = {name: list(key) for name, key in self.summary_columns.items()}
        fields["closed_values"] = {name: list(values) for name, values in self.closed_values.items()}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> SuiteProtocol:
        """The declaration :meth:`as_dict` wrote."""
        fields = {name: tuple(value) if isinstance(value, list) else value for name, value in row.items()}
        fields["summary_columns"] = {name: tuple(key) for name, key in row["summary_columns"].items()}
        fields["closed_values"] = {name: tuple(values) for name, values in row.get("closed_values", {}).items()}
        return cls(**fields)


# Conservative: "closed" claims a protocol was followed, and without one nothing says what a run held fixed.
DEFAULT_PROTOCOL = SuiteProtocol(
    suite="",
    description="no protocol declared (suites/<suite>/protocol.py): no closed division, every run is open; "
    "no FP32 twin",
    closed_kinds=(),
)


@functools.lru_cache(maxsize=1)
def declared_protocols() -> dict[str, SuiteProtocol]:
    """Suite slug -> the protocol ``suites/<suite>/protocol.py`` declares (only those modules are imported)."""
    package = importlib.import_module(SUITES_PACKAGE)
    protocols = {}
    for info in pkgutil.iter_modules(package.__path__):
        name = f"{SUITES_PACKAGE}.{info.name}.{PROTOCOL_MODULE}"
        if not info.ispkg or importlib.util.find_spec(name) is None:
            continue
        protocol = importlib.import_module(name).PROTOCOL
        if protocol.suite != info.name:
            raise ValueError(f"{name} declares the protocol of suite '{protocol.suite}', not '{info.name}'")
        protocols[protocol.suite] = protocol
    return protocols


def protocol_for_suite(suite: str) -> SuiteProtocol:
    """The protocol ``suite`` declares, else :data:`DEFAULT_PROTOCOL` (named after the suite)."""
    return declared_protocols().get(suite) or dataclasses.replace(DEFAULT_PROTOCOL, suite=suite)


def protocol_of(spec: MethodSpec, factory: type) -> SuiteProtocol:
    """The protocol that judges a method: its class's ``protocol`` attribute, else its suite's."""
    return protocol_for_suite(getattr(factory, "protocol", None) or spec.suite)


def protocols_index() -> dict[str, dict[str, Any]]:
    """The ``protocols`` section of the generated index: every declared protocol, and the default (``""``)."""
    protocols = {"": DEFAULT_PROTOCOL, **declared_protocols()}
    return {suite: protocol.as_dict() for suite, protocol in sorted(protocols.items())}


def default_twin(method: Method, task_default_backbone: str) -> str | None:
    """The FP32 twin the method's protocol chooses (the default of ``Method.fp32_twin``)."""
    return protocol_of(method.spec, type(method)).twin_for(method.options, task_default_backbone)


# ---------------------------------------------------------------- divisions


def closed_division_error(ref: MethodRef) -> str | None:
    """Why ``ref`` may not run in its protocol's closed division (see the module docstring), or None."""
    entry = METHODS.get(ref.slug)
    protocol = protocol_of(entry.spec, entry.factory)
    where = f"the closed division of the {protocol.suite} protocol"
    if not protocol.closed_kinds:
        return f"'{ref.slug}' is a method of suite '{protocol.suite}': {protocol.description}"
    base = _resolve(protocol.closed_base) if protocol.closed_base else None
    if entry.spec.kind not in protocol.closed_kinds or (base is not None and not issubclass(entry.factory, base)):
        kinds = ", ".join(f"'{kind}'" for kind in protocol.closed_kinds) or "none"
        subclass = f", subclasses of {protocol.closed_base.replace(':', '.')}" if protocol.closed_base else ""
        return (
            f"'{ref.slug}' is a method of kind '{entry.spec.kind}'; {where} takes methods of kind {kinds} "
            f"only{subclass} ({protocol.description})"
        )
    given, defaults = dict(ref.options), entry.factory.default_options
    taken = {name: (defaults.get(name), *protocol.closed_values.get(name, ())) for name in protocol.fixed_options}
    fixed = [name for name in protocol.fixed_options if name in given and given[name] not in taken[name]]
    if fixed:
        meaning = "; ".join(f"{name}: {protocol.options[name]}" for name in fixed)
        return f"option {', '.join(fixed)} of '{ref}' is fixed by {where} ({meaning})"
    modifiers = [str(modifier) for modifier in ref.modifiers if modifier.slug not in protocol.closed_modifiers]
    if modifiers:
        return f"'{ref}' trains with modifier {', '.join(modifiers)}; {where} fixes how a method trains"
    return None


def division_of(ref: MethodRef, requested: str | None = None) -> str:
    """The division of a run of ``ref``: ``closed`` where it may enter the closed division, else ``open``.

    ``requested`` is what the caller asked for: None, the division the method qualifies for; ``"open"``,
    open (always allowed); ``"closed"``, closed, raising :class:`DivisionError` where the method does not
    qualify.
    """
    if requested not in (None, "closed", "open"):
        raise ValueError(f"division '{requested}' is not one of closed, open")
    if requested == "open":
        return "open"
    error = closed_division_error(ref)
    if error is None:
        return "closed"
    if requested == "closed":
        raise DivisionError(error)
    return "open"


def _resolve(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
