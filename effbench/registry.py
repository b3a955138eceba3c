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


def method_about(spec: MethodSpec) -> dict:
    """What a record says its method is (``Record.about``): the spec's declarations as plain JSON."""
    paper = {"title": spec.paper.title, "year": spec.paper.year, "url": spec.paper.url}
    return {"suite": spec.suite, "kind": spec.kind, "scale": spec.scale, "summary": spec.summary, "paper": paper,
            "taxonomy": dict(vars(spec.taxonomy))}  # fmt: skip


Direction = Literal["higher", "lower", "none"]
TaskKind = Literal["classification", "segmentation", "super-resolution", "regression", "ctr", "enhancement"]
# What one input is: an (H, W, C) image in [0, 1]; a real-valued vector (L,); a real-valued sequence (T, F);
# frames, a sequence of images (T, H, W, C); a set, (N, F) elements in no order; tokens, (L,) integer ids
# (0 = padding); categorical, (F,) integer ids of F fields. Ids are stored as float32 in [0, vocabulary).
Modality = Literal["image", "vector", "sequence", "frames", "set", "tokens", "categorical"]
MODALITIES: tuple[str, ...] = ("image", "vector", "sequence", "frames", "set", "tokens", "categorical")
ID_MODALITIES: tuple[str, ...] = ("tokens", "categorical")


@dataclass(frozen=True)
class KindSpec:
    """What a task kind is trained with and scored by; the accuracy track computes ``quality``.

    ``primary`` is the metric the FP32 twin's ratio uses (``fp32_<primary>``, ``<primary>_relative``), better
    in ``direction``. ``loss`` is the training loss; ``label`` what one example's label holds, of dtype
    ``label_dtype``; ``training_metric`` the Keras metric ``fit`` logs (``val_<name>`` is what the
    training_cost track's target is compared with), or "" for none.
    """

    kind: str
    primary: str
    direction: Direction
    quality: tuple[str, ...]
    loss: str
    label: str
    label_dtype: Literal["int32", "float32"]
    training_metric: str


TASK_KINDS: dict[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec("classification", "top1", "higher", ("top1", "top5", "loss", "ece"),
                 "cross-entropy of the class", "class index", "int32", "accuracy"),
        KindSpec("segmentation", "miou", "higher", ("miou", "pixel_accuracy", "loss"),
                 "cross-entropy of each pixel's class", "class index per pixel (H, W)", "int32", "accuracy"),
        KindSpec("super-resolution", "psnr_y", "higher", ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y"),
                 "mean squared error of the pixels", "the high-resolution image (sH, sW, C) in [0, 1]", "float32", ""),
        KindSpec("regression", "rmse", "lower", ("rmse", "mae", "r2"),
                 "mean squared error", "target values", "float32", ""),
        KindSpec("ctr", "auc", "higher", ("auc", "logloss"),
                 "binary cross-entropy of the click", "click: 1, or 0", "int32", "accuracy"),
        KindSpec("enhancement", "si_snr", "higher", ("si_snr", "si_snri", "noisy_si_snr"),
                 "mean squared error of the samples", "the clean signal, shaped like the input", "float32", ""),
    )
}  # fmt: skip


@dataclass(frozen=True)
class TaskSpec:
    """A task's declaration: what its inputs and labels are, how it is scored, and its default backbone.

    ``kind`` says how it is trained and scored (:data:`TASK_KINDS`). ``num_classes``: classes of a
    classification, segmentation or CTR task (2: no click, click), 0 where labels are not classes.
    ``output_shape``: one example's label, ``()`` for a class index, ``(H, W)`` for per-pixel classes, the
    image's shape for super-resolution, the input's shape for enhancement (the clean signal). ``vocabulary``:
    for id inputs (``tokens``, ``categorical``), the size of the id space; 0 for real-valued inputs.
    """

    slug: str
    summary: str
    input_shape: tuple[int, ...]
    num_classes: int
    default_backbone: str
    modality: Modality
    embedded: bool
    # Validation value of the kind's training metric (top-1; pixel accuracy for segmentation) that counts as
    # "trained" for time-to-target in the training_cost track; 0 where the kind logs none.
    target_accuracy: float
    kind: TaskKind = "classification"
    output_shape: tuple[int, ...] = ()
    vocabulary: int = 0

    def __post_init__(self) -> None:
        # Specs read back from the index carry lists; a spec always holds tuples.
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "output_shape", tuple(self.output_shape))

    @property
    def quality(self) -> KindSpec:
        """How this task's kind is trained and scored."""
        return TASK_KINDS[self.kind]


def check_task_spec(spec: TaskSpec) -> None:
    """A task's kind, modality, labels and vocabulary must fit together; raises RegistryError naming what does not."""
    problems = []
    if spec.kind not in TASK_KINDS:
        problems.append(f"kind '{spec.kind}' is not one of {', '.join(TASK_KINDS)}")
    if spec.modality not in MODALITIES:
        problems.append(f"modality '{spec.modality}' is not one of {', '.join(MODALITIES)}")
    if (spec.vocabulary > 0) != (spec.modality in ID_MODALITIES):
        problems.append(f"a vocabulary ({spec.vocabulary}) goes with id inputs ({', '.join(ID_MODALITIES)}) only")
    classes = spec.kind in ("classification", "segmentation", "ctr")
    if classes != (spec.num_classes > 0) or (spec.kind == "ctr" and spec.num_classes != 2):
        problems.append(f"num_classes {spec.num_classes} does not fit kind '{spec.kind}'")
    if spec.kind in ("classification", "ctr") and spec.output_shape != ():
        problems.append(f"a '{spec.kind}' label is one class index: output_shape must be (), not {spec.output_shape}")
    if spec.kind in ("segmentation", "super-resolution") and len(spec.output_shape) != (2 if classes else 3):
        problems.append(f"output_shape {spec.output_shape} is not a {spec.kind} label's (see TaskSpec)")
    if spec.kind == "enhancement" and spec.output_shape != spec.input_shape:
        problems.append(f"an enhanced signal is shaped like the input {spec.input_shape}, not {spec.output_shape}")
    if problems:
        raise RegistryError(f"task '{spec.slug}': " + "; ".join(problems))


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
    check_task_spec(spec)

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
