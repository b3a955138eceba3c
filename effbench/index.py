"""The index: what the built-in registries and command modules declare, readable without importing them.

Filling the registries imports every suite and track, and so TensorFlow (seconds). ``effbench list``,
``effbench --help`` and the leaderboard need only the declarations (slugs, summaries, papers, what each
metric means), so those are kept in ``index.json`` beside this module, generated from the real registries
and committed. ``tests/test_index.py`` checks the committed file equals what the registries yield now;
after adding or changing a method, task, track, metric or command, regenerate it:

    python -m effbench.index --write

Sections, one generator function each in :data:`SECTIONS` (add a section there, and a reader below):

- ``methods``, ``tasks``, ``tracks``, ``modifiers``: every built-in entry's spec, by slug; a track's spec carries its
  metrics' :class:`~effbench.registry.MetricSpec`.
- ``recorded_tracks``: tracks whose records come from a command, not from a registered track
  (``edge_device``, from ``effbench device-result``), with their metrics.
- ``commands``: per module of :data:`effbench.cli.COMMAND_MODULES`, the commands it adds and their help.
- ``protocols``: every suite protocol (``suites/<suite>/protocol.py``) by suite, and the default under ``""``
  (:mod:`effbench.protocol`): what the closed division fixes, the twin rule, the summary columns.

Entries registered at run time (a submission's methods) are not built-in and not indexed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from effbench.modifiers import ModifierSpec
from effbench.protocol import SuiteProtocol
from effbench.registry import (
    BUILTIN_PACKAGES,
    MethodSpec,
    MetricSpec,
    Paper,
    Registry,
    TaskSpec,
    Taxonomy,
    TrackSpec,
    find_metric,
    select_specs,
)

INDEX_PATH = Path(__file__).with_name("index.json")
REGENERATE = "python -m effbench.index --write"


# ------------------------------------------------------------------------------------------ generation


def _builtin_specs(registry: Registry) -> list[dict[str, Any]]:
    """The specs of ``registry``'s built-in entries (registered by a module of a built-in package), by slug."""
    packages = tuple(f"{package}." for package in BUILTIN_PACKAGES)
    return [dataclasses.asdict(entry.spec) for entry in registry if entry.module.startswith(packages)]


def methods_section() -> list[dict[str, Any]]:
    from effbench.registry import METHODS

    return _builtin_specs(METHODS)


def tasks_section() -> list[dict[str, Any]]:
    from effbench.registry import TASKS

    return _builtin_specs(TASKS)


def modifiers_section() -> list[dict[str, Any]]:
    from effbench.modifiers import MODIFIERS

    return _builtin_specs(MODIFIERS)


def tracks_section() -> list[dict[str, Any]]:
    from effbench.registry import TRACKS

    return _builtin_specs(TRACKS)


def recorded_tracks_section() -> list[dict[str, Any]]:
    from effbench.device_results import DEVICE_TRACK_SPEC

    return [dataclasses.asdict(DEVICE_TRACK_SPEC)]


def commands_section() -> dict[str, dict[str, str]]:
    from effbench.cli import COMMAND_MODULES

    return {module: declared_commands(module) for module in COMMAND_MODULES}


def declared_commands(module_name: str) -> dict[str, str]:
    """Name -> help of the commands that ``module_name``'s ``add_command`` adds."""
    subparsers = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module_name).add_command(subparsers)
    # argparse keeps a subcommand's help only on the pseudo-actions it lists in the parent's help.
    return {action.dest: action.help for action in subparsers._choices_actions}


def protocols_section() -> dict[str, dict[str, Any]]:
    from effbench.protocol import protocols_index

    return protocols_index()


SECTIONS: dict[str, Callable[[], Any]] = {
    "methods": methods_section,
    "tasks": tasks_section,
    "tracks": tracks_section,
    "modifiers": modifiers_section,
    "recorded_tracks": recorded_tracks_section,
    "commands": commands_section,
    "protocols": protocols_section,
}


def build() -> dict[str, Any]:
    """The index as the registries and command modules make it now (imports them all)."""
    return {name: generate() for name, generate in SECTIONS.items()}


