"""Records: one JSON file per run, written atomically, and the store that holds them.

A record file holds the run's fields once and its metrics as a list; :func:`tidy_rows` expands it into
one row per metric carrying every field, which is what the leaderboard loads. Schema (``effbench.record/2``):

    {"schema": "effbench.record/2", "run_id": str, "config_hash": str, "training_hash": str,
     "config": {...}, "method": str, "variant": str, "deployable": str, "suite": str, "task": str, "track": str,
     "seed": int, "budget": str, "division": str,
     "hardware": {"cpu", "cpu_threads", "gpu", "platform"},
     "versions": {"python", "effbench", "tensorflow", "tf_keras", "tfmot", "larq", ...},
     "git_commit": str, "timestamp": ISO-8601 UTC, "curves": {name: [float, ...]},
     "metrics": [{"metric": str, "value": number|str, "unit": str, "scope": str}, ...],
     "files": {name: {"path": relative to the result folder, "bytes": int, "sha256": str}},
     "source": "measured" | "sandbox" | "verified" | "paper: <citation>", "content_hash": str}

``content_hash`` covers every other field; a record whose content no longer matches it was edited by
hand and is refused when read. ``source`` says how the numbers were obtained (:func:`provenance`): by
EffBench on its own methods (``measured``), by EffBench's tracks on submitted code inside the sandbox
(``sandbox``), by a process that never ran submitted code, from a submission's artifacts (``verified``), or
reported by a paper or a submitter (``paper: ...``, self-reported).

**Reading is strict** (:func:`read_record`, and through it every command and the leaderboard): a record is
refused, with its file and field named, when it is not a regular file inside its result folder (a FIFO, a
device, a symbolic link leading out), is over ``MAX_RECORD_BYTES``, is nested deeper than ``MAX_DEPTH``, lacks
its ``content_hash`` or any field, has a field of another type or an unknown one, a value outside its unit's
range (:func:`check_value`: a ratio such as ``top1`` in [0, 1], counts and times >= 0, text only for unit
``text``, every number finite and bounded), a metric twice, malformed ``curves`` or ``files``, or a file
path other than the one the store gives it (``files/<task>/<method>/<config hash>/<name>``): so a record
can never name a file outside its folder. ``save`` applies the same checks before writing.

``deployable`` names what of the training was measured: ``""`` for the
method's main model, else one of its named deployables (a sub-network, a converted variant); the config
then says so too, and its trainings' upstreams are ``config.upstream`` (role -> training hash).

Records of schema ``effbench.record/1`` (written before deployables) still load: their ``deployable`` is
``""``, and their content hash is checked against the fields they were written with.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from effbench.hashing import stable_hash
from effbench.track import Metric, MetricError

SCHEMA = "effbench.record/2"
# Older schemas that still load; what each lacks is filled with its default when read.
READABLE_SCHEMAS = (SCHEMA, "effbench.record/1")
TEMP_PREFIX = ".tmp-"

# How a record's numbers were obtained (its ``source``); see :func:`provenance`.
MEASURED = "measured"
SANDBOX = "sandbox"
VERIFIED = "verified"
PAPER_PREFIX = "paper:"

# A record is a few KiB (75 KiB for MobileNetV2's per-layer complexity); anything near this is not one.
MAX_RECORD_BYTES = 16 * 2**20
# Records nest four levels (config.recipe.options); JSON nested deeper than this is refused.
MAX_DEPTH = 32
MAX_TEXT = 10_000
MAX_CURVE_POINTS = 100_000
# Seeds are what NumPy and TensorFlow take: integers in [0, 2**32).
SEED_LIMIT = 2**32
# Temporary files and folders older than this are leftovers of a killed process (see ResultStore.clean).
STALE_SECONDS = 3600

# Names that end up in paths (the store's folders) or in columns: slugs and hashes, never a path.
SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
METRIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SHA256 = re.compile(r"[0-9a-f]{64}")

# Ratios that are fractions of something (a share of test examples, of weights), so within [0, 1].
FRACTIONS = ("top1", "top5", "*_top1", "top1_mean", "top1_min", "top1_max", "top1_std", "ece", "agreement",
             "sparsity", "target_accuracy")  # fmt: skip
# Unit -> (lowest, highest) value; other units get +-MAX_MAGNITUDE. Other ratios (top1_relative, a
# relative drop, a coefficient of variation) may leave [0, 1], but not by orders of magnitude.
UNIT_RANGES: dict[str, tuple[float, float]] = {
    "ratio": (-1e6, 1e6), "bool": (0, 1), "count": (0, 1e18), "bit": (0, 1e18), "byte": (0, 1e18),
    "epoch": (0, 1e9), "ms": (0, 1e12), "s": (0, 1e12), "samples/s": (0, 1e15), "nat": (0, 1e9), "MB": (0, 1e12),
}  # fmt: skip
MAX_MAGNITUDE = 1e18


class RecordError(ValueError):
    """A record file that cannot be read or trusted; the message names the file and the field."""


class RecordConflict(UserWarning):
    """Two folders hold different records of one run: the first is used, and neither averaged with the other."""


def provenance(source: str) -> str:
    """How numbers of this ``source`` were obtained, in words the leaderboard shows.

    ``ours``: EffBench measured one of its own methods. ``verified``: measured by a process that never
    ran submitted code, from the files a submission produced (a flatbuffer is data, not code).
    ``sandbox``: EffBench's tracks measured submitted code inside the sandbox, so the code could have
    influenced them. ``self-reported``: a value a paper or a submitter reports.
    """
    if source == MEASURED:
        return "ours"
    if source in (SANDBOX, VERIFIED):
        return source
    return "self-reported"


@dataclass
class Record:
    run_id: str
    config_hash: str
    training_hash: str
    config: dict[str, Any]
    method: str
    variant: str
    suite: str
    task: str
    track: str
    seed: int
    budget: str
    division: str
    hardware: dict[str, Any]
    versions: dict[str, str]
    git_commit: str
    timestamp: str
    metrics: list[Metric]
    curves: dict[str, list[float]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How the numbers were obtained (see provenance): "measured" for EffBench's own methods; "sandbox" and
    # "verified" for a submission's; "paper: <citation>" for values a paper reports, shown beside ours and marked.
    source: str = MEASURED
    # The deployable measured: "" for the artifact's main model, else its name ("width=0.5", "int8").
    deployable: str = ""
    # What the method is, as declared when it was measured (summary, kind, paper, taxonomy: see
    # effbench.registry.method_about), and for a submission's runs who submitted it (team, licence, paper):
    # so a record read where the method is not registered still says what it measured.
    about: dict[str, Any] = field(default_factory=dict)
    # What the method decided for the deployable measured (effbench.method.Deployable.facts): a mixed-precision
    # method's per-layer bit widths, a quantizer's calibration data.
    facts: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        # Shallow on purpose (no dataclasses.asdict deep copy): it is built for every record read.
        body: dict[str, Any] = {"schema": SCHEMA}
        body.update((f.name, getattr(self, f.name)) for f in fields(self))
        for optional in ("about", "facts"):
            if not body[optional]:
                del body[optional]  # records written before the field keep their content hash
        body["metrics"] = [
            {"metric": m.name, "value": m.value, "unit": m.unit, "scope": m.scope} for m in self.metrics
        ]
        return body

    def to_json(self) -> dict[str, Any]:
        body = self.body()
        return {**body, "content_hash": content_hash(body)}

    @classmethod
    def from_json(cls, data: Any, source: str) -> "Record":
        """The record ``data`` holds, after every check of the module docstring; ``source`` names the file."""
        if not isinstance(data, dict):
            raise RecordError(f"{source}: expected a JSON object, found {type(data).__name__}")
        if data.get("schema") not in READABLE_SCHEMAS:
            expected = " or ".join(f"'{schema}'" for schema in READABLE_SCHEMAS)
            raise RecordError(f"{source}: field 'schema' is {data.get('schema')!r}, expected {expected}")
        unknown = sorted(set(data) - KNOWN_FIELDS)
        if unknown:
            known = ", ".join(sorted(KNOWN_FIELDS))
            raise RecordError(f"{source}: unknown field '{unknown[0]}' (a record has {known})")
        stored = data.get("content_hash")
        if not isinstance(stored, str):
            raise RecordError(
                f"{source}: field 'content_hash' is missing or not a string: every record EffBench writes has one, "
                "so this file was written or edited by hand"
            )
        values = {name: _field(data, name, kind, source) for name, kind in RECORD_FIELDS.items()}
        values.update({name: data.get(name, default) for name, default in OPTIONAL_FIELDS.items()})
        _check_fields(values, source)
        values["metrics"] = _metrics_from_json(data["metrics"], source)
        record = cls(**values)
        # An older record's hash covers the fields it was written with, not the ones it gains when read.
        written = record.body() if data["schema"] == SCHEMA else data
        if stored != content_hash(written):
            raise RecordError(
                f"{source}: its content does not match its content_hash: the file was edited by hand "
                "after EffBench wrote it; re-run the measurement instead of editing records"
            )
        return record


def content_hash(body: dict[str, Any]) -> str:
    """Hash of everything in a record; written with it, so a later hand edit is detected on reading."""
    return stable_hash({key: value for key, value in body.items() if key != "content_hash"})


RECORD_FIELDS: dict[str, type] = {
    "run_id": str, "config_hash": str, "training_hash": str, "config": dict, "method": str,
    "variant": str, "suite": str, "task": str, "track": str, "seed": int, "budget": str,
    "division": str, "hardware": dict, "versions": dict, "git_commit": str, "timestamp": str,
    "metrics": list,
}  # fmt: skip
OPTIONAL_FIELDS: dict[str, Any] = {
    "curves": {}, "files": {}, "source": MEASURED, "deployable": "", "about": {}, "facts": {},
}  # fmt: skip
KNOWN_FIELDS = {"schema", "content_hash", *RECORD_FIELDS, *OPTIONAL_FIELDS}
# Fields whose values become folder names of the store, or that must be short names.
SLUG_FIELDS = ("method", "suite", "task", "track", "budget", "division")
TOKEN_FIELDS = ("config_hash", "training_hash")


def _field(data: dict[str, Any], name: str, kind: type, source: str) -> Any:
    if name not in data:
        raise RecordError(f"{source}: missing field '{name}'")
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"{source}: field '{name}' is {type(value).__name__}, expected {kind.__name__}")
    return value


def _check_fields(values: dict[str, Any], source: str) -> None:
    """Everything but the metrics: names, ranges, and the shapes of the nested fields."""
    for name in SLUG_FIELDS:
        if not SLUG.fullmatch(values[name]):
            raise RecordError(f"{source}: field '{name}' is {_shown(values[name])}, expected a slug (not a path)")
    for name in TOKEN_FIELDS:
        if not TOKEN.fullmatch(values[name]):
            raise RecordError(f"{source}: field '{name}' is {_shown(values[name])}, expected a hash")
    if not 0 <= values["seed"] < SEED_LIMIT:
        raise RecordError(f"{source}: field 'seed' is {values['seed']}, expected an integer in [0, 2**32)")
    for name in ("run_id", "variant", "git_commit", "timestamp", "source", "deployable"):
        if not isinstance(values[name], str) or len(values[name]) > MAX_TEXT:
            raise RecordError(f"{source}: field '{name}' is {_shown(values[name])}, expected a string")
    if values["source"] not in (MEASURED, SANDBOX, VERIFIED) and not values["source"].startswith(PAPER_PREFIX):
        raise RecordError(f"{source}: field 'source' is {_shown(values['source'])}, expected "
                          f"'{MEASURED}', '{SANDBOX}', '{VERIFIED}' or '{PAPER_PREFIX} <citation>'")  # fmt: skip
    _check_scalars(values["hardware"], "hardware", source, (str, int, float))
    _check_scalars(values["versions"], "versions", source, (str,))
    _check_curves(values["curves"], source)
    _check_files(values, source)
    _check_json(values["about"], "about", source)
    _check_json(values["facts"], "facts", source)


def _check_scalars(mapping: dict[str, Any], name: str, source: str, kinds: tuple[type, ...]) -> None:
    for key, value in mapping.items():
        if isinstance(value, bool) or not isinstance(value, kinds) or _non_finite(value):
            raise RecordError(f"{source}: field '{name}.{key}' is {_shown(value)}, expected "
                              f"{' or '.join(kind.__name__ for kind in kinds)}")  # fmt: skip


def _check_curves(curves: Any, source: str) -> None:
    if not isinstance(curves, dict):
        raise RecordError(f"{source}: field 'curves' is {type(curves).__name__}, expected an object of lists")
    for name, values in curves.items():
        if not METRIC_NAME.fullmatch(name):
            raise RecordError(f"{source}: field 'curves': curve name {_shown(name)} is not a metric name")
        if not isinstance(values, list) or len(values) > MAX_CURVE_POINTS:
            raise RecordError(f"{source}: field 'curves.{name}' is {_shown(values)}, expected a list of numbers")
        for index, value in enumerate(values):
            if not _is_number(value) or _non_finite(value) or abs(value) > MAX_MAGNITUDE:
                raise RecordError(f"{source}: field 'curves.{name}[{index}]' is {_shown(value)}, "
                                  "expected a finite number")  # fmt: skip


def _check_json(value: Any, name: str, source: str) -> None:
    """``about`` and ``facts`` are objects of plain JSON: objects with short keys, lists, short texts, numbers."""
    if "." not in name and "[" not in name and not isinstance(value, dict):
        raise RecordError(f"{source}: field '{name}' is {_shown(value)}, expected an object")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > 128:
                raise RecordError(f"{source}: field '{name}' has key {_shown(key)}, expected a short string")
            _check_json(item, f"{name}.{key}", source)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{name}[{index}]", source)
    elif not isinstance(value, str | int | float | bool | None) or _non_finite(value) or (
        isinstance(value, str) and len(value) > MAX_TEXT
    ):
        raise RecordError(f"{source}: field '{name}' is {_shown(value)}, expected text, a number or a list")


def _check_files(values: dict[str, Any], source: str) -> None:
    files = values["files"]
    if not isinstance(files, dict):
        raise RecordError(f"{source}: field 'files' is {type(files).__name__}, expected an object")
    for name, spec in files.items():
        where = f"{source}: field 'files.{name}'"
        if not all(FILE_NAME.fullmatch(part) and part not in (".", "..") for part in name.split("/")):
            raise RecordError(f"{where}: the name is not a relative file name of letters, digits, '.', '_', '-'")
        if not isinstance(spec, dict) or set(spec) != {"path", "bytes", "sha256"}:
            raise RecordError(f"{where}: expected an object with exactly 'path', 'bytes' and 'sha256'")
        expected = files_path(values["task"], values["method"], values["config_hash"], name)
        if spec["path"] != expected:
            raise RecordError(f"{where}.path is {_shown(spec['path'])}; a record's files lie in its own files "
                              f"folder: expected '{expected}'")  # fmt: skip
        if not isinstance(spec["bytes"], int) or isinstance(spec["bytes"], bool) or spec["bytes"] < 0:
            raise RecordError(f"{where}.bytes is {_shown(spec['bytes'])}, expected an integer >= 0")
        if not isinstance(spec["sha256"], str) or not SHA256.fullmatch(spec["sha256"]):
            raise RecordError(f"{where}.sha256 is {_shown(spec['sha256'])}, expected 64 hexadecimal digits")


def files_path(task: str, method: str, config_hash: str, name: str) -> str:
    """Where a run keeps a file, relative to its result folder (``ResultStore.files_dir``)."""
    return f"files/{task}/{method}/{config_hash}/{name}"


def _metrics_from_json(items: list[Any], source: str) -> list[Metric]:
    metrics, seen = [], set()
    for index, item in enumerate(items):
        where = f"{source}: metrics[{index}]"
        if not isinstance(item, dict) or not {"metric", "value", "unit"} <= set(item) <= METRIC_KEYS:
            raise RecordError(f"{where}: expected an object with 'metric', 'value', 'unit' and 'scope'")
        for key in ("metric", "unit", "scope"):
            if not isinstance(item.get(key, ""), str):
                raise RecordError(f"{where}.{key} is {_shown(item[key])}, expected a string")
        try:
            metric = Metric(item["metric"], item["value"], item["unit"], item.get("scope", ""))
        except MetricError as error:
            raise RecordError(f"{where}: {error}") from None
        problem = check_value(metric)
        if problem:
            raise RecordError(f"{where}: {problem}")
        if (metric.scope, metric.name) in seen:
            raise RecordError(f"{where}: metric '{metric.name}'{_scope(metric)} is given twice")
        seen.add((metric.scope, metric.name))
        metrics.append(metric)
    return metrics


METRIC_KEYS = {"metric", "value", "unit", "scope"}


def check_value(metric: Metric) -> str | None:
    """Why ``metric`` cannot be a recorded value (wrong name, type or range for its unit), or None."""
    label = f"metric {_shown(metric.name)}{_scope(metric)}"
    if not METRIC_NAME.fullmatch(metric.name) or len(metric.unit) > 32 or len(metric.scope) > 256:
        return f"{label}: its name, unit or scope is not a short name"
    if metric.unit == "text":
        if not isinstance(metric.value, str) or len(metric.value) > MAX_TEXT:
            return f"{label}: value {_shown(metric.value)} of unit 'text' must be a string of <= {MAX_TEXT} characters"
        return None
    if not _is_number(metric.value):
        return f"{label}: value {_shown(metric.value)} must be a number for unit '{metric.unit}'"
    low, high = UNIT_RANGES.get(metric.unit, (-MAX_MAGNITUDE, MAX_MAGNITUDE))
    if metric.unit == "ratio" and any(fnmatch.fnmatchcase(metric.name, pattern) for pattern in FRACTIONS):
        low, high = 0.0, 1.0
    if not low <= metric.value <= high:
        return f"{label}: value {metric.value!r} is outside [{low:g}, {high:g}], the range of unit '{metric.unit}'"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _scope(metric: Metric) -> str:
    return f" (scope '{metric.scope}')" if metric.scope else ""


def _shown(value: Any) -> str:
    """A value in a message: its type, and the start of its text."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def tidy_rows(record: Record) -> Iterator[dict[str, Any]]:
    """One flat dict per metric, with the run's fields, hardware and versions as columns."""
    shared = {
        name: getattr(record, name)
        for name in ("run_id", "config_hash", "training_hash", "method", "variant", "deployable", "suite", "task",
                     "track", "seed", "budget", "division", "git_commit", "timestamp", "source")
    }  # fmt: skip
    shared.update({f"hw_{key}": value for key, value in record.hardware.items()})
    shared.update({f"v_{key}": value for key, value in record.versions.items()})
    for metric in record.metrics:
        yield {**shared, "metric": metric.name, "value": metric.value, "unit": metric.unit, "scope": metric.scope}


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename it into place.

    A process killed at any point leaves either the old file or the complete new one, never half a
    file; readers ignore the ``.tmp-`` leftovers, and :meth:`ResultStore.clean` removes them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n"
    handle, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=path.parent)
    try:
        # mkstemp makes owner-only files; records are shared, so give them the usual read bits.
        os.fchmod(handle, 0o644)
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def describe_files(files: Mapping[str, bytes], final: Path, root: Path) -> dict[str, dict[str, Any]]:
    """A record's ``files``: name -> path, size and SHA-256.

    The path is where the file will be (in the run's files folder ``final``), relative to the result
    folder ``root``.
    """
    return {
        name: {
            "path": (final / name).relative_to(root).as_posix(),
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        for name, content in files.items()
    }


# ---------------------------------------------------------------------------------- reading files


def read_record(path: Path, root: Path | None = None) -> Record:
    """The record in ``path``, after every check of the module docstring.

    ``root``, the result folder the file belongs to: a symbolic link must resolve inside it.
    """
    data = read_json_file(path, root, MAX_RECORD_BYTES, "record")
    return Record.from_json(data, str(path))


def read_json_file(path: Path, root: Path | None, limit: int, what: str) -> Any:
    """Parsed JSON of a regular file of at most ``limit`` bytes, nested at most ``MAX_DEPTH`` deep.

    Opened without blocking (a FIFO named ``*.json`` would otherwise hang the reader) and checked on the
    open descriptor, so a file swapped for something else after a check is still refused.
    """
    content = read_regular_file(path, root, limit, what)
    try:
        data = json.loads(content, parse_constant=_reject_constant)
    except RecursionError:
        raise RecordError(f"{path}: cannot read the {what}: JSON nested more than {MAX_DEPTH} levels deep") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecordError) as error:
        raise RecordError(f"{path}: cannot read the {what}: {error}") from None
    if nesting_depth(data) > MAX_DEPTH:
        raise RecordError(f"{path}: cannot read the {what}: JSON nested more than {MAX_DEPTH} levels deep")
    return data


