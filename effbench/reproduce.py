"""``effbench reproduce``: re-run recorded runs and check that their numbers come back.

Selects the measured records of a result folder (``--results``; records whose ``source`` is
``paper: ...`` are left out), rebuilds each run's configuration from the record's stored ``config``,
re-runs it into a fresh result folder (``--out``, or a temporary one; never the folder being reproduced)
and compares every metric with the recorded value under the tolerance of :data:`TOLERANCES`.

Before re-running, today's configuration is hashed again with today's recipe: a run whose task recipe
(or any other part of its config) changed since it was recorded is reported as ``config changed``,
with the fields that differ, and not re-run, since it would measure something else. Runs of one trained
model are planned together (``make_plan`` per training config, FP32 twins included), so one training
serves all its tracks. ``edge_device`` records (timings a user measured on a phone) cannot be re-run
here and are listed as not reproducible.

Tolerances (:data:`TOLERANCES`; the first matching row wins). sigma_seeds is the sample standard
deviation of the metric (same scope) over the recorded seeds of the same method, variant, task, budget,
division and track, used when at least two seeds are recorded:

=====================================  ===================  =================================================
metric                                 unit                 rule
=====================================  ===================  =================================================
``keras_<dev>_device``, ``runtime``,   text                 not compared: they name the machine (CPU model and
``converter``                                               threads, GPU), its interpreter and delegate, or the
                                                            converter's entry point; what they give (sizes,
                                                            accuracy, agreement) is compared
``*_cv``                               ratio                not compared: the spread of the timed calls
                                                            follows the machine's load (42x apart in two runs)
``target_accuracy``, ``sparsity``      ratio                exact: a task constant; a ratio of counts
``loss``                               nat                  abs(diff) <= max(25% of recorded, 3 sigma_seeds)
``target_reached``                     bool                 abs(diff) <= 3 sigma_seeds: exact unless the
                                                            recorded seeds disagree
``epochs_to_target``                   epoch                abs(diff) <= max(1, 3 sigma_seeds)
every other ratio: ``top1``, ``top5``  ratio                abs(diff) <= max(0.02, 3 sigma_seeds)
``ece``, ``agreement``, ...
``peak_*_bytes``, ``*_repeats``        byte, count          reproduced / recorded in [0.5, 2.0], judged only
                                                            on the same hardware, else ``hardware differs``
any other                              ms, s, samples/s     the same timing band
any other                              count, bit, byte,    exact
                                       bool, epoch, text
anything else                                               exact
=====================================  ===================  =================================================

Why. Complexity counts are functions of the architecture, and TFLite conversion is byte-deterministic:
one model converted in two processes gave the same four files (SHA-256 equal), so ``size_bytes`` is
exact. Training on this CPU was bit-identical too: ``mlp`` on ``digits`` (quick, seeds 0-2) and
``resnet-cifar`` (smoke, seeds 0-2) gave the same weights in two processes at 2 threads. It stops being
identical once the arithmetic is ordered differently: at 1 thread instead of 2, ``resnet-cifar`` quick
scored top-1 0.9805 instead of 0.9777 (one test image), loss 0.0726 instead of 0.0813 (12%); other
CPUs, oneDNN kernels and TensorFlow versions reorder it too. A reproduction is then about another draw
from the seeds' distribution, and two draws differ by less than 3 sigma_seeds about 97% of the time.
The 0.02 floor serves tasks recorded with one seed or with seeds that happen to agree: on ``digits`` it
is seven of the 359 test images, and 3 sigma_seeds of ``mlp`` quick over seeds 0-2 is 0.019. Timings
and memory high-water marks depend on the machine and its load; they are judged only when the CPU
model, the CPU threads TensorFlow may use and the GPUs all match the record's.

Exit status: 0 when every selected run reproduced, 1 on any MISMATCH, config change or failed run.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from effbench.cli import result_folder
from effbench.config import RunConfig, TrainingConfig
from effbench.method import MAIN, MethodRef, ModifierRef
from effbench.recipe import BUDGETS
from effbench.records import Record, ResultStore
from effbench.registry import TRACKS, RegistryError
from effbench.runner import Job, JobResult, execute_plan, make_plan
from effbench.track import Metric

# --- tolerances ----------------------------------------------------------------------------------

EXACT = "exact"
SEED_BAND = "seed band"  # |diff| <= max(floor, SEED_SIGMAS * sigma_seeds)
RELATIVE = "relative"  # |diff| <= max(fraction * |recorded|, SEED_SIGMAS * sigma_seeds)
TIMING = "timing"  # TIMING_BAND[0] <= reproduced / recorded <= TIMING_BAND[1], on the same hardware
NOT_COMPARED = "not compared"

SEED_SIGMAS = 3.0
TIMING_BAND = (0.5, 2.0)
# Hardware fields that must match the record's for timings to be judged.
HARDWARE_KEYS = ("cpu", "cpu_threads", "gpu")
TIMING_UNITS = ("ms", "s", "samples/s")
COUNT_UNITS = ("count", "bit", "byte", "bool", "epoch", "text")


@dataclass(frozen=True)
class Rule:
    """Metrics whose name matches one of ``metrics`` (globs) and whose unit is in ``units`` (``*``: any)."""

    metrics: tuple[str, ...]
    units: tuple[str, ...]
    kind: str
    # The floor of a seed band, or the fraction of a relative band.
    value: float = 0.0

    def matches(self, name: str, unit: str) -> bool:
        unit_ok = "*" in self.units or unit in self.units
        return unit_ok and any(fnmatch.fnmatchcase(name, pattern) for pattern in self.metrics)


TOLERANCES: tuple[Rule, ...] = (
    Rule(("keras_*_device", "runtime", "converter"), ("text",), NOT_COMPARED),
    Rule(("*_cv",), ("ratio",), NOT_COMPARED),
    Rule(("target_accuracy", "sparsity"), ("ratio",), EXACT),
    Rule(("loss",), ("nat",), RELATIVE, 0.25),
    Rule(("target_reached",), ("bool",), SEED_BAND, 0.0),
    Rule(("epochs_to_target",), ("epoch",), SEED_BAND, 1.0),
    Rule(("*",), ("ratio",), SEED_BAND, 0.02),
    Rule(("peak_*_bytes", "*_repeats"), ("byte", "count"), TIMING),
    Rule(("*",), TIMING_UNITS, TIMING),
    Rule(("*",), COUNT_UNITS, EXACT),
    Rule(("*",), ("*",), EXACT),
)

OK = "ok"
MISMATCH = "MISMATCH"
HARDWARE_DIFFERS = "hardware differs"
CONFIG_CHANGED = "config changed"
FAILED = "failed"
NOT_REPRODUCIBLE = "not reproducible"
# Runs with these statuses make the exit status non-zero.
BAD_STATUSES = (MISMATCH, CONFIG_CHANGED, FAILED)
# Tracks whose records are not measurements EffBench can repeat (a user's phone timings).
UNREPRODUCIBLE_TRACKS = {"edge_device": "measured on a user's device with benchmark_model"}


def rule_for(name: str, unit: str) -> Rule:
    """The first rule of :data:`TOLERANCES` for this metric (the last one matches anything)."""
    return next(rule for rule in TOLERANCES if rule.matches(name, unit))


# --- comparing one metric ------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One metric of one run: recorded and reproduced values (None when absent), tolerance, result."""

    scope: str
    metric: str
    unit: str
    recorded: float | int | str | None
    reproduced: float | int | str | None
    tolerance: str
    result: str


