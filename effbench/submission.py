"""``effbench submit FOLDER``: validate a submission folder, then run it into ``FOLDER/results``.

A submission is a folder (``submissions/<slug>/`` in this repository)::

    submission.yaml     who submits what, and where to run it (fields below)
    method.py           optional: the submission's own methods, registered as the suites register theirs
    results/records/    written by ``effbench submit``: one JSON record per run (commit these)
    results/artifacts/  trained models, results/files/: converted .tflite files (not committed)

``submission.yaml`` (safe YAML: plain mappings, lists, strings and numbers; no anchors or aliases)::

    team: Binary Lab                         # non-empty string
    contact: lab@example.org                 # an e-mail address
    methods: [tanh-ste-sign]                 # method references: built-in or registered by method.py
    paper: {title: "...", year: 2025, url: https://...}
    licence: MIT                             # an SPDX identifier or expression (Apache-2.0, MIT OR BSD-3-Clause)
    division: closed                         # closed | open
    tasks: [digits, mnist1d]                 # task slugs
    seeds: [0]                               # integers in [0, 2**32)
    tracks: [accuracy, complexity]           # optional; default: every track but sensitivity and edge-lce
    budget: quick                            # optional; smoke | quick | paper (default quick)
    open_tags: [custom-backbone]             # open division only, and required there: what differs

The default tracks leave out ``sensitivity``, which retrains every run eight times, and ``edge-lce``, a subset
of ``edge`` (its float32 and lce variants); name them to run them.
The **closed** division compares methods under their suite's protocol (:mod:`effbench.protocol`): a
method the protocol's closed division does not take (a binarization method that is not an operator, a
subclass of ``suites.binarization.operators.OperatorMethod``), or options it fixes (an operator's
``backbone``), are refused, by the rule that gives ``effbench run`` and ``effbench paper-records`` their
divisions (:func:`effbench.protocol.division_of`). The **open** division takes any method and options;
``open_tags`` say how it departs.

Everything is validated before anything is written (``--check`` stops there and prints a summary), and each
error names the file, the field and what was expected:

- the folder: no symbolic link under it may point outside it (results are written there, and files are
  read from there); ``submission.yaml`` and ``method.py`` must be regular files, at most 64 KiB and 1 MiB.
  The YAML has no path fields: the two files and ``results/`` sit at fixed places in the folder.
- ``submission.yaml``: valid YAML, no anchors or aliases (a few lines of aliases can expand to gigabytes:
  the "billion laughs" bomb), nesting at most 16 deep, no duplicate keys, no unknown fields, every field of
  the right type; slugs must be slugs (so no field can hold a path); tasks, tracks and methods must exist.
- ``method.py``: **never imported by this process**: the check and the run import it in a sandboxed child
  (:mod:`effbench.untrusted`, :mod:`effbench.sandbox`), under a unique module name and writing no bytecode;
  an import error (``KeyboardInterrupt`` and ``SystemExit`` too) is shown with its traceback; a slug that is
  already registered (a built-in method's, say) is the registry's duplicate error. A folder without a
  method.py names built-in methods only, and runs in this process as ``effbench run`` would.
- ``results/records``: records the runner wrote earlier (re-running resumes from them). A record whose
  content no longer matches its ``content_hash``, whose ``config_hash`` is not the hash of its config, that
  holds a NaN or infinite value, or whose method, task or division the YAML does not declare is an error.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import json
import math
import os
import re
import stat
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from effbench.config import DIVISIONS, TrainingConfig
from effbench.hashing import stable_hash
from effbench.method import MethodRef
from effbench.protocol import DivisionError, division_of
from effbench.recipe import BUDGETS
from effbench.records import (
    MAX_RECORD_BYTES,
    SEED_LIMIT,
    TEMP_PREFIX,
    Record,
    RecordError,
    ResultStore,
    read_regular_file,
)
from effbench.registry import METHODS, SLUG_PATTERN, TASKS, TRACKS, Paper, RegistryError, load_builtin_entries
from effbench.runner import Job, execute_plan, make_plan, report_failures
from effbench.strict_yaml import found, load_mapping

YAML_NAME = "submission.yaml"
METHOD_FILE = "method.py"
RESULTS_DIR = "results"
YAML_LIMIT = 64 * 1024
METHOD_LIMIT = 1024 * 1024
# Left out of the default tracks: sensitivity retrains each run under eight recipes; edge-lce measures a
# subset of what edge does.
COSTLY_TRACKS = ("sensitivity", "edge-lce")
DEFAULT_BUDGET = "quick"
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
SPDX_ID = r"[A-Za-z0-9][A-Za-z0-9.+-]*"
SPDX = re.compile(rf"{SPDX_ID}( (AND|OR|WITH) {SPDX_ID})*")


class SubmissionError(ValueError):
    """An invalid submission; the message lists every problem, each naming its file and field."""


class FieldError(Exception):
    """One field's value is wrong; ``where`` is appended to the field's name (``[2]``, ``.year``)."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class Submission:
    """A validated submission: its folder (resolved) and the fields of its YAML, defaults filled in."""

    folder: Path
    team: str
    contact: str
    methods: tuple[MethodRef, ...]
    paper: Paper
    licence: str
    division: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    tracks: tuple[str, ...]
    budget: str
    open_tags: tuple[str, ...]
    # Slugs that method.py registered.
    local_methods: tuple[str, ...] = ()

    @property
    def results_dir(self) -> Path:
        return self.folder / RESULTS_DIR


