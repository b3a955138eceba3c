"""``effbench paper-records FILE --out DIR``: records of the values papers report, from a YAML file.

The leaderboard shows a paper's number beside ours when a record holds it with ``source: "paper: <citation>"``
(kept apart from measured rows, never averaged with them, a diamond in the Pareto plot; ``effbench
reproduce`` and ``effbench table`` leave such records out). This module makes those records from a
human-edited file, one entry per reported value (``suites/binarization/paper_results.yaml``)::

    retrieved: 2026-11-22                # when the values were copied from their sources: the records' timestamp
    entries:
      - method: reste                    # a registered method slug
        task: cifar10                    # a registered task slug
        backbone: resnet-cifar:depth=20  # the architecture the value is for, as a method reference
        setting: W1A1                    # bit-widths of the value; must be the method's own (its taxonomy)
        top1: 0.8675                     # top-1 accuracy as a fraction in [0, 1] (86.75% -> 0.8675)
        citation: "Wu et al., ICCV 2023 (ReSTE): official README, CIFAR-10 table"   # who reports it, and where
        note: "1000 epochs, batch 256"   # optional: the source's own training setting

Each entry becomes one ``accuracy`` record (metric ``top1``, unit ``ratio``, seed 0, budget ``paper``) whose
config mirrors the run of that method that ``effbench run`` would make: an operator's ``backbone`` option is
set where the backbone is not the task's default (``bnn:backbone=vgg-small``), and the division is the one
``effbench run`` would give it (:func:`effbench.protocol.division_of`: ``closed`` for the protocol's
backbones, ``vgg-small`` included, ``open`` for others such as ``resnet-cifar:depth=32``); a method with no
``backbone`` option (an architecture, for a float reference) must be the backbone itself. The config also
holds the ``source`` and a ``paper`` block (citation, setting, backbone, note), so its hash never equals a
measured run's: a paper record never makes ``effbench run`` skip the run it stands beside. Records are
deterministic (run id, timestamp and provenance follow from the entry), so generating them again rewrites
identical files.

Every entry is checked before anything is written; an error names the file, the entry and the field.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effbench import __version__
from effbench.config import RunConfig, TrainingConfig
from effbench.hashing import stable_hash
from effbench.method import MethodRef
from effbench.protocol import division_of
from effbench.records import Record, ResultStore
from effbench.registry import METHODS, TASKS, RegistryError
from effbench.strict_yaml import load_mapping
from effbench.track import Metric

PAPER_PREFIX = "paper: "
TRACK = "accuracy"
BUDGET = "paper"
SEED = 0
TOP_FIELDS = {"retrieved", "entries"}
REQUIRED = ("method", "task", "backbone", "setting", "top1", "citation")
OPTIONAL = ("note",)
SETTING = re.compile(r"W(\d+)A(\d+)")
# A paper's value was measured on the authors' machines, not on any hardware EffBench knows.
PAPER_HARDWARE = {"cpu": "paper-reported", "cpu_threads": 0, "gpu": "none", "platform": "reported by the source"}


class PaperResultsError(ValueError):
    """A paper-results file that cannot be turned into records; the message names file, entry and field."""


@dataclass(frozen=True)
class PaperValue:
    """One value a paper reports, checked against the registries."""

    method: str
    task: str
    backbone: str
    setting: str
    top1: float
    citation: str
    note: str = ""
    where: str = ""  # "FILE: entries[i]", for messages

    @property
    def source(self) -> str:
        return PAPER_PREFIX + self.citation


@dataclass(frozen=True)
class PaperResults:
    path: Path
    retrieved: dt.date
    values: list[PaperValue]
    skipped: list[PaperValue]  # entries of methods not registered (only with skip_unregistered)


# ---------------------------------------------------------------- reading


def load_paper_results(path: Path, skip_unregistered: bool = False) -> PaperResults:
    """Read and check ``path``; with ``skip_unregistered``, entries of unknown methods are set aside, not errors."""
    data = read_mapping(path)
    unknown = sorted(set(data) - TOP_FIELDS, key=str)
    if unknown:
        raise PaperResultsError(f"{path}: unknown field(s) {', '.join(map(str, unknown))} (fields: entries, retrieved)")
    retrieved = data.get("retrieved")
    if isinstance(retrieved, str):
        try:
            retrieved = dt.date.fromisoformat(retrieved)
        except ValueError:
            pass
    if not isinstance(retrieved, dt.date) or isinstance(retrieved, dt.datetime):
        raise PaperResultsError(
            f"{path}: field 'retrieved' is {retrieved!r}, expected the date the values were copied, as YYYY-MM-DD"
        )
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise PaperResultsError(f"{path}: field 'entries' must be a non-empty list of entries")
    values, skipped = [], []
    for index, item in enumerate(entries):
        value = parse_entry(item, f"{path}: entries[{index}]")
        if value.method not in METHODS:
            if not skip_unregistered:
                raise PaperResultsError(f"{value.where}: field 'method': {unknown_method(value.method)}")
            skipped.append(value)
            continue
        check_value(value)
        values.append(value)
    check_no_duplicates(values)
    return PaperResults(path, retrieved, values, skipped)


def read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PaperResultsError(f"{path}: cannot read the file: {error}") from None
    return load_mapping(path, text, PaperResultsError, "a mapping with 'retrieved' and 'entries'")


def parse_entry(item: Any, where: str) -> PaperValue:
    """The fields of one entry, with their types checked (the registries are checked by :func:`check_value`)."""
    if not isinstance(item, dict):
        raise PaperResultsError(f"{where}: expected a mapping with fields {', '.join(REQUIRED)}, found {item!r:.60}")
    unknown = sorted(set(item) - set(REQUIRED) - set(OPTIONAL), key=str)
    if unknown:
        fields = ", ".join((*REQUIRED, *OPTIONAL))
        raise PaperResultsError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} (fields: {fields})")
    where = f"{where} ({item.get('method')} on {item.get('task')})"
    for name in REQUIRED:
        if item.get(name) is None or (isinstance(item[name], str) and not item[name].strip()):
            hint = ": say who reports the value, and where (paper + table, or README)" if name == "citation" else ""
            raise PaperResultsError(f"{where}: field '{name}' is missing{hint}")
    for name in (*(n for n in REQUIRED if n != "top1"), *OPTIONAL):
        if name in item and not isinstance(item[name], str):
            raise PaperResultsError(f"{where}: field '{name}' is {item[name]!r}, expected a string")
    top1 = item["top1"]
    if isinstance(top1, bool) or not isinstance(top1, int | float) or not math.isfinite(top1):
        raise PaperResultsError(f"{where}: field 'top1' is {top1!r}, expected a number")
    if not 0.0 <= top1 <= 1.0:
        hint = f" ({top1}% is written {top1 / 100:.6g})" if 1.0 < top1 <= 100.0 else ""
        raise PaperResultsError(f"{where}: field 'top1' is {top1}, expected top-1 as a fraction in [0, 1]{hint}")
    return PaperValue(
        method=item["method"].strip(), task=item["task"].strip(), backbone=item["backbone"].strip(),
        setting=item["setting"].strip(), top1=float(top1), citation=" ".join(item["citation"].split()),
        note=" ".join(item.get("note", "").split()), where=where,
    )  # fmt: skip


def unknown_method(slug: str) -> str:
    """The registry's message for an unknown slug, with its closest matches."""
    try:
        METHODS.get(slug)
    except RegistryError as error:
        return f"{error}; with --skip-unregistered such entries are listed and left out"
    return f"method '{slug}' is registered"  # not reached: only called for unknown slugs