def judge(
    rule: Rule, recorded: Any, reproduced: Any, sigma: float | None, same_hardware: bool
) -> tuple[str, str]:
    """(tolerance as shown, result) of one metric under ``rule``."""
    if rule.kind == NOT_COMPARED:
        return NOT_COMPARED, NOT_COMPARED
    if rule.kind == TIMING:
        low, high = TIMING_BAND
        tolerance = f"x{low:g}..x{high:g} (same hardware)"
        if not same_hardware:
            return tolerance, HARDWARE_DIFFERS
        return tolerance, _verdict(recorded, reproduced, lambda a, b: _within_ratio(a, b, low, high))
    # Text, or a number recorded where the reproduction has text (or the reverse), can only be equal.
    if rule.kind == EXACT or not _is_number(recorded) or (reproduced is not None and not _is_number(reproduced)):
        return EXACT, _verdict(recorded, reproduced, lambda a, b: a == b)
    bound, tolerance = _band(rule, recorded, sigma)
    return tolerance, _verdict(recorded, reproduced, lambda a, b: abs(b - a) <= bound * (1 + 1e-12))


def _band(rule: Rule, recorded: Any, sigma: float | None) -> tuple[float, str]:
    """The allowed absolute difference of a seed or relative band, and how it reads."""
    spread = SEED_SIGMAS * sigma if sigma is not None else 0.0
    if rule.kind == SEED_BAND:
        floor, floor_text = rule.value, "floor"
    else:
        floor, floor_text = rule.value * abs(recorded), f"{rule.value:.0%} of recorded"
    if spread > floor:
        return spread, f"±{spread:.4g} ({SEED_SIGMAS:g} sigma of seeds)"
    if floor == 0:
        return 0.0, "exact (no spread over seeds)"
    return floor, f"±{floor:.4g} ({floor_text})"