def problem(path: Path, field: str, message: str) -> str:
    return f"{path}: field '{field}': {message}"


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise SubmissionError("invalid submission:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------- the folder and its files


def check_folder(folder: Path) -> Path:
    """The folder, resolved, after checking that no symbolic link under it leads outside it."""
    if not folder.is_dir():
        raise SubmissionError(f"{folder}: not a folder; give the submission folder, which holds {YAML_NAME}")
    root = folder.resolve()
    problems = []
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(parent) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                problems.append(f"{path}: symbolic link to {path.resolve()}, outside the submission folder {root}")
    raise_problems(problems)
    return root


def check_regular_file(path: Path, limit: int) -> None:
    """A plain file (not a link, device or folder) of at most ``limit`` bytes."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise SubmissionError(f"{path}: missing; every submission folder has one") from None
    if not stat.S_ISREG(info.st_mode):
        raise SubmissionError(f"{path}: must be a regular file inside the submission folder, not a link or folder")
    if info.st_size > limit:
        raise SubmissionError(f"{path}: {info.st_size} bytes, over the limit of {human_size(limit)} for this file")


def human_size(size: int) -> str:
    return f"{size // 2**20} MiB" if size % 2**20 == 0 else f"{size // 2**10} KiB"


# ---------------------------------------------------------------- submission.yaml


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of ``path``, read with ``yaml.safe_load`` after the checks of the module docstring."""
    check_regular_file(path, YAML_LIMIT)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SubmissionError(f"{path}: not UTF-8 text: {error}") from None
    return load_mapping(path, text, SubmissionError, "a mapping of fields (team: ..., methods: ...)")


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f"expected a non-empty string, found {found(value)}")
    return value.strip()


def matching(pattern: re.Pattern[str], expected: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value.strip()):
            raise FieldError(f"expected {expected}, found {found(value)}")
        return value.strip()

    return check


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    return matching(re.compile("|".join(map(re.escape, choices))), f"one of {', '.join(choices)}")


slug = matching(SLUG_PATTERN, "a slug (lower-case letters, digits, '-', '_', '.'; not a path)")


def method_ref(value: Any) -> MethodRef:
    """``slug`` or ``slug:key=value,...`` as on the command line."""
    if not isinstance(value, str):
        raise FieldError(f"expected a method slug, optionally with options (slug:key=value), found {found(value)}")
    try:
        ref = MethodRef.parse(value)
    except ValueError as error:
        raise FieldError(str(error)) from None
    slug(ref.slug)
    return ref


