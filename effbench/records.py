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
     "source": "measured" | "paper: <citation>", "content_hash": str}

``content_hash`` covers every other field; a record whose content no longer matches it was edited by
hand and is refused when read. ``deployable`` names what of the training was measured: ``""`` for the
method's main model, else one of its named deployables (a sub-network, a converted variant); the config
then says so too, and its trainings' upstreams are ``config.upstream`` (role -> training hash).

Records of schema ``effbench.record/1`` (written before deployables) still load: their ``deployable`` is
``""``, and their content hash is checked against the fields they were written with.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from effbench.hashing import stable_hash
from effbench.track import Metric, MetricError

SCHEMA = "effbench.record/2"
# Older schemas that still load; what each lacks is filled with its default when read.
READABLE_SCHEMAS = (SCHEMA, "effbench.record/1")
TEMP_PREFIX = ".tmp-"


class RecordError(ValueError):
    """A record file that cannot be read or trusted; the message names the file and the field."""


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
    # "measured" for numbers EffBench measured; "paper: <citation>" for values a paper reports, shown
    # beside ours and marked.
    source: str = "measured"
    # The deployable measured: "" for the artifact's main model, else its name ("width=0.5", "int8").
    deployable: str = ""

    def body(self) -> dict[str, Any]:
        # Shallow on purpose (no dataclasses.asdict deep copy): it is built for every record read.
        body: dict[str, Any] = {"schema": SCHEMA}
        body.update((f.name, getattr(self, f.name)) for f in fields(self))
        body["metrics"] = [
            {"metric": m.name, "value": m.value, "unit": m.unit, "scope": m.scope} for m in self.metrics
        ]
        return body

    def to_json(self) -> dict[str, Any]:
        body = self.body()
        return {**body, "content_hash": content_hash(body)}

    @classmethod
    def from_json(cls, data: Any, source: str) -> "Record":
        if not isinstance(data, dict):
            raise RecordError(f"{source}: expected a JSON object, found {type(data).__name__}")
        if data.get("schema") not in READABLE_SCHEMAS:
            expected = " or ".join(f"'{schema}'" for schema in READABLE_SCHEMAS)
            raise RecordError(f"{source}: field 'schema' is {data.get('schema')!r}, expected {expected}")
        values = {}
        for name, kind in RECORD_FIELDS.items():
            if name not in data:
                raise RecordError(f"{source}: missing field '{name}'")
            if not isinstance(data[name], kind) or isinstance(data[name], bool):
                raise RecordError(
                    f"{source}: field '{name}' is {type(data[name]).__name__}, expected {kind.__name__}"
                )
            values[name] = data[name]
        values["metrics"] = [_metric_from_json(item, source, i) for i, item in enumerate(data["metrics"])]
        values["curves"] = data.get("curves", {})
        values["files"] = data.get("files", {})
        values["source"] = data.get("source", "measured")
        values["deployable"] = data.get("deployable", "")
        if not isinstance(values["deployable"], str):
            raise RecordError(f"{source}: field 'deployable' is {type(values['deployable']).__name__}, expected str")
        record = cls(**values)
        stored = data.get("content_hash")
        # An older record's hash covers the fields it was written with, not the ones it gains when read.
        written = record.body() if data["schema"] == SCHEMA else data
        if stored is not None and stored != content_hash(written):
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


def _metric_from_json(item: Any, source: str, index: int) -> Metric:
    where = f"{source}: metrics[{index}]"
    if not isinstance(item, dict) or not {"metric", "value", "unit"} <= set(item):
        raise RecordError(f"{where}: expected an object with 'metric', 'value' and 'unit'")
    try:
        return Metric(item["metric"], item["value"], item["unit"], item.get("scope", ""))
    except MetricError as error:
        raise RecordError(f"{where}: {error}") from None


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
    file; readers ignore the ``.tmp-`` leftovers.
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


def read_record(path: Path) -> Record:
    try:
        data = json.loads(path.read_text(), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecordError) as error:
        raise RecordError(f"{path}: cannot read the record: {error}") from None
    return Record.from_json(data, str(path))


def _reject_constant(name: str) -> float:
    raise RecordError(f"non-finite number {name} is not allowed in a record")


class ResultStore:
    """Records under ``root/records/<task>/<method>/<track>-s<seed>-<budget>-<config hash>.json``.

    Trained models are cached under ``root/artifacts/<training hash>/`` so that tracks measured in a
    later invocation use the same model instead of retraining.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._paths: dict[str, Path] | None = None

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
            self._paths = {}
            for path in sorted(self.records_dir.rglob("*.json")):
                if not path.name.startswith(TEMP_PREFIX):
                    self._paths[path.stem.rsplit("-", 1)[-1]] = path
        return self._paths

    def has(self, config_hash: str) -> bool:
        return config_hash in self._index()

    def find(self, config_hash: str) -> Record | None:
        path = self._index().get(config_hash)
        return read_record(path) if path else None

    def path_for(self, record: Record) -> Path:
        name = f"{record.track}-s{record.seed}-{record.budget}-{record.config_hash}.json"
        return self.records_dir / record.task / record.method / name

    def save(self, record: Record) -> Path:
        _check_finite(record)
        path = self.path_for(record)
        write_json_atomically(path, record.to_json())
        self._index()[record.config_hash] = path
        return path

    def save_with_files(self, record: Record, files: Mapping[str, bytes]) -> Path:
        """Write the files a run keeps (name -> content) into its files folder, then its record.

        The files go to a staging folder that is renamed into place, and the record is written only
        after them: a failure at any point leaves no record, so the run counts as not done.
        """
        _check_finite(record)
        if files:
            final = self.files_dir(record.task, record.method, record.config_hash)
            staging = final.with_name(f"{TEMP_PREFIX}{record.config_hash}")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                for name, content in files.items():
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    (staging / name).write_bytes(content)
                shutil.rmtree(final, ignore_errors=True)
                staging.rename(final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return self.save(record)

    def record_paths(self) -> dict[str, Path]:
        """Config hash -> record file, for every record in the folder."""
        return dict(self._index())

    def records(self) -> list[Record]:
        return [read_record(path) for path in self._index().values()]


def _check_finite(record: Record) -> None:
    for name, values in record.curves.items():
        if not all(math.isfinite(v) for v in values):
            raise MetricError(f"training curve '{name}' of run {record.run_id} has non-finite values")