def _verdict(recorded: Any, reproduced: Any, within: Callable[[Any, Any], bool]) -> str:
    if recorded is None or reproduced is None:
        return MISMATCH
    return OK if within(recorded, reproduced) else MISMATCH


def _within_ratio(recorded: float, reproduced: float, low: float, high: float) -> bool:
    if recorded == 0:
        return reproduced == 0
    return low <= reproduced / recorded <= high


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- spreads over seeds --------------------------------------------------------------------------

SpreadKey = tuple[str, str, str, str, str, str, str, str]


def _spread_key(record: Record, metric: Metric) -> SpreadKey:
    return (record.method, record.variant, record.task, record.budget, record.division, record.track,
            metric.scope, metric.name)  # fmt: skip


def seed_spreads(records: Iterable[Record]) -> dict[SpreadKey, float]:
    """Sample standard deviation of each numeric metric over the seeds that recorded it (two or more)."""
    by_seed: dict[SpreadKey, dict[int, float]] = {}
    for record in records:
        for metric in record.metrics:
            if _is_number(metric.value):
                by_seed.setdefault(_spread_key(record, metric), {})[record.seed] = float(metric.value)
    return {key: statistics.stdev(values.values()) for key, values in by_seed.items() if len(values) >= 2}


# --- comparing one run ---------------------------------------------------------------------------


def same_hardware(recorded: dict[str, Any], reproduced: dict[str, Any]) -> bool:
    """Whether timings of the two records are comparable: same CPU model, CPU threads and GPUs."""
    return all(recorded.get(key) == reproduced.get(key) for key in HARDWARE_KEYS)


def paired_scopes(recorded: Sequence[Metric], reproduced: Sequence[Metric]) -> dict[str, str]:
    """Reproduced scope -> recorded scope, for scopes named differently in the same place.

    Per-layer complexity scopes are layer names, and Keras numbers unnamed layers by how many it built
    before in the process (``dense_1`` when recorded after one model, ``dense_3`` when re-run after
    another), so a layer's name is not its identity across processes. Scopes both sides have are kept;
    the others are paired in the order the track listed them, when both sides have as many.
    """
    old = list(dict.fromkeys(m.scope for m in recorded if m.scope))
    new = list(dict.fromkeys(m.scope for m in reproduced if m.scope))
    only_old = [scope for scope in old if scope not in set(new)]
    only_new = [scope for scope in new if scope not in set(old)]
    return dict(zip(only_new, only_old, strict=True)) if len(only_old) == len(only_new) else {}