def seed(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEED_LIMIT:
        raise FieldError(f"expected an integer seed in [0, 2**32), found {found(value)}")
    return value


def list_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    """A non-empty list without repeats, each item checked by ``item``."""

    def check(value: Any) -> tuple:
        if not isinstance(value, list) or not value:
            raise FieldError(f"expected a non-empty list, found {found(value)}")
        items = []
        for index, raw in enumerate(value):
            try:
                items.append(item(raw))
            except FieldError as error:
                raise FieldError(str(error), f"[{index}]{error.where}") from None
            if items[-1] in items[:-1]:
                raise FieldError(f"{raw!r} is listed twice", f"[{index}]")
        return tuple(items)

    return check


def paper(value: Any) -> Paper:
    if not isinstance(value, dict):
        raise FieldError(f"expected a mapping with title, year and url, found {found(value)}")
    checks = {"title": text, "year": year, "url": matching(re.compile(r"https?://\S+"), "an http(s) URL")}
    unknown = sorted(set(map(str, value)) - set(checks))
    if unknown:
        raise FieldError(f"unknown key; paper has {', '.join(checks)}", f".{unknown[0]}")
    values = {}
    for key, check in checks.items():
        if key not in value:
            raise FieldError("missing", f".{key}")
        try:
            values[key] = check(value[key])
        except FieldError as error:
            raise FieldError(str(error), f".{key}") from None
    return Paper(**values)


def year(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1900 <= value <= 2200:
        raise FieldError(f"expected a year such as 2025, found {found(value)}")
    return value


# Field -> (required, check). Optional fields left out get the values of DEFAULTS.
FIELDS: dict[str, tuple[bool, Callable[[Any], Any]]] = {
    "team": (True, text),
    "contact": (True, matching(EMAIL, "an e-mail address (name@host.domain)")),
    "methods": (True, list_of(method_ref)),
    "paper": (True, paper),
    "licence": (True, matching(SPDX, "an SPDX licence identifier or expression (MIT, Apache-2.0, ...)")),
    "division": (True, one_of(DIVISIONS)),
    "tasks": (True, list_of(slug)),
    "seeds": (True, list_of(seed)),
    "tracks": (False, list_of(slug)),
    "budget": (False, one_of(BUDGETS)),
    "open_tags": (False, list_of(text)),
}
DEFAULTS: dict[str, Any] = {"tracks": (), "budget": DEFAULT_BUDGET, "open_tags": ()}


def parse_fields(data: dict[str, Any], path: Path, folder: Path) -> Submission:
    """Every field checked for presence and type; all problems are reported together."""
    problems = []
    for key in data:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(problem(path, str(key), f"unknown field; {hint}(fields: {', '.join(FIELDS)})"))
    values = dict(DEFAULTS)
    for name, (required, check) in FIELDS.items():
        if name not in data:
            if required:
                problems.append(problem(path, name, "missing; every submission gives it"))
            continue
        try:
            values[name] = check(data[name])
        except FieldError as error:
            problems.append(problem(path, name + error.where, str(error)))
    if "division" in values:
        problems += division_tag_problems(path, values["division"], values["open_tags"])
    raise_problems(problems)
    return Submission(folder=folder, **values)


def division_tag_problems(path: Path, division: str, tags: tuple[str, ...]) -> list[str]:
    if division == "open" and not tags:
        return [problem(path, "open_tags", "required in the open division: a list saying how the entry departs "
                                           "from the closed protocol, e.g. [custom-backbone, longer-training]")]
    if division == "closed" and tags:
        return [problem(path, "open_tags", "only for the open division; remove it, or set division: open")]
    return []


# ---------------------------------------------------------------- method.py


@contextlib.contextmanager
def local_methods(folder: Path) -> Iterator[tuple[str, ...]]:
    """Import ``folder/method.py`` if there is one; yield the slugs it registered; unregister them after."""
    path = folder / METHOD_FILE
    if not os.path.lexists(path):
        yield ()
        return
    check_regular_file(path, METHOD_LIMIT)
    load_builtin_entries()  # first, so a slug that collides with a built-in one fails in method.py
    # A fresh module name per import: two submissions, or one imported twice, never share a module.
    module_name = "effbench_submission_" + re.sub(r"\W", "_", folder.name) + "_" + uuid.uuid4().hex[:8]
    before = {entry.spec.slug for entry in METHODS}
    try:
        import_file(module_name, path)
        yield tuple(sorted({entry.spec.slug for entry in METHODS} - before))
    finally:
        for slug_registered in {entry.spec.slug for entry in METHODS} - before:
            METHODS.remove(slug_registered)
        sys.modules.pop(module_name, None)


def import_file(module_name: str, path: Path) -> None:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as `import` does: dataclasses and pickling look modules up there.
    sys.modules[module_name] = module
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # validation writes nothing, not even __pycache__, into the folder
    try:
        spec.loader.exec_module(module)
    except BaseException as error:  # noqa: BLE001 - SystemExit, KeyboardInterrupt too: all are import failures
        raise SubmissionError(import_failure(path, error)) from None
    finally:
        sys.dont_write_bytecode = writes_bytecode


def import_failure(path: Path, error: BaseException) -> str:
    """The traceback from method.py down, without the frames of the import machinery and of this module."""
    frames = [
        frame for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith("<frozen") and frame.filename != __file__
    ]  # fmt: skip
    trace = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(error), error))
    hint = ""
    if isinstance(error, RegistryError):
        hint = "\n(method slugs are shared with every built-in method; `effbench list methods` shows those taken)"
    return f"{path}: importing it failed:\nTraceback (most recent call last):\n{trace.rstrip()}{hint}"