def check_value(value: PaperValue) -> None:
    """The task, backbone and setting against the registries; the method reference must be one we can run."""
    try:
        TASKS.get(value.task)
    except RegistryError as error:
        raise PaperResultsError(f"{value.where}: field 'task': {error}") from None
    method_ref(value)  # raises on a bad backbone
    taxonomy = METHODS.get(value.method).spec.taxonomy
    expected = f"W{taxonomy.weight_bits}A{taxonomy.activation_bits}"
    if not SETTING.fullmatch(value.setting):
        raise PaperResultsError(
            f"{value.where}: field 'setting' is {value.setting!r}, expected weight and activation bits as "
            f"W<bits>A<bits> ({expected} for '{value.method}')"
        )
    if value.setting != expected:
        raise PaperResultsError(
            f"{value.where}: field 'setting' is {value.setting}, but '{value.method}' runs at {expected} here: "
            "the value would stand beside runs of another bit-width; leave it out"
        )


def check_no_duplicates(values: Sequence[PaperValue]) -> None:
    seen: dict[tuple, PaperValue] = {}
    for value in values:
        key = (value.method, str(method_ref(value)), value.task, value.citation)
        earlier = seen.setdefault(key, value)
        if earlier is not value:
            raise PaperResultsError(
                f"{value.where}: same method, backbone, task and citation as {earlier.where}: one record each; "
                "keep one entry"
            )


# ---------------------------------------------------------------- records


def method_ref(value: PaperValue) -> MethodRef:
    """The method reference our run of the entry's method on its backbone would use."""
    where = f"{value.where}: field 'backbone'"
    backbone = canonical(value.backbone, where)
    kind = METHODS.get(backbone.slug).spec.kind
    if kind != "architecture":
        raise PaperResultsError(f"{where}: '{backbone.slug}' is a method of kind {kind}, not an architecture")
    defaults = getattr(METHODS.get(value.method).factory, "default_options", {})
    if "backbone" in defaults:
        # What the method builds without the option: its own default, else the task's (OperatorMethod.backbone).
        default = canonical(defaults["backbone"] or TASKS.get(value.task).spec.default_backbone, where)
        ref = (
            MethodRef(value.method) if backbone == default else MethodRef(value.method, (("backbone", str(backbone)),))
        )
    elif backbone.slug == value.method:
        ref = backbone  # a float reference: the architecture itself
    else:
        raise PaperResultsError(
            f"{where}: '{value.method}' has no 'backbone' option, so the backbone must be the method itself "
            f"(a float reference: method {backbone.slug}, backbone {value.backbone})"
        )
    try:
        ref.create()
    except (RegistryError, ValueError, TypeError) as error:
        raise PaperResultsError(f"{value.where}: method reference '{ref}': {error}") from None
    return ref