def compare(
    recorded: Record, reproduced: Record, spreads: dict[SpreadKey, float], renamed: dict[str, str]
) -> list[Check]:
    """Every metric of either record, in the recorded order, then those only the reproduction has.

    ``renamed`` maps reproduced scopes to the recorded ones they stand for (:func:`paired_scopes`).
    """
    old = {(m.scope, m.name): m for m in recorded.metrics}
    new = {(renamed.get(m.scope, m.scope), m.name): m for m in reproduced.metrics}
    hardware_matches = same_hardware(recorded.hardware, reproduced.hardware)
    checks = []
    for key in [*old, *(key for key in new if key not in old)]:
        before, after = old.get(key), new.get(key)
        metric = before or after
        recorded_value = before.value if before else None
        reproduced_value = after.value if after else None
        sigma = spreads.get(_spread_key(recorded, metric))
        rule = rule_for(metric.name, metric.unit)
        tolerance, result = judge(rule, recorded_value, reproduced_value, sigma, hardware_matches)
        values = (recorded_value, reproduced_value)
        checks.append(Check(key[0], metric.name, metric.unit, *values, tolerance, result))
    return checks


def version_changes(recorded: Record, reproduced: Record) -> list[str]:
    """Package versions that differ: the usual explanation of a mismatch on the same machine."""
    old, new = recorded.versions, reproduced.versions
    return [f"{name} {old.get(name, 'absent')} -> {new.get(name, 'absent')}"
            for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]  # fmt: skip


# --- selecting and rebuilding runs ---------------------------------------------------------------


def select_records(
    records: Iterable[Record],
    methods: Sequence[MethodRef] = (),
    suite: str | None = None,
    tasks: Sequence[str] = (),
    budget: str | None = None,
    tracks: Sequence[str] = (),
) -> list[Record]:
    """Measured records matching every filter given; a method with options matches only that variant."""

    def method_matches(record: Record) -> bool:
        return any(record.method == ref.slug and (not ref.options or record.variant == ref.variant) for ref in methods)

    return [
        record
        for record in records
        if not record.source.startswith("paper:")
        and (not methods or method_matches(record))
        and (suite is None or record.suite == suite)
        and (not tasks or record.task in tasks)
        and (budget is None or record.budget == budget)
        and (not tracks or record.track in tracks)
    ]


def rebuild(record: Record) -> RunConfig:
    """The run a record describes, from its stored config, with today's registry and recipes."""
    config = record.config
    modifiers = tuple(
        ModifierRef(item["modifier"], tuple(sorted(item["options"].items()))) for item in config.get("modifiers", [])
    )
    method = MethodRef(config["method"], tuple(sorted(config["options"].items())), modifiers)
    method.create()  # the method still exists and accepts these options
    TRACKS.get(config["track"])
    training = TrainingConfig(method, config["task"], config["seed"], config["budget"])
    return RunConfig(training, config["track"], config["division"], config.get("deployable", MAIN))


_ABSENT = "(absent)"


def config_changes(recorded: dict[str, Any], today: dict[str, Any], prefix: str = "") -> list[str]:
    """``key.path: recorded -> today`` for every field that differs, nested dicts walked."""
    changes = []
    for key in sorted(set(recorded) | set(today)):
        old, new = recorded.get(key, _ABSENT), today.get(key, _ABSENT)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new or type(old) is not type(new):
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


@dataclass
class Outcome:
    """What became of one selected record."""

    record: Record
    status: str
    detail: str = ""
    checks: list[Check] = field(default_factory=list)


def prepare(record: Record) -> RunConfig | Outcome:
    """The run to repeat, or the outcome that makes repeating it pointless."""
    if record.track in UNREPRODUCIBLE_TRACKS:
        return Outcome(record, NOT_REPRODUCIBLE, UNREPRODUCIBLE_TRACKS[record.track])
    try:
        run = rebuild(record)
        today = run.as_dict()
    except (AttributeError, KeyError, TypeError, ValueError, RegistryError) as error:
        return Outcome(record, FAILED, f"cannot rebuild its config: {error}")
    if run.hash != record.config_hash:
        changes = config_changes(record.config, today) or ["the config hashes differ"]
        return Outcome(record, CONFIG_CHANGED, "; ".join(changes))
    return run


