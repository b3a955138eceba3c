"""Registries of methods, tasks and tracks, filled by one decorator each.

Like timm's ``@register_model``: a module registers its entry at import time, ``effbench list``
finds it by slug or glob pattern, and registering the same slug twice is an error at import.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import pkgutil
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

Kind = Literal["operator", "architecture", "compression", "training", "elastic"]
Scale = Literal["full", "small-faithful"]
KINDS: tuple[str, ...] = ("operator", "architecture", "compression", "training", "elastic")
SCALES: tuple[str, ...] = ("full", "small-faithful")


class RegistryError(Exception):
    """A registration or lookup that cannot succeed (duplicate slug, unknown slug, bad spec)."""


@dataclass(frozen=True)
class Paper:
    title: str
    year: int
    url: str


@dataclass(frozen=True)
class Taxonomy:
    """Where a method sits among efficient-DL methods; shown as tags on the leaderboard.

    ``weight_bits`` / ``activation_bits`` are the bit-widths the method deploys at (32 = float);
    ``structured`` is None where sparsity does not apply; ``applied`` says when the method acts
    (``init``, ``training``, ``post-training``, ``architecture``); ``data`` what data it needs
    (``none``, ``calibration``, ``labelled``).
    """

    weight_bits: int = 32
    activation_bits: int = 32
    structured: bool | None = None
    dynamic: bool = False
    applied: str = "training"
    data: str = "labelled"


@dataclass(frozen=True)
class MethodSpec:
    slug: str
    suite: str
    kind: Kind
    paper: Paper
    summary: str
    taxonomy: Taxonomy = field(default_factory=Taxonomy)
    scale: Scale = "full"


@dataclass(frozen=True)
class TaskSpec:
    slug: str
    summary: str
    input_shape: tuple[int, ...]
    num_classes: int
    default_backbone: str
    modality: Literal["image", "vector"]
    embedded: bool
    # Validation top-1 that counts as "trained" for time-to-target in the training_cost track.
    target_accuracy: float


Direction = Literal["higher", "lower", "none"]
Role = Literal["quality", "cost", "info"]
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "none")
ROLES: tuple[str, ...] = ("quality", "cost", "info")
# A ``<word>`` in a metric name pattern stands for one part of a name: letters and digits, no '_'.
_PLACEHOLDER = re.compile(r"<[a-z]+>")
_PLACEHOLDER_VALUE = "[a-z0-9]+"


@dataclass(frozen=True)
class MetricSpec:
    """What a track's metric means, declared with the track so that tables need not guess from its name.

    ``name`` is a metric name, or a pattern for a family of them in which each ``<word>`` stands for one
    name part of letters and digits (``keras_<dev>_b<batch>_median_ms``). ``direction``: whether a higher or
    a lower value is better, or ``none`` (a count of timed calls, a text). ``role``: ``quality`` (how good the
    model's outputs are), ``cost`` (what running, storing or training the model takes) or ``info`` (context:
    a reference value, a label, how a measurement went). ``scopes``: where the metric is recorded, ``""``
    for the whole model, else what its scope names: ``layer``, ``conversion`` (a converted model),
    ``corruption``, ``corruption/severity``, ``setting`` (a training recipe).
    """

    name: str
    unit: str
    direction: Direction
    role: Role
    scopes: tuple[str, ...] = ("",)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise RegistryError(f"metric '{self.name}': direction '{self.direction}' is not one of "
                                f"{', '.join(DIRECTIONS)}")  # fmt: skip
        if self.role not in ROLES:
            raise RegistryError(f"metric '{self.name}': role '{self.role}' is not one of {', '.join(ROLES)}")

    def matches(self, metric: str) -> bool:
        """Whether ``metric`` is this metric, or one of this family's."""
        return _name_pattern(self.name).fullmatch(metric) is not None


@functools.cache
def _name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(_PLACEHOLDER_VALUE.join(re.escape(part) for part in _PLACEHOLDER.split(name)))


def find_metric(specs: Iterable[MetricSpec], metric: str, scoped: bool = False) -> MetricSpec | None:
    """The first of ``specs`` that describes ``metric`` recorded for the whole model, or with a scope when
    ``scoped`` (``params`` may be declared once per model and once per layer); None if none does."""
    for spec in specs:
        where = any(spec.scopes) if scoped else "" in spec.scopes
        if where and spec.matches(metric):
            return spec
    return None


@dataclass(frozen=True)
class TrackSpec:
    slug: str
    summary: str
    needs_task_data: bool
    # What each metric the track records means; every metric it records matches one of them.
    metrics: tuple[MetricSpec, ...] = ()


SpecT = TypeVar("SpecT", MethodSpec, TaskSpec, TrackSpec)


@dataclass(frozen=True)
class Entry(Generic[SpecT]):
    spec: SpecT
    factory: Callable
    module: str