# ---------------------------------------------------------------- registry and division


def default_tracks() -> tuple[str, ...]:
    return tuple(entry.spec.slug for entry in TRACKS if entry.spec.slug not in COSTLY_TRACKS)


def registry_problems(submission: Submission, path: Path) -> list[str]:
    """Tasks, tracks and methods that do not exist, and methods the division does not allow."""
    problems = []
    for field, registry, slugs in (("tasks", TASKS, submission.tasks), ("tracks", TRACKS, submission.tracks)):
        for index, name in enumerate(slugs):
            error = registry_error(registry.get, name)
            if error is not None:
                problems.append(problem(path, f"{field}[{index}]", str(error)))
    for index, ref in enumerate(submission.methods):
        error = registry_error(ref.create)
        if error is None and submission.division == "closed":
            error = closed_division_error(ref)
        if error is not None:
            where = "" if ref.slug in METHODS else f"; neither built in nor registered by {METHOD_FILE}"
            problems.append(problem(path, f"methods[{index}]", f"{error}{where}"))
    return problems


def registry_error(call: Callable, *args: Any) -> Exception | None:
    """What ``call`` raises: a lookup of an unknown slug, or a method rejecting its options."""
    try:
        call(*args)
    except Exception as error:  # a method's own constructor may raise anything; it is reported, not fatal
        return error
    return None


def closed_division_error(ref: MethodRef) -> str | None:
    """Why ``ref`` may not be submitted to the closed division (:func:`effbench.protocol.division_of`), or None."""
    try:
        division_of(ref, "closed")
    except DivisionError as error:
        return f"{error}; use division: open"
    return None


# ---------------------------------------------------------------- results already recorded


def results_problems(submission: Submission, upstream: set[str] | None = None) -> list[str]:
    """Records in ``results/records`` that were edited, or that the YAML does not declare.

    ``upstream``: the slugs of the methods the declared ones start from or compare with; by default they are
    asked of the methods, which needs their code: a submission with a method.py gets them from the sandbox.
    """
    records_dir = submission.results_dir / "records"
    if not records_dir.is_dir():
        return []
    upstream = upstream_method_slugs(submission) if upstream is None else upstream
    methods = {ref.slug for ref in submission.methods} | upstream
    declared = {"method": methods, "task": set(submission.tasks), "division": {submission.division}}
    problems = []
    for path in sorted(records_dir.rglob("*.json")):
        if not path.name.startswith(TEMP_PREFIX):
            problems += record_problems(path, declared, submission.results_dir)
    return problems