# --- planning, running, judging ------------------------------------------------------------------


def plan_jobs(runs: Sequence[RunConfig], store: ResultStore) -> list[Job]:
    """One job per training config (twins first), forced: each trains once for all its tracks."""
    groups: dict[tuple[str, str], list[RunConfig]] = {}
    for run in runs:
        groups.setdefault((run.training.hash, run.division), []).append(run)
    jobs: dict[tuple[str, str], Job] = {}
    for group in groups.values():
        training, division = group[0].training, group[0].division
        tracks = list(dict.fromkeys(run.track for run in group))
        planned = make_plan([training.method], [training.task], [training.seed], tracks, training.budget, store,
                            division, force=True)  # fmt: skip
        for job in planned:
            merged = jobs.setdefault((job.training.hash, job.division), job)
            if merged is not job:  # an upstream that is also reproduced in its own right, or vice versa
                merged.tracks.extend(track for track in job.tracks if track not in merged.tracks)
    return list(jobs.values())


def failure_of(run: RunConfig, results: Sequence[JobResult]) -> str:
    """The runner's message for a run that wrote no record."""
    messages = [
        message
        for result in results
        if result.job.training.hash == run.training.hash
        for message in result.failures
        if f" failed at {run.track}:" in message or " failed at training:" in message
    ]
    return "; ".join(messages) or "the re-run wrote no record"


def judge_run(
    record: Record,
    run: RunConfig,
    reproduced: dict[str, Record],
    results: Sequence[JobResult],
    spreads: dict[SpreadKey, float],
) -> Outcome:
    """Compare a re-run with its record; a run that wrote no record failed."""
    again = reproduced.get(run.hash)
    if again is None:
        return Outcome(record, FAILED, failure_of(run, results))
    renamed = paired_scopes(record.metrics, again.metrics)
    checks = compare(record, again, spreads, renamed)
    mismatches = sum(check.result == MISMATCH for check in checks)
    notes = [f"{mismatches} metric(s) out of tolerance"] if mismatches else []
    if renamed:
        new, old = next(iter(renamed.items()))
        notes.append(f"{len(renamed)} scope(s) named differently, paired in order (e.g. {old} -> {new})")
    if not same_hardware(record.hardware, again.hardware):
        notes.append(f"hardware differs: recorded on {_hardware_text(record.hardware)}")
    if changed := version_changes(record, again):
        notes.append("versions differ: " + ", ".join(changed))
    return Outcome(record, MISMATCH if mismatches else OK, "; ".join(notes), checks)


def _hardware_text(hardware: dict[str, Any]) -> str:
    return f"{hardware.get('cpu')} ({hardware.get('cpu_threads')} threads), GPU {hardware.get('gpu')}"


def reproduce(
    selected: Sequence[Record],
    spreads: dict[SpreadKey, float],
    store: ResultStore,
    log: Callable[[str], None] = print,
) -> list[Outcome]:
    """Re-run the selected records' runs into ``store`` and judge each against its record."""
    prepared = [(record, prepare(record)) for record in selected]
    runs = [run for _, run in prepared if isinstance(run, RunConfig)]
    results = execute_plan(plan_jobs(runs, store), store, log=log, force=True) if runs else []
    reproduced = {record.config_hash: record for result in results for record in result.records}
    return [
        judge_run(record, run, reproduced, results, spreads) if isinstance(run, RunConfig) else run
        for record, run in prepared
    ]


# --- tables and the command ----------------------------------------------------------------------

RUN_COLUMNS = ["task", "method", "variant", "deployable", "seed", "budget", "track"]