def canonical(text: str, where: str) -> MethodRef:
    """``text`` as a method reference without the options that equal their defaults.

    ``resnet-cifar:depth=20`` is ``resnet-cifar`` (depth 20 is its default), as in a run that gives no option.
    """
    try:
        ref = MethodRef.parse(text)
        options = ref.create().options
        defaults = METHODS.get(ref.slug).factory.default_options
    except (RegistryError, ValueError, TypeError) as error:
        raise PaperResultsError(f"{where}: {error}") from None
    changed = tuple((key, value) for key, value in sorted(options.items()) if defaults.get(key, object()) != value)
    return MethodRef(ref.slug, changed)


def paper_record(value: PaperValue, retrieved: dt.date) -> Record:
    """The record of one value: the config of our run of it, plus its source; everything else deterministic."""
    ref = method_ref(value)
    method = ref.create()
    training = TrainingConfig(ref, value.task, SEED, BUDGET)
    run = RunConfig(training, TRACK, division_of(ref))
    paper = {"citation": value.citation, "setting": value.setting, "backbone": value.backbone, "note": value.note}
    config = {**run.as_dict(), "source": value.source, "paper": paper}
    config_hash = stable_hash(config)
    return Record(
        run_id=f"paper-{config_hash}",
        config_hash=config_hash,
        training_hash=stable_hash({**training.as_dict(), "source": value.source, "paper": paper}),
        config=config,
        method=method.spec.slug,
        variant=ref.variant,
        suite=method.spec.suite,
        task=value.task,
        track=TRACK,
        seed=SEED,
        budget=BUDGET,
        division=run.division,
        hardware=dict(PAPER_HARDWARE),
        versions={"effbench": __version__},
        git_commit="none",
        timestamp=dt.datetime.combine(retrieved, dt.time(), dt.UTC).isoformat(timespec="seconds"),
        metrics=[Metric("top1", value.top1, "ratio")],
        source=value.source,
    )


def paper_records(results: PaperResults) -> list[Record]:
    return [paper_record(value, results.retrieved) for value in results.values]


def write_records(records: Iterable[Record], out: Path) -> tuple[list[Path], list[Path]]:
    """Save each record atomically into the result folder ``out``; return (new or changed, unchanged) paths."""
    store = ResultStore(out)
    written, unchanged = [], []
    for record in records:
        existing = store.find(record.config_hash)
        if existing is not None and existing.to_json() == record.to_json():
            unchanged.append(store.path_for(record))
            continue
        written.append(store.save(record))
    return written, unchanged


def stale_paper_records(records: Sequence[Record], out: Path) -> list[Path]:
    """Paper records in ``out`` for a (method, variant, task) of ``records`` that none of them is: an old value."""
    made = {record.config_hash for record in records}
    keys = {(record.method, record.variant, record.task) for record in records}
    store = ResultStore(out)
    stale = []
    for config_hash, path in store.record_paths().items():
        if config_hash in made:
            continue
        record = store.find(config_hash)
        if record and record.source.startswith("paper:") and (record.method, record.variant, record.task) in keys:
            stale.append(path)
    return stale


# ---------------------------------------------------------------- command


def add_command(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser(
        "paper-records", help="write records of the values papers report, from a paper-results YAML file"
    )
    command.add_argument("file", type=Path, metavar="FILE", help="e.g. suites/binarization/paper_results.yaml")
    command.add_argument("--out", type=Path, required=True, help="result folder to write the records into")
    command.add_argument("--skip-unregistered", action="store_true",
                         help="leave out (and list) entries of methods not registered, instead of failing")  # fmt: skip
    command.add_argument("--check", action="store_true", help="validate the file and write nothing")
    command.set_defaults(handler=command_paper_records)


def command_paper_records(args: argparse.Namespace) -> int:
    results = load_paper_results(args.file, args.skip_unregistered)
    records = paper_records(results)
    for value in results.skipped:
        print(f"skipped {value.method} on {value.task} ({value.backbone}): method not registered")
    if args.check:
        print(f"{args.file}: {len(records)} valid entries; nothing written (--check)")
        return 0
    written, unchanged = write_records(records, args.out)
    for record in records:
        print(f"{record.method:<12} {record.variant or '-':<22} {record.task:<10} top1 {record.metrics[0].value:.4f}  "
              f"{record.source}")  # fmt: skip
    print(f"{len(written)} record(s) written, {len(unchanged)} unchanged, in {args.out}")
    for path in stale_paper_records(records, args.out):
        print(f"warning: {path} is a paper record of the same run that {args.file} no longer gives; delete it "
              "if the entry was corrected")  # fmt: skip
    return 0