def render(index: dict[str, Any]) -> str:
    return json.dumps(index, indent=1, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------- reading


@functools.cache
def load() -> dict[str, Any]:
    """The committed index (read once per process)."""
    if not INDEX_PATH.exists():
        raise FileNotFoundError(f"{INDEX_PATH} is missing: run `{REGENERATE}`")
    return json.loads(INDEX_PATH.read_text(encoding="utf-8"))


def _method(row: dict[str, Any]) -> MethodSpec:
    return MethodSpec(**{**row, "paper": Paper(**row["paper"]), "taxonomy": Taxonomy(**row["taxonomy"])})


def _task(row: dict[str, Any]) -> TaskSpec:
    return TaskSpec(**{**row, "input_shape": tuple(row["input_shape"])})


def _modifier(row: dict[str, Any]) -> ModifierSpec:
    return ModifierSpec(**{**row, "paper": Paper(**row["paper"])})


def _metric(row: dict[str, Any]) -> MetricSpec:
    return MetricSpec(**{**row, "scopes": tuple(row["scopes"])})


def _track(row: dict[str, Any]) -> TrackSpec:
    return TrackSpec(**{**row, "metrics": tuple(_metric(metric) for metric in row["metrics"])})


_READERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "methods": _method, "tasks": _task, "tracks": _track, "recorded_tracks": _track, "modifiers": _modifier,
}  # fmt: skip


@functools.cache
def _section(name: str) -> tuple[Any, ...]:
    """The specs of one section, built once per process (the leaderboard looks metrics up per column)."""
    return tuple(map(_READERS[name], load()[name]))


def methods(pattern: str | None = None, suite: str | None = None) -> list[MethodSpec]:
    """Built-in methods whose slug matches the glob ``pattern`` and whose suite is ``suite``, by slug."""
    return select_specs(_section("methods"), pattern, suite)


def method(slug: str) -> MethodSpec | None:
    return next((spec for spec in _section("methods") if spec.slug == slug), None)


def tasks(pattern: str | None = None) -> list[TaskSpec]:
    return select_specs(_section("tasks"), pattern)


def modifiers(pattern: str | None = None) -> list[ModifierSpec]:
    """Built-in training modifiers (written ``method+modifier:options``), by slug."""
    return select_specs(_section("modifiers"), pattern)


def tracks(pattern: str | None = None) -> list[TrackSpec]:
    """Registered tracks (the ones ``effbench run --track`` takes), by slug."""
    return select_specs(_section("tracks"), pattern)


def recorded_tracks() -> list[TrackSpec]:
    """Every track whose records there can be: the registered ones, then those a command records."""
    return [*_section("tracks"), *_section("recorded_tracks")]


def metric_specs(track: str | None = None) -> list[MetricSpec]:
    """What the metrics of ``track`` (of every recorded track when None) mean, in the order tracks declare them."""
    return [metric for spec in recorded_tracks() if track in (None, spec.slug) for metric in spec.metrics]


@functools.cache  # the leaderboard asks once per tidy row: a name's answer is looked up once
def metric_spec(metric: str, scoped: bool = False, track: str | None = None) -> MetricSpec | None:
    """What ``metric`` means (recorded with a scope when ``scoped``), from ``track``'s or any track's metadata."""
    return find_metric(metric_specs(track), metric, scoped)


def commands(module: str) -> dict[str, str] | None:
    """Name -> help of the commands ``module`` adds; None for a module the index does not know."""
    return load()["commands"].get(module)


def protocol(suite: str) -> SuiteProtocol:
    """The protocol ``suite`` declares, else the default one (named after the suite)."""
    protocols = load()["protocols"]
    return SuiteProtocol.from_dict(protocols.get(suite) or {**protocols[""], "suite": suite})


# -------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effbench.index", description="check or regenerate the index")
    parser.add_argument("--write", action="store_true", help=f"rewrite {INDEX_PATH.name} from the registries")
    args = parser.parse_args(argv)
    text = render(build())
    if args.write:
        INDEX_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {INDEX_PATH}")
        return 0
    if INDEX_PATH.exists() and INDEX_PATH.read_text(encoding="utf-8") == text:
        print(f"{INDEX_PATH} is up to date")
        return 0
    print(f"{INDEX_PATH} is out of date: run `{REGENERATE}`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