def runs_frame(outcomes: Sequence[Outcome]) -> pd.DataFrame:
    """One row per selected record: what it was, and what became of it."""
    rows = [{**_run_fields(o.record), "status": o.status, "detail": o.detail} for o in outcomes]
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "status", "detail"])


def checks_frame(outcomes: Sequence[Outcome], readable: bool = False) -> pd.DataFrame:
    """One row per compared metric of every re-run run; ``readable`` writes the values as short text."""
    rows = [{**_run_fields(o.record), **asdict(check)} for o in outcomes for check in o.checks]
    if readable:
        # Formatted per value, before pandas would turn a column of counts and missing values into floats.
        rows = [{**row, "recorded": _shown(row["recorded"]), "reproduced": _shown(row["reproduced"])} for row in rows]
    columns = [*RUN_COLUMNS, "scope", "metric", "unit", "recorded", "reproduced", "tolerance", "result"]
    return pd.DataFrame(rows, columns=columns)


def _run_fields(record: Record) -> dict[str, Any]:
    return {name: getattr(record, name) for name in RUN_COLUMNS}


def _shown(value: Any) -> str:
    if value is None:
        return "(missing)"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def print_report(outcomes: Sequence[Outcome], full: bool = False) -> None:
    """The metric table (``full``: every compared metric; else the ones that did not reproduce, and a count of
    those that did), then one row per run, then the count of each status."""
    checks = checks_frame(outcomes, readable=True)
    # Timings on other hardware are not judged: like matches and uncompared metrics, a count says enough.
    quiet = checks["result"].isin([OK, NOT_COMPARED, HARDWARE_DIFFERS])
    if not full and quiet.any():
        counts = checks.loc[quiet, "result"].value_counts()
        print("\n" + ", ".join(f"{count} metric(s) {result}" for result, count in counts.items())
              + " (--full lists every compared metric)")  # fmt: skip
        checks = checks[~quiet]
    if not checks.empty:
        print("\n" + checks.to_string(index=False))
    print("\n" + runs_frame(outcomes).to_string(index=False))
    counts = pd.Series([o.status for o in outcomes]).value_counts()
    print("\n" + ", ".join(f"{count} {status}" for status, count in counts.items()))


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``effbench reproduce`` to the command line (see :data:`effbench.cli.COMMAND_MODULES`)."""
    parser = subparsers.add_parser(
        "reproduce", help="re-run recorded runs and check their numbers against the records"
    )
    parser.add_argument("methods", nargs="*", metavar="METHOD",
                        help="method slugs (slug:key=value for one variant); default: every recorded method")
    parser.add_argument("--suite", help="only methods of this suite")
    parser.add_argument("--task", nargs="+", default=[], metavar="T")
    parser.add_argument("--budget", choices=BUDGETS)
    parser.add_argument("--track", nargs="+", default=[], metavar="K")
    parser.add_argument("--results", type=Path, default=Path("results/baselines"), help="the records to reproduce")
    parser.add_argument("--full", action="store_true",
                        help="list every compared metric, not only those that did not reproduce")
    parser.add_argument("--out", type=result_folder,
                        help="where the re-runs are written (default: a temporary folder); for a submission's "
                        "results, the folder of the copy of the submission that is run again")
    parser.set_defaults(handler=command_reproduce)  # fmt: skip


def command_reproduce(args: argparse.Namespace) -> int:
    """Select, re-run into ``--out`` (or a temporary folder), judge, print; 1 if anything did not reproduce."""
    store = ResultStore(args.results)
    if not store.records_dir.is_dir():
        raise FileNotFoundError(f"{store.records_dir} does not exist: give --results a result folder")
    if args.out is not None and args.out.resolve().is_relative_to(args.results.resolve()):
        raise ValueError(f"--out {args.out} is inside --results {args.results}: re-runs never write there")
    records = store.records()
    measured = [record for record in records if not record.source.startswith("paper:")]
    methods = [MethodRef.parse(text) for text in args.methods]
    selected = select_records(measured, methods, args.suite, args.task, args.budget, args.track)
    if not selected:
        print(f"no measured records in {args.results} match", file=sys.stderr)
        return 1
    left_out = len(records) - len(measured)
    paper = f" ({left_out} paper-reported record(s) left out)" if left_out else ""
    print(f"reproducing {len(selected)} recorded run(s) from {args.results}{paper}")
    spreads = seed_spreads(measured)
    folder = submission_folder(args.results)
    if folder is not None:
        outcomes = reproduce_submission(selected, spreads, folder, args.out)
    elif args.out is not None:
        outcomes = reproduce(selected, spreads, ResultStore(args.out))
    else:
        with tempfile.TemporaryDirectory(prefix="effbench-reproduce-") as temporary:
            outcomes = reproduce(selected, spreads, ResultStore(temporary))
    print_report(outcomes, args.full)
    return 1 if any(outcome.status in BAD_STATUSES for outcome in outcomes) else 0


# --- a submission's results ----------------------------------------------------------------------


def submission_folder(results: Path) -> Path | None:
    """The submission folder whose ``results`` these are (it holds submission.yaml and a method.py), or None.

    Its methods are registered only by its method.py, which runs in the sandbox alone: its records are
    reproduced by running the submission again there (:func:`reproduce_submission`).
    """
    from effbench.submission import METHOD_FILE, RESULTS_DIR, YAML_NAME

    folder = results.resolve().parent
    if results.resolve().name == RESULTS_DIR and (folder / YAML_NAME).is_file() and (folder / METHOD_FILE).exists():
        return folder
    return None


def reproduce_submission(
    selected: Sequence[Record], spreads: dict[SpreadKey, float], folder: Path, out: Path | None
) -> list[Outcome]:
    """Run a copy of the submission (its YAML and method.py, no results) in the sandbox, once per recorded
    budget, into ``out`` (or a temporary folder), and judge each selected record against the re-run's record
    of the same config hash: ``sandbox`` numbers against ``sandbox`` ones, ``verified`` against ``verified``."""
    with contextlib.ExitStack() as stack:
        base = out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="effbench-reproduce-")))
        again: dict[str, Record] = {}
        for budget in sorted({record.budget for record in selected}):
            copy = copy_submission(folder, base / f"{folder.name}-{budget}")
            again.update(rerun_submission(copy, budget))
    return [judge_again(record, again.get(record.config_hash), spreads) for record in selected]


def copy_submission(folder: Path, copy: Path) -> Path:
    """A fresh folder with the submission's YAML and method.py (and nothing recorded)."""
    from effbench.submission import METHOD_FILE, YAML_NAME

    copy.mkdir(parents=True, exist_ok=True)
    for name in (YAML_NAME, METHOD_FILE):
        shutil.copyfile(folder / name, copy / name)
    return copy


def rerun_submission(copy: Path, budget: str) -> dict[str, Record]:
    """Run the copy in the sandbox at ``budget``; its records by config hash."""
    from effbench.submission import read_submission
    from effbench.untrusted import check_in_sandbox, run_in_sandbox

    run_in_sandbox(check_in_sandbox(read_submission(copy, budget)))
    store = ResultStore(copy / "results")
    return {record.config_hash: record for record in store.records()} if store.records_dir.is_dir() else {}


def judge_again(record: Record, again: Record | None, spreads: dict[SpreadKey, float]) -> Outcome:
    """A recorded run against its re-run (None: the re-run wrote no record of the same config)."""
    if again is None:
        return Outcome(record, FAILED, "the re-run wrote no record of this config: it failed, or its config changed")
    renamed = paired_scopes(record.metrics, again.metrics)
    checks = compare(record, again, spreads, renamed)
    mismatches = sum(check.result == MISMATCH for check in checks)
    notes = [f"{mismatches} metric(s) out of tolerance"] if mismatches else []
    if not same_hardware(record.hardware, again.hardware):
        notes.append(f"hardware differs: recorded on {_hardware_text(record.hardware)}")
    return Outcome(record, MISMATCH if mismatches else OK, "; ".join(notes), checks)
