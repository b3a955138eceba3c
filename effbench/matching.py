"""Matched cost: the size of an architecture whose MACs (or params) match a reference backbone's on a task.

Architectures are compared at matched cost (the architectures suite's protocol): an architecture is built at
the value of one size knob (``units``, ``width``, ``base``, ...) at which its cost on the task is within
``tolerance`` (10%) of the reference backbone's, and that value is part of its reference string
(``lcm:units=48``), so the record says which size ran. :func:`match_size` finds the value by bisection
over an integer range, assuming the cost does not fall as the knob grows (true of widths and depths), and
refuses, naming the closest value, when no value comes within the tolerance. ``effbench match`` prints it.

Costs are counted by the complexity track on the model the architecture trains on the task
(:meth:`effbench.method.ArchitectureMethod.build_for`), untrained.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from effbench.registry import TASKS, TRACKS, RegistryError, TaskSpec

MEASURES = ("macs", "params")
TOLERANCE = 0.10


class MatchError(ValueError):
    """No value of the knob brings the architecture within the tolerance of the reference."""


@dataclass(frozen=True)
class SizeMatch:
    """``method`` (the architecture at the matched size) costs ``cost``, the ``reference`` backbone ``target``."""

    method: str
    knob: str
    value: int
    measure: str
    cost: int
    reference: str
    target: int

    @property
    def ratio(self) -> float:
        return self.cost / self.target


def model_cost(reference: str, spec: TaskSpec, measure: str = "macs") -> int:
    """``measure`` (macs or params) of the model that ``reference`` trains on ``spec``'s task."""
    from effbench.method import ArchitectureMethod, MethodRef
    from effbench.track import MeasureContext

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, not '{measure}'")
    method = MethodRef.parse(reference).create()
    if not isinstance(method, ArchitectureMethod):
        raise RegistryError(f"'{reference}' is not an architecture: only architectures are built at a size")
    # The complexity track by name, as `effbench measure` runs it: the core does not import the tracks.
    counted = TRACKS.get("complexity").factory().measure(MeasureContext(model=method.build_for(spec)))
    return int(next(metric.value for metric in counted if metric.name == measure and not metric.scope))


def with_option(reference: str, knob: str, value: int) -> str:
    """``reference`` with option ``knob`` set to ``value`` (added, or replacing the one it has)."""
    from effbench.method import MethodRef

    parsed = MethodRef.parse(reference)
    if parsed.modifiers:
        raise ValueError(f"'{reference}': size an architecture without training modifiers")
    options = {**dict(parsed.options), knob: value}
    return str(MethodRef(parsed.slug, tuple(sorted(options.items()))))


def match_size(
    method: str, knob: str, spec: TaskSpec, reference: str | None = None, measure: str = "macs",
    low: int = 1, high: int = 1024, tolerance: float = TOLERANCE,
) -> SizeMatch:  # fmt: skip
    """The value of ``knob`` in [``low``, ``high``] whose cost is closest to ``reference``'s (the task's default
    backbone if None) on ``spec``; :class:`MatchError` if even that one is off by more than ``tolerance``."""
    reference = reference or spec.default_backbone
    target = model_cost(reference, spec, measure)
    costs: dict[int, int] = {}

    def cost(value: int) -> int:
        if value not in costs:
            costs[value] = model_cost(with_option(method, knob, value), spec, measure)
        return costs[value]

    lo, hi = low, high
    while lo < hi:  # the smallest value whose cost reaches the target
        middle = (lo + hi) // 2
        lo, hi = (middle + 1, hi) if cost(middle) < target else (lo, middle)
    closest = min({lo, max(low, lo - 1)}, key=lambda value: abs(cost(value) - target))
    found = SizeMatch(with_option(method, knob, closest), knob, closest, measure, cost(closest), reference, target)
    if abs(found.ratio - 1) > tolerance:
        raise MatchError(
            f"{method} on {spec.slug}: no {knob} in [{low}, {high}] brings its {measure} within "
            f"{tolerance:.0%} of {reference}'s {target:,}; the closest, {knob}={closest}, gives {found.cost:,} "
            f"({found.ratio:.2f}x)"
        )
    return found


# --------------------------------------------------------------------------------------------- the command


def add_command(subparsers: argparse._SubParsersAction) -> None:
    match = subparsers.add_parser(
        "match", help="the size (one option's value) at which an architecture costs what a reference backbone does"
    )
    match.add_argument("method", help="the architecture, with any options it keeps fixed: 'lcm:aggregator=sum'")
    match.add_argument("--knob", required=True, help="the integer option to size it by, e.g. units or width")
    match.add_argument("--task", required=True, help="the task it is sized on")
    match.add_argument("--reference", help="the backbone to match (default: the task's default backbone)")
    match.add_argument("--by", choices=MEASURES, default="macs", help="what to match (default: macs)")
    match.add_argument("--range", nargs=2, type=int, default=(1, 1024), metavar=("LOW", "HIGH"),
                       help="the knob's values to search (default: 1 1024)")  # fmt: skip
    match.add_argument("--tolerance", type=float, default=TOLERANCE, help="the largest relative gap (default 0.1)")
    match.set_defaults(handler=command_match)


def command_match(args: argparse.Namespace) -> int:
    spec = TASKS.get(args.task).spec
    low, high = args.range
    if not 1 <= low <= high:
        raise ValueError(f"--range {low} {high}: expected 1 <= LOW <= HIGH")
    found = match_size(args.method, args.knob, spec, args.reference, args.by, low, high, args.tolerance)
    print(f"{found.method}  {found.measure} {found.cost:,} = {found.ratio:.3f} x {found.reference}'s {found.target:,}"
          f" on {spec.slug}")  # fmt: skip
    return 0