def upstream_method_slugs(submission: Submission) -> set[str]:
    """The methods the declared ones start from or compare with (FP32 twins): their records belong here too."""
    trainings = (TrainingConfig(ref, task, 0, "smoke") for ref in submission.methods for task in submission.tasks)
    return {slug for training in trainings for slug in training.method_slugs()}


def record_problems(path: Path, declared: dict[str, set[str]], root: Path) -> list[str]:
    try:
        # Read as the store reads (a FIFO or a link out of the folder is refused, never waited on or followed).
        content = read_regular_file(path, root, MAX_RECORD_BYTES, "record")
        non_finite = list(non_finite_fields(json.loads(content, parse_constant=float)))
    except RecordError as error:
        return [str(error)]
    except (RecursionError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return [f"{path}: cannot read the record: {type(error).__name__}: {error}"[:500]]
    if non_finite:
        return [problem(path, name, "is NaN or infinite; records hold finite numbers only") for name in non_finite]
    try:
        record = ResultStore(root).read(path)
    except RecordError as error:  # names the file, and the field: content_hash, metrics[i], ...
        return [str(error)]
    problems = []
    if stable_hash(record.config) != record.config_hash:
        problems.append(problem(path, "config_hash", f"{record.config_hash} is not the hash of the record's config "
                                                     f"({stable_hash(record.config)}): the config was edited"))
    for field, allowed in declared.items():
        if getattr(record, field) not in allowed:
            problems.append(problem(path, field, f"'{getattr(record, field)}' is not declared in {YAML_NAME} "
                                                 f"(declared: {', '.join(sorted(allowed))})"))
    return problems


def non_finite_fields(value: Any, name: str = "") -> Iterator[str]:
    """JSON paths (``metrics[3].value``) of the NaN and infinite numbers in a parsed record."""
    if isinstance(value, float) and not math.isfinite(value):
        yield name
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite_fields(item, f"{name}.{key}" if name else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from non_finite_fields(item, f"{name}[{index}]")


# ---------------------------------------------------------------- the whole check


def read_submission(folder: Path, budget: str | None = None) -> Submission:
    """The folder and its YAML checked, without running any of its code; ``budget`` overrides the YAML's.

    Tracks and methods are not looked up yet (method.py may register methods, and only the sandbox runs it).
    """
    root = check_folder(folder)
    path = root / YAML_NAME
    declared = parse_fields(read_yaml(path), path, root)
    return replace(declared, budget=budget or declared.budget)


def has_method_file(submission: Submission) -> bool:
    return os.path.lexists(submission.folder / METHOD_FILE)


@contextlib.contextmanager
def open_submission(folder: Path, budget: str | None = None) -> Iterator[Submission]:
    """Validate ``folder`` (see the module docstring) and yield it, with method.py's methods registered.

    **This imports method.py into this process**: for EffBench's own example and its tests, and inside the
    sandbox. ``effbench submit`` never calls it on a folder with a method.py (:mod:`effbench.untrusted`).
    ``budget`` overrides the YAML's. Raises :class:`SubmissionError`; writes nothing.
    """
    declared = read_submission(folder, budget)
    path = declared.folder / YAML_NAME
    with local_methods(declared.folder) as registered:
        submission = replace(declared, local_methods=registered, tracks=declared.tracks or default_tracks())
        raise_problems(registry_problems(submission, path))
        raise_problems(results_problems(submission))
        yield submission


# ---------------------------------------------------------------- the command


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="validate a submission folder, then run it into FOLDER/results")
    parser.add_argument("folder", type=Path, help="the submission folder, holding submission.yaml")
    parser.add_argument("--check", action="store_true", help="only validate: print OK and a summary, write nothing")
    parser.add_argument("--budget", choices=BUDGETS, help="run at this budget instead of the submission's")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    parser.set_defaults(handler=command_submit)


class SubmissionStore(ResultStore):
    """A submission's results folder: the records of the methods it declares say who submitted them.

    Their ``about`` (what the method's registration declares) gains ``submission``: the team, licence,
    paper, division and open tags of ``submission.yaml``, which the leaderboard shows with the method.
    """

    def __init__(self, submission: Submission):
        super().__init__(submission.results_dir)
        self.declared = {ref.slug for ref in submission.methods}
        self.submission = submission_about(submission)

    def save(self, record: Record) -> Path:
        if record.method in self.declared:
            record = replace(record, about={**record.about, "submission": self.submission})
        return super().save(record)


def submission_about(submission: Submission) -> dict[str, Any]:
    paper = submission.paper
    return {"folder": submission.folder.name, "team": submission.team, "licence": submission.licence,
            "division": submission.division, "open_tags": list(submission.open_tags),
            "paper": {"title": paper.title, "year": paper.year, "url": paper.url}}  # fmt: skip


def command_submit(args: argparse.Namespace) -> int:
    """A folder with a method.py is checked and run in the sandbox (:mod:`effbench.untrusted`); one that only
    names built-in methods runs here, as ``effbench run`` would: no submitted code runs in either case here."""
    submission = read_submission(args.folder, args.budget)
    if has_method_file(submission):
        from effbench.untrusted import check_in_sandbox, run_in_sandbox

        checked = check_in_sandbox(submission)
        if args.check:
            print(summary(checked.submission, checked.kinds, checked.runs, checked.trainings))
            return 0
        return run_in_sandbox(checked)  # the sandbox's own log lines show its progress
    with open_submission(args.folder, args.budget) as submission:
        store = SubmissionStore(submission)
        jobs = make_plan(
            list(submission.methods), list(submission.tasks), list(submission.seeds), list(submission.tracks),
            submission.budget, store, submission.division,
        )  # fmt: skip
        if args.check:
            kinds = {ref.slug: METHODS.get(ref.slug).spec.kind for ref in submission.methods}
            print(summary(submission, kinds, sum(len(job.runs()) for job in jobs), len(jobs)))
            return 0
        return run_submission(store, jobs, progress=not args.quiet)


def summary(submission: Submission, kinds: dict[str, str], runs: int, trainings: int) -> str:
    """What ``submit --check`` prints; ``kinds``: slug -> kind of each declared method."""
    local = set(submission.local_methods)
    methods = [f"{ref} ({kinds[ref.slug]}{', method.py' if ref.slug in local else ''})"
               for ref in submission.methods]  # fmt: skip
    rows = {
        "team": f"{submission.team} <{submission.contact}>",
        "paper": f"{submission.paper.title} ({submission.paper.year}) {submission.paper.url}",
        "division": " ".join([submission.division, *(f"[{tag}]" for tag in submission.open_tags)]),
        "methods": ", ".join(methods),
        "tasks": ", ".join(submission.tasks),
        "seeds": ", ".join(map(str, submission.seeds)),
        "tracks": ", ".join(submission.tracks),
        "budget": submission.budget,
        "to run": f"{runs} runs in {trainings} trainings (upstreams included); results in {submission.results_dir}",
    }  # fmt: skip
    return "\n".join([f"OK: {submission.folder / YAML_NAME}", *(f"  {key:<9} {value}" for key, value in rows.items())])


def run_submission(store: ResultStore, jobs: list[Job], progress: bool = True) -> int:
    """Run the plan, print one line per record of the folder, and return 1 if any run failed.

    ``progress``: the progress line of ``effbench run`` on stderr (:mod:`effbench.progress`).
    """
    from effbench.cli import record_lines  # the table is the leaderboard's (`effbench table`), above the core

    print(f"{sum(len(job.runs()) for job in jobs)} runs to do in {len(jobs)} trainings; results in {store.root}")
    failures = [failure for result in execute_plan(jobs, store, progress=progress) for failure in result.failures]
    records = list(store.records())
    if records:
        print("\n".join(record_lines(records)))
    return report_failures(failures)