class Registry(Generic[SpecT]):
    """Slug -> entry. Lookups of unknown slugs name the closest matches."""

    def __init__(self, noun: str):
        self.noun = noun
        self._entries: dict[str, Entry[SpecT]] = {}

    def add(self, spec: SpecT, factory: Callable) -> None:
        previous = self._entries.get(spec.slug)
        if previous is not None:
            raise RegistryError(
                f"{self.noun} slug '{spec.slug}' is registered twice: by {previous.module} and by "
                f"{factory.__module__}; slugs must be unique"
            )
        self._entries[spec.slug] = Entry(spec, factory, factory.__module__)

    def remove(self, slug: str) -> None:
        self._entries.pop(slug, None)

    def get(self, slug: str) -> Entry[SpecT]:
        load_builtin_entries()
        try:
            return self._entries[slug]
        except KeyError:
            close = difflib.get_close_matches(slug, self._entries, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.noun} '{slug}'{hint} (`effbench list {self.noun}s` shows all)"
            ) from None

    def __contains__(self, slug: str) -> bool:
        load_builtin_entries()
        return slug in self._entries

    def select(self, pattern: str | None = None, suite: str | None = None) -> list[Entry[SpecT]]:
        """Entries whose slug matches the glob ``pattern`` and, for methods, whose suite is ``suite``."""
        load_builtin_entries()
        specs = select_specs([entry.spec for entry in self._entries.values()], pattern, suite)
        return [self._entries[spec.slug] for spec in specs]

    def __iter__(self) -> Iterator[Entry[SpecT]]:
        return iter(self.select())


def select_specs(specs: Iterable[SpecT], pattern: str | None = None, suite: str | None = None) -> list[SpecT]:
    """``specs`` whose slug matches the glob ``pattern`` and, for methods, whose suite is ``suite``, by slug."""
    return sorted(
        (spec for spec in specs if (not pattern or fnmatch.fnmatchcase(spec.slug, pattern))
         and (not suite or getattr(spec, "suite", None) == suite)),
        key=lambda spec: spec.slug,
    )  # fmt: skip


METHODS: Registry[MethodSpec] = Registry("method")
TASKS: Registry[TaskSpec] = Registry("task")
TRACKS: Registry[TrackSpec] = Registry("track")


SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


def check_slug(slug: str) -> None:
    if not SLUG_PATTERN.fullmatch(slug):
        raise RegistryError(
            f"slug '{slug}' is invalid: use lower-case letters, digits, '-', '_' and '.' only"
        )


def register_method(
    slug: str,
    *,
    suite: str,
    kind: Kind,
    paper: Paper,
    summary: str,
    taxonomy: Taxonomy | None = None,
    scale: Scale = "full",
) -> Callable[[type], type]:
    """Class decorator: register a :class:`effbench.method.Method` subclass under ``slug``."""
    check_slug(slug)
    if kind not in KINDS:
        raise RegistryError(f"method '{slug}': kind '{kind}' is not one of {', '.join(KINDS)}")
    if scale not in SCALES:
        raise RegistryError(f"method '{slug}': scale '{scale}' is not one of {', '.join(SCALES)}")
    spec = MethodSpec(slug, suite, kind, paper, summary, taxonomy or Taxonomy(), scale)

    def decorate(cls: type) -> type:
        cls.spec = spec
        METHODS.add(spec, cls)
        return cls

    return decorate


def register_task(spec: TaskSpec) -> Callable[[type], type]:
    """Class decorator: register a :class:`effbench.tasks.base.Task` subclass."""
    check_slug(spec.slug)

    def decorate(cls: type) -> type:
        cls.spec = spec
        TASKS.add(spec, cls)
        return cls

    return decorate


def register_track(
    slug: str, *, summary: str, needs_task_data: bool, metrics: Sequence[MetricSpec]
) -> Callable[[type], type]:
    """Class decorator: register a :class:`effbench.track.Track` subclass, with what its metrics mean."""
    check_slug(slug)
    if not metrics:
        raise RegistryError(f"track '{slug}' declares no metrics: give a MetricSpec for each metric it records")
    spec = TrackSpec(slug, summary, needs_task_data, tuple(metrics))

    def decorate(cls: type) -> type:
        cls.spec = spec
        TRACKS.add(spec, cls)
        return cls

    return decorate


# The packages whose modules register the built-in entries. Named as strings, not imported: the core sits
# below the suites and tracks (they import it, never the reverse; tests/test_imports.py), and loads them as
# plugins only when an entry is looked up.
BUILTIN_PACKAGES = ("effbench.tasks", "suites", "tracks")
_loaded = False
# Re-entrant: importing a built-in module looks entries up, which comes back here on the same thread;
# other threads (the leaderboard's sessions) wait until every module is imported.
_loading = threading.RLock()


def load_builtin_entries() -> None:
    """Import every module of the built-in task, suite and track packages, so they register."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if _loaded or getattr(_loading_state, "active", False):
            return
        _loading_state.active = True
        try:
            for package_name in BUILTIN_PACKAGES:
                package = importlib.import_module(package_name)
                for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
                    if not info.name.rsplit(".", 1)[-1].startswith("_"):
                        importlib.import_module(info.name)
            _loaded = True
        finally:
            _loading_state.active = False


_loading_state = threading.local()