def read_regular_file(path: Path, root: Path | None, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refused (naming it) unless it is a regular file inside ``root`` of <= ``limit`` bytes."""
    if root is not None:
        check_inside(path, root, what)
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise RecordError(f"{path}: cannot read the {what}: {error.strerror}") from None
    with os.fdopen(handle, "rb") as stream:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise RecordError(f"{path}: not a regular file (a folder, FIFO, socket or device): not a {what}")
        if info.st_size > limit:
            raise RecordError(f"{path}: {info.st_size} bytes, over the limit of {limit} bytes for a {what}")
        content = stream.read(limit + 1)
    if len(content) > limit:
        raise RecordError(f"{path}: over the limit of {limit} bytes for a {what}")
    return content


def check_inside(path: Path, root: Path, what: str = "file") -> Path:
    """``path`` resolved; refused when it (through symbolic links or ``..``) leads outside ``root``."""
    resolved, top = Path(path).resolve(), Path(root).resolve()
    if not resolved.is_relative_to(top):
        raise RecordError(f"{path}: the {what} leads to {resolved}, outside its result folder {top}")
    return resolved


def nesting_depth(value: Any) -> int:
    """How deep lists and objects nest in parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _reject_constant(name: str) -> float:
    raise RecordError(f"non-finite number {name} is not allowed in a record")


# ------------------------------------------------------------------------------ many folders at once


@dataclass(frozen=True)
class Found:
    """A valid record and the file and result folder it was read from."""

    record: Record
    path: Path
    root: Path


def conflict_message(first: Found, second: Found) -> str:
    """Two records of one config hash that differ: named with both files and the fields that differ."""
    a, b = first.record.to_json(), second.record.to_json()
    # An optional field (about, facts) is left out of a record's JSON where it is empty, so either may lack it.
    keys = (a.keys() | b.keys()) - {"content_hash"}
    differing = ", ".join(sorted(key for key in keys if a.get(key) != b.get(key)))
    return (
        f"{first.path} and {second.path} are records of the same run (config hash "
        f"{first.record.config_hash}) that differ in: {differing}"
    )


def collect_records(roots: Sequence[Path]) -> tuple[dict[str, Found], list[str]]:
    """Config hash -> the valid record of the first folder that has it, and a message per conflict.

    Every record of every folder is read (a bad one raises :class:`RecordError`); identical copies of a
    record in several folders are one record; copies that differ are a conflict, never averaged.
    """
    chosen: dict[str, Found] = {}
    conflicts = []
    for root in roots:
        store = ResultStore(root)
        for path, record in store.read_all():
            found = Found(record, path, store.root)
            earlier = chosen.setdefault(record.config_hash, found)
            if earlier is not found and earlier.record.to_json() != record.to_json():
                conflicts.append(conflict_message(earlier, found))
    return chosen, conflicts


# ---------------------------------------------------------------------------------------- the store


class ResultStore:
    """Records under ``root/records/<task>/<method>/<track>-s<seed>-<budget>-<config hash>.json``.

    Trained models are cached under ``root/artifacts/<training hash>/`` so that tracks measured in a
    later invocation use the same model instead of retraining.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._paths: dict[str, Path] | None = None
        # Config hash -> every further file named with it (a hand-made copy): reading reports them.
        self._duplicates: dict[str, list[Path]] = {}

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    def artifact_dir(self, training_hash: str) -> Path:
        return self.root / "artifacts" / training_hash

    def files_dir(self, task: str, method: str, config_hash: str) -> Path:
        """Files a run keeps beside its record, such as converted ``.tflite`` models."""
        return self.root / "files" / task / method / config_hash

    def _index(self) -> dict[str, Path]:
        if self._paths is None:
            self._paths, self._duplicates = {}, {}
            for path in sorted(self.records_dir.rglob("*.json")):
                if path.name.startswith(TEMP_PREFIX):
                    continue
                config_hash = path.stem.rsplit("-", 1)[-1]
                if config_hash in self._paths:
                    self._duplicates.setdefault(config_hash, []).append(path)
                else:
                    self._paths[config_hash] = path
        return self._paths

    def has(self, config_hash: str) -> bool:
        return config_hash in self._index()

    def find(self, config_hash: str) -> Record | None:
        path = self._index().get(config_hash)
        return self.read(path) if path else None

    def read(self, path: Path) -> Record:
        """The record in ``path`` (strictly, :func:`read_record`), which must be named with its config hash."""
        record = read_record(path, self.root)
        if path.stem.rsplit("-", 1)[-1] != record.config_hash:
            raise RecordError(f"{path}: holds the record of config hash {record.config_hash}, but is named for "
                              f"another; the store names each record file with its config hash")  # fmt: skip
        return record

    def path_for(self, record: Record) -> Path:
        return self.path_of(record.task, record.method, record.track, record.seed, record.budget, record.config_hash)

    def path_of(self, task: str, method: str, track: str, seed: int, budget: str, config_hash: str) -> Path:
        """The file of the record with these fields."""
        return self.records_dir / task / method / f"{track}-s{seed}-{budget}-{config_hash}.json"

    def save(self, record: Record) -> Path:
        path = self.path_for(record)
        payload = checked_json(record, str(path))
        write_json_atomically(path, payload)
        self._index()[record.config_hash] = path
        return path

    def save_with_files(self, record: Record, files: Mapping[str, bytes]) -> Path:
        """Write the files a run keeps (name -> content) into its files folder, then its record.

        Crash-safe and safe against another process saving the same run: under a lock on the run, the
        files go to a staging folder of a unique name; an older record of the run is removed first (so
        from then until the new record is written the run counts as not done, and a re-run redoes it);
        the old files folder is renamed aside, the staging folder renamed into place, then the record
        written. A process killed at any point leaves the old record with its old files, or no record,
        or the new record with its new files; never a record without its files.
        """
        checked_json(record, str(self.path_for(record)))
        if not files:
            return self.save(record)
        final = self.files_dir(record.task, record.method, record.config_hash)
        with self.lock(record.config_hash):
            staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{record.config_hash}-", dir=_made(final.parent)))
            aside = final.with_name(f"{TEMP_PREFIX}old-{record.config_hash}-{uuid.uuid4().hex[:8]}")
            try:
                os.chmod(staging, 0o755)
                for name, content in files.items():
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    (staging / name).write_bytes(content)
                self.path_for(record).unlink(missing_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    final.rename(aside)
                staging.rename(final)
                return self.save(record)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                shutil.rmtree(aside, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """An exclusive lock on ``key`` across processes (``flock``: released when the holder dies)."""
        path = _made(self.root / ".locks") / f"{key}.lock"
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def clean(self, older_than: float = STALE_SECONDS) -> list[Path]:
        """Remove the temporary files and folders (``.tmp-*``) that killed processes left; return them.

        Only those not modified for ``older_than`` seconds: a live writer renames its temporary within
        moments, so an old one belongs to nobody.
        """
        removed = []
        now = time.time()
        for folder in (self.records_dir, self.root / "files", self.root / "artifacts"):
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob(f"{TEMP_PREFIX}*"), reverse=True):
                try:
                    if now - path.lstat().st_mtime < older_than:
                        continue
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
        return removed

    def record_paths(self) -> dict[str, Path]:
        """Config hash -> record file, for every record in the folder."""
        return dict(self._index())

    def read_all(self) -> list[tuple[Path, Record]]:
        """(file, record) of every record in the folder, strictly read.

        Two files of one config hash are the same record copied (kept once) or a conflict, refused with
        both files named.
        """
        found = [(path, self.read(path)) for path in self._index().values()]
        by_hash = {record.config_hash: (path, record) for path, record in found}
        for config_hash, copies in self._duplicates.items():
            first = Found(by_hash[config_hash][1], by_hash[config_hash][0], self.root)
            for copy in copies:
                other = Found(self.read(copy), copy, self.root)
                if other.record.to_json() != first.record.to_json():
                    raise RecordError(conflict_message(first, other) + "; keep one of them (delete the other)")
        return found

    def records(self) -> list[Record]:
        return [record for _, record in self.read_all()]


def checked_json(record: Record, where: str) -> dict[str, Any]:
    """The record's JSON, refused (as a :class:`MetricError`, a measurement that cannot be recorded) when
    reading it back would refuse it: nothing is written that the store would not read."""
    for name, values in record.curves.items():
        if not all(_is_number(v) and math.isfinite(v) for v in values):
            raise MetricError(f"training curve '{name}' of run {record.run_id} has non-finite values")
    payload = record.to_json()
    try:
        Record.from_json(payload, where)
    except RecordError as error:
        raise MetricError(f"run {record.run_id} cannot be recorded: {error}") from None
    return payload


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
