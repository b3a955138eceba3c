"""Pandas tables built from records. Everything the leaderboard shows is computed here.

Loading. :func:`load_frames` reads the records of result folders into three frames (:class:`ResultFrames`):
``tidy`` (one row per metric, the table every view starts from), ``runs`` (one row per record: run fields,
provenance, config) and ``curves`` (one row per epoch of each training curve). Each folder keeps a Parquet
cache of them in ``DIR/.cache/``, stamped with a fingerprint of the record files (relative path, size,
mtime, inode); a cache whose stamp differs from the folder's current fingerprint is never used, so an added,
changed or removed record rebuilds it.

Tables. Views pivot the tidy rows to one row per run (``ROW_KEYS``) and one column per metric. Values that
papers report (``source`` starting with ``paper:``) are kept apart from ours by the ``source`` key: they are
never averaged with measured values, and every table shows them as rows of their own.

Metadata. What a method is (paper, taxonomy) and what a metric means (unit, whether higher or lower is better,
quality or cost) come from the tracks' and methods' declarations through the index (``effbench.index``),
never from guesses on names. Nothing here imports TensorFlow, the suites or the tracks.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from effbench import index
from effbench.hashing import stable_hash
from effbench.protocol import SuiteProtocol
from effbench.records import TEMP_PREFIX, Record, RecordConflict, ResultStore, provenance, tidy_rows
from effbench.registry import MetricSpec, method_about
from effbench.strict_yaml import load_mapping
from effbench.track import Metric

# ``deployable`` is "" for a method's main model, else a named one (an elastic method's sub-network).
RUN_KEYS = ["method", "variant", "deployable", "task", "budget", "division"]
# Leading columns of the results table, in reading order; every other metric follows alphabetically.
LEADING_METRICS = ["top1", "top5", "top1_relative", "fp32_top1", "loss", "ece", "params", "macs",
                   "flops", "bops", "size_bits"]  # fmt: skip
# One row of the leaderboard views: a run, apart from its seed. ``source`` keeps paper values apart.
ROW_KEYS = ["suite", *RUN_KEYS, "source"]
SEED_KEYS = [*ROW_KEYS, "seed"]
# The headline metrics of the overview, one per track; the track view shows all of them.
OVERVIEW_METRICS = ["top1", "top1_relative", "fp32_top1", "top5", "ece", "params", "macs", "bops", "size_bits",
                    "keras_cpu_b1_median_ms", "mean_corruption_top1", "train_seconds"]  # fmt: skip
# Units of time, for telling latencies among the costs the tracks declare.
TIME_UNITS = ("ms", "s")
FILTER_COLUMNS = ("suite", "task", "track", "hardware", "division", "budget", "seed")
PAPER_PREFIX = "paper:"
# Suffix of a standard deviation column; a space, because metric names (slugs) never hold one.
STD_SUFFIX = " std"

CACHE_DIR = ".cache"
# Bump when the cached frames change layout, so caches written by older code are rebuilt.
CACHE_LAYOUT = 4
CACHE_KEY = b"effbench_cache_key"
METRIC_COLUMNS = ("metric", "value", "unit", "scope")
CURVE_KEYS = ["config_hash", "suite", "method", "variant", "deployable", "task", "track", "seed", "budget", "division",
              "source", "hardware"]  # fmt: skip
RESULTS_ENV = "EFFBENCH_RESULTS"
# Columns of the runs frame holding a record's nested fields as JSON text; the tidy table leaves them out.
RUN_JSON_COLUMNS = ["config", "files", "about", "facts"]


# --------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ResultFrames:
    """What the leaderboard reads from result folders.

    ``tidy``: one row per metric (``tidy_rows`` columns plus ``hardware``; numbers as floats);
    ``runs``: one row per record, with ``config``, ``files``, ``about`` and ``facts`` as JSON text;
    ``curves``: one row per (record, curve, epoch), ``epoch`` counting from 1.
    """

    tidy: pd.DataFrame
    runs: pd.DataFrame
    curves: pd.DataFrame


def records_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per metric of every record (the tidy table)."""
    return record_frames(records).tidy


def record_frames(records: Iterable[Record]) -> ResultFrames:
    """The three frames of ``records``; the run columns are built once per record and repeated per row."""
    records = list(records)
    if not records:
        return ResultFrames(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    runs = pd.DataFrame([_run_row(record) for record in records])
    runs["hardware"] = hardware_labels(runs)
    metrics = [metric for record in records for metric in record.metrics]
    tidy = _repeat_rows(runs.drop(columns=RUN_JSON_COLUMNS), [len(record.metrics) for record in records], {
        "metric": [m.name for m in metrics],
        # Numbers as floats, so a frame read back from the Parquet cache equals the one built here.
        "value": pd.Series([m.value if isinstance(m.value, str) else float(m.value) for m in metrics], dtype=object),
        "unit": [m.unit for m in metrics],
        "scope": [m.scope for m in metrics],
    })  # fmt: skip
    curves = [(name, epoch, value) for record in records for name, values in record.curves.items()
              for epoch, value in enumerate(values, start=1)]  # fmt: skip
    curve_counts = [sum(map(len, record.curves.values())) for record in records]
    curve_frame = _repeat_rows(runs[CURVE_KEYS], curve_counts, {
        "curve": [c[0] for c in curves], "epoch": [c[1] for c in curves], "value": [float(c[2]) for c in curves],
    })  # fmt: skip
    return ResultFrames(tidy, runs, curve_frame)


# A metric handed to tidy_rows to read a record's run columns exactly as the tidy table has them.
_PLACEHOLDER = Metric("", 0, "")


def _run_row(record: Record) -> dict[str, Any]:
    row = next(tidy_rows(replace(record, metrics=[_PLACEHOLDER])))
    for column in METRIC_COLUMNS:
        del row[column]
    row["config"] = json.dumps(record.config, sort_keys=True)
    row["files"] = json.dumps(record.files, sort_keys=True)
    row["about"] = json.dumps(record.about, sort_keys=True)
    row["facts"] = json.dumps(record.facts, sort_keys=True)
    return row


def _repeat_rows(parent: pd.DataFrame, counts: Sequence[int], columns: Mapping[str, Any]) -> pd.DataFrame:
    """Row i of ``parent`` repeated ``counts[i]`` times, side by side with ``columns`` (one value per row)."""
    repeated = parent.iloc[np.repeat(np.arange(len(parent)), counts)].reset_index(drop=True)
    return pd.concat([repeated, pd.DataFrame(dict(columns))], axis=1)


def hardware_labels(runs: pd.DataFrame) -> pd.Series:
    """'<cpu>, <n> threads' plus the GPUs when there are any: one label per row to filter on."""

    def column(name: str) -> pd.Series:
        return runs[name].astype(str) if name in runs else pd.Series("", index=runs.index)

    threads = column("hw_cpu_threads")
    # A paper's value names no thread count (0): its label is the CPU field alone ('paper-reported').
    counted = ~threads.isin(["", "0", "nan", "None"])
    label = column("hw_cpu").where(~counted, column("hw_cpu") + ", " + threads + " threads")
    gpu = column("hw_gpu")
    has_gpu = ~gpu.isin(["", "none", "nan"])
    return label.where(~has_gpu, label + ", " + gpu)


def fingerprint(root: Path | str) -> str:
    """Hash of the record files under ``root`` (path, size, mtime, inode): changes whenever a record does.

    The inode catches records rewritten in place with the same size within the clock's resolution:
    records are written to a new file and renamed over the old one.
    """
    records_dir = ResultStore(root).records_dir
    entries = []
    for path in sorted(records_dir.rglob("*.json")):
        if not path.name.startswith(TEMP_PREFIX):
            stat = path.stat()
            entries.append([str(path.relative_to(records_dir)), stat.st_size, stat.st_mtime_ns, stat.st_ino])
    return stable_hash({"layout": CACHE_LAYOUT, "files": entries})


def load_frames(*roots: Path | str, cache: bool = True) -> ResultFrames:
    """The records of every folder in ``roots``, through each folder's cache when ``cache``.

    A run recorded in several folders is kept once, from the first of them: copies that differ (another
    measurement of the same config hash) are a conflict, warned about with both files named
    (:class:`effbench.records.RecordConflict`), and never averaged together.
    """
    paths = [Path(root) for root in roots]
    parts = _first_copies([_load_root(root, cache) for root in paths], paths)
    return ResultFrames(*(_concat([getattr(part, f.name) for part in parts]) for f in fields(ResultFrames)))


def _first_copies(parts: list[ResultFrames], roots: list[Path]) -> list[ResultFrames]:
    """``parts`` without the runs an earlier part already holds; a warning for each that differs from it."""
    seen: dict[str, tuple[Path, ResultFrames, tuple]] = {}
    kept = []
    for root, part in zip(roots, parts, strict=True):
        runs = part.runs
        if runs.empty:
            kept.append(part)
            continue
        names = zip(*(runs[column] for column in _RUN_IDENTITY), strict=True)
        repeated = set()
        for config_hash, run_id, *where in names:
            if config_hash not in seen:
                seen[config_hash] = (root, part, (run_id, *where))
                continue
            repeated.add(config_hash)
            first_root, first_part, (first_run, *first_where) = seen[config_hash]
            if first_run != run_id or _numbers(first_part, config_hash) != _numbers(part, config_hash):
                first = ResultStore(first_root).path_of(*first_where, config_hash)
                second = ResultStore(root).path_of(*where, config_hash)
                warnings.warn(RecordConflict(f"{first} and {second} are different records of the same run "
                                             f"(config hash {config_hash}): only the first is shown"), stacklevel=3)
        if repeated:
            part = ResultFrames(*(_without(getattr(part, f.name), repeated) for f in fields(ResultFrames)))
        kept.append(part)
    return kept


# The columns that tell one record from another of the same run, and name its file.
_RUN_IDENTITY = ("config_hash", "run_id", "task", "method", "track", "seed", "budget")


def _numbers(part: ResultFrames, config_hash: str) -> list[tuple]:
    """What a record of ``part`` says, metric by metric: two copies of a record say the same."""
    rows = part.tidy[part.tidy["config_hash"] == config_hash]
    return sorted(zip(rows["scope"], rows["metric"], rows["value"].map(str), strict=True))


def _without(frame: pd.DataFrame, config_hashes: set[str]) -> pd.DataFrame:
    return frame if frame.empty else frame[~frame["config_hash"].isin(config_hashes)].reset_index(drop=True)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    non_empty = [frame for frame in frames if not frame.empty]
    if not non_empty:
        return frames[0] if frames else pd.DataFrame()
    return non_empty[0] if len(non_empty) == 1 else pd.concat(non_empty, ignore_index=True)


def load_results(*roots: Path | str) -> pd.DataFrame:
    """The tidy table of every record under ``roots`` (one row per metric)."""
    return load_frames(*roots).tidy


def load_curves(*roots: Path | str) -> pd.DataFrame:
    """The training curves of every record under ``roots`` (one row per epoch)."""
    return load_frames(*roots).curves


def _load_root(root: Path, cache: bool) -> ResultFrames:
    if not cache:
        return record_frames(ResultStore(root).records())
    # The fingerprint is taken before reading: a record that changes while we read makes the cache
    # stale at once, so it is rebuilt on the next load instead of being trusted.
    key = fingerprint(root)
    cached = _read_cache(root, key)
    if cached is not None:
        return cached
    frames = record_frames(ResultStore(root).records())
    if not frames.runs.empty:
        _write_cache(root, key, frames)
    return frames


def cache_path(root: Path | str, frame: str) -> Path:
    return Path(root) / CACHE_DIR / f"{frame}.parquet"


def _read_cache(root: Path, key: str) -> ResultFrames | None:
    frames = {}
    for f in fields(ResultFrames):
        try:
            table = pq.read_table(cache_path(root, f.name))
        except (OSError, pa.ArrowException):
            return None
        if (table.schema.metadata or {}).get(CACHE_KEY) != key.encode():
            return None
        frames[f.name] = _decode(table.to_pandas())
    return ResultFrames(**frames)


def _write_cache(root: Path, key: str, frames: ResultFrames) -> None:
    """Each frame to a temporary file renamed into place: readers see a whole old or a whole new file."""
    try:
        for f in fields(ResultFrames):
            table = pa.Table.from_pandas(_encode(getattr(frames, f.name)), preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), CACHE_KEY: key.encode()})
            path = cache_path(root, f.name)
            path.parent.mkdir(exist_ok=True)
            handle, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".parquet", dir=path.parent)
            # mkstemp makes owner-only files; the results folder may be shared, like its records.
            os.fchmod(handle, 0o644)
            os.close(handle)
            try:
                pq.write_table(table, temp_name)
                os.replace(temp_name, path)
            finally:
                Path(temp_name).unlink(missing_ok=True)
    except (OSError, pa.ArrowException) as error:
        # A read-only results folder still loads, only without the speed-up.
        warnings.warn(f"cannot write the leaderboard cache in {root / CACHE_DIR}: {error}", stacklevel=3)


def _encode(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet columns hold one type: metric values split into numbers and text; other mixed columns as text."""
    frame = frame.copy()
    if "value" in frame and pd.api.types.is_object_dtype(frame["value"]):
        is_text = frame["value"].map(lambda v: isinstance(v, str))
        frame["value_number"] = pd.to_numeric(frame["value"].where(~is_text), errors="coerce").astype(float)
        frame["value_text"] = frame["value"].where(is_text)
        frame = frame.drop(columns="value")
    for column in [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c])]:
        frame[column] = frame[column].map(lambda v: v if pd.isna(v) else str(v))
    return frame


def _decode(frame: pd.DataFrame) -> pd.DataFrame:
    if "value_text" not in frame:
        return frame
    text = frame.pop("value_text")
    number = frame.pop("value_number")
    position = list(frame.columns).index("metric") + 1
    frame.insert(position, "value", pd.Series(np.where(text.isna(), number, text), index=frame.index, dtype=object))
    return frame


def result_dirs(argv: Sequence[str], environ: Mapping[str, str], repo: Path) -> list[Path]:
    """The app's result folders: ``--results DIR ...`` in ``argv``, else ``$EFFBENCH_RESULTS``
    (``os.pathsep``-separated), else the committed results of ``repo`` (:func:`default_result_dirs`)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--results", nargs="+", type=Path, default=[])
    given = parser.parse_known_args(list(argv))[0].results
    if given:
        return given
    if environ.get(RESULTS_ENV):
        return [Path(part) for part in environ[RESULTS_ENV].split(os.pathsep) if part]
    return default_result_dirs(repo)


def default_result_dirs(root: Path) -> list[Path]:
    """The committed results of the project at ``root``: ``results/baselines``, every other folder of
    ``results/`` but ``demo`` (``make demo``'s scratch output), and every ``submissions/*/results``."""
    suites = sorted(p for p in (root / "results").glob("*") if p.is_dir() and p.name not in ("baselines", "demo"))
    return [root / "results" / "baselines", *suites, *sorted(root.glob("submissions/*/results"))]


def project_root(cwd: Path, checkout: Path) -> Path:
    """Whose results are the default: the current folder's project when it has ``results/`` or ``submissions/``
    (a user's own project), else the EffBench checkout the package was installed from."""
    return cwd if any((cwd / name).is_dir() for name in ("results", "submissions")) else checkout


def has_records(root: Path) -> bool:
    return any(path for path in (root / "records").rglob("*.json") if not path.name.startswith(TEMP_PREFIX))


# --------------------------------------------------------------------------------------------- filters


def filter_options(tidy: pd.DataFrame) -> dict[str, list]:
    """The values each filter can take, sorted."""
    return {column: sorted(tidy[column].dropna().unique().tolist()) for column in FILTER_COLUMNS if column in tidy}


def default_budgets(runs: pd.DataFrame) -> list[str]:
    """The budgets a view shows until the reader chooses: the budget most of our runs were trained with (``quick``
    in the committed results), so that runs of another budget (smoke runs, seconds long, that tests make) never
    sit unmarked among them, and the budgets of papers' values, which are shown beside ours."""
    if runs.empty:
        return []
    reference = is_reference(runs)
    counts = runs.loc[~reference, "budget"].value_counts()
    # Ties go to 'quick', the budget the committed results use, then by name.
    ranked = sorted(counts.index, key=lambda budget: (-counts[budget], budget != "quick", budget))
    papers = sorted(set(runs.loc[reference, "budget"]) - set(ranked[:1]))
    return [*ranked[:1], *papers]


def apply_filters(frame: pd.DataFrame, selection: Mapping[str, Collection]) -> pd.DataFrame:
    """Rows whose value of each selected column is among the chosen ones; an empty choice keeps every row."""
    for column, chosen in selection.items():
        if chosen and column in frame:
            frame = frame[frame[column].isin(list(chosen))]
    return frame


def filter_frames(frames: ResultFrames, selection: Mapping[str, Collection]) -> ResultFrames:
    return ResultFrames(*(apply_filters(getattr(frames, f.name), selection) for f in fields(ResultFrames)))


def is_reference(frame: pd.DataFrame) -> pd.Series:
    """Rows holding values a paper reports rather than values measured here."""
    return frame["source"].astype(str).str.startswith(PAPER_PREFIX)


# ---------------------------------------------------------------------------------------------- tables


def pivot_runs(tidy: pd.DataFrame, track: str | None = None) -> pd.DataFrame:
    """One row per (method, variant, task, budget, division), one column per whole-model metric.

    Numeric metrics are averaged over seeds; ``seeds`` counts them. String outcomes are left out, and
    so are scoped metrics (per layer, per variant, per corruption), unless ``track`` is given: then only
    that track's metrics are kept and its scoped ones become ``<scope>/<metric>`` columns, but for per-layer
    numbers (:func:`is_layer_row`; the Method page has them), which would spread a table over hundreds of columns.
    """
    if tidy.empty:
        return pd.DataFrame(columns=[*RUN_KEYS, "seeds"])
    if track is not None:
        tidy = tidy[tidy["track"] == track]
        tidy = tidy[~is_layer_row(tidy)].copy()
        scoped = tidy["scope"] != ""
        tidy.loc[scoped, "metric"] = tidy.loc[scoped, "scope"] + "/" + tidy.loc[scoped, "metric"]
        tidy["scope"] = ""
    whole_model = tidy[(tidy["scope"] == "")].copy()
    whole_model["value"] = pd.to_numeric(whole_model["value"], errors="coerce")
    whole_model = whole_model.dropna(subset=["value"])
    table = whole_model.pivot_table(index=RUN_KEYS, columns="metric", values="value", aggfunc="mean")
    seeds = tidy.groupby(RUN_KEYS)["seed"].nunique().rename("seeds")
    table = table.join(seeds)
    ordered = [m for m in LEADING_METRICS if m in table.columns]
    rest = sorted(c for c in table.columns if c not in ordered and c != "seeds")
    return table[[*ordered, *rest, "seeds"]].reset_index().rename_axis(columns=None)


def results_table(tidy: pd.DataFrame, track: str | None = None) -> pd.DataFrame:
    """:func:`pivot_runs` of the runs (ours, and submissions'): papers' values are never averaged into them.

    Nor are numbers obtained in different ways (EffBench's own, a submission's measured in the sandbox, or
    verified from its flatbuffers: :func:`effbench.records.provenance`): with more than one source, each has
    rows of its own and a ``source`` column says which.
    """
    if "source" not in tidy.columns:
        return pivot_runs(tidy, track)
    tidy = tidy[~is_reference(tidy)]
    if tidy.empty or tidy["source"].nunique() <= 1:
        return pivot_runs(tidy, track)
    parts = [pivot_runs(rows, track).assign(source=provenance(source)) for source, rows in tidy.groupby("source")]
    table = pd.concat(parts, ignore_index=True)
    return table[[*RUN_KEYS, "source", *(c for c in table.columns if c not in [*RUN_KEYS, "source"])]]


def is_layer_row(tidy: pd.DataFrame) -> pd.Series:
    """Rows of a per-layer number (the complexity track's metrics with a layer as scope)."""
    if tidy.empty:
        return pd.Series(False, index=tidy.index)
    pairs = tidy.loc[tidy["scope"] != "", ["track", "metric"]].drop_duplicates()
    layered = {(track, metric) for track, metric in pairs.itertuples(index=False) if _per_layer(track, metric)}
    keys = pd.MultiIndex.from_frame(tidy[["track", "metric"]])
    return pd.Series(keys.isin(list(layered)), index=tidy.index) & (tidy["scope"] != "")


@functools.cache
def _per_layer(track: str, metric: str) -> bool:
    spec = index.metric_spec(metric, scoped=True, track=track)
    return spec is not None and "layer" in spec.scopes


def track_table(tidy: pd.DataFrame, track: str, scoped: bool = True) -> pd.DataFrame:
    """:func:`results_table` of one track, with paper values in rows of their own; its scoped metrics (but
    per-layer ones) as ``<scope>/<metric>`` columns when ``scoped``, else its whole-model metrics only."""
    tidy = tidy[tidy["track"] == track] if not tidy.empty else tidy
    if tidy.empty:
        return pd.DataFrame(columns=[*RUN_KEYS, "source", "seeds"])
    pivot_track = track if scoped else None
    parts = [pivot_runs(rows, pivot_track).assign(source=source) for source, rows in tidy.groupby("source")]
    table = pd.concat(parts, ignore_index=True)
    return table[[*RUN_KEYS, "source", *(c for c in table.columns if c not in [*RUN_KEYS, "source"])]]


def scoped_metrics(tidy: pd.DataFrame, track: str) -> list[str]:
    """The metrics ``track`` records per scope (per converted variant, per corruption), per-layer ones aside."""
    rows = tidy[(tidy["track"] == track) & (tidy["scope"] != "")] if not tidy.empty else tidy
    rows = rows[~is_layer_row(rows)] if not rows.empty else rows
    numbers = rows[pd.to_numeric(rows["value"], errors="coerce").notna()] if not rows.empty else rows
    if numbers.empty:
        return []
    declared = index.metric_specs(track)

    def rank(metric: str) -> tuple[int, str]:
        spec = index.metric_spec(metric, scoped=True, track=track)
        return (declared.index(spec) if spec in declared else len(declared), metric)

    return sorted(numbers["metric"].unique(), key=rank)


def scoped_table(tidy: pd.DataFrame, track: str, metric: str) -> pd.DataFrame:
    """One scoped metric of ``track`` with one column per scope (``float32``, ``int8``, ``lce``; a corruption):
    each run's numbers across variants side by side. Paper values in rows of their own."""
    rows = tidy[(tidy["track"] == track) & (tidy["metric"] == metric) & (tidy["scope"] != "")]
    rows = rows.assign(metric=rows["scope"], scope="")
    if rows.empty:
        return pd.DataFrame(columns=[*RUN_KEYS, "source", "seeds"])
    parts = [pivot_runs(part).assign(source=source) for source, part in rows.groupby("source")]
    table = pd.concat(parts, ignore_index=True)
    return table[[*RUN_KEYS, "source", *(c for c in table.columns if c not in [*RUN_KEYS, "source"])]]


def column_spec(column: str) -> MetricSpec | None:
    """What a view's column measures, from the tracks' metadata; ``<scope>/<metric>`` columns are looked up
    among metrics recorded with a scope. None for a column that is not a declared metric."""
    scope, _, metric = str(column).rpartition("/")
    return index.metric_spec(metric, scoped=bool(scope))


def is_latency_metric(name: str) -> bool:
    """Scoped metrics a Pareto plot can use: times, lower is better, of a converted model (edge, on a device).

    A layer's numbers are not a run's, so per-layer metrics are never taken.
    """
    spec = index.metric_spec(name, scoped=True)
    return spec is not None and is_cost(spec) and spec.unit in TIME_UNITS and "layer" not in spec.scopes


def seed_table(tidy: pd.DataFrame, scoped: Callable[[str], bool] | None = None) -> pd.DataFrame:
    """One row per run and seed (``SEED_KEYS``), one column per numeric whole-model metric.

    Scoped metrics whose name ``scoped`` accepts become ``<scope>/<metric>`` columns too. A missing
    ``top1_relative`` is filled with ``top1 / fp32_top1`` wherever the run carries its FP32 twin's top-1.
    """
    if tidy.empty:
        return pd.DataFrame(columns=SEED_KEYS)
    keep = tidy["scope"] == ""
    if scoped is not None:
        keep |= tidy["metric"].map(scoped).astype(bool)
    rows = tidy[keep]
    metric = rows["metric"].where(rows["scope"] == "", rows["scope"] + "/" + rows["metric"])
    rows = rows.assign(metric=metric, number=pd.to_numeric(rows["value"], errors="coerce")).dropna(subset=["number"])
    if rows.empty:
        return pd.DataFrame(columns=SEED_KEYS)
    table = rows.pivot_table(index=SEED_KEYS, columns="metric", values="number", aggfunc="mean")
    return add_relative_accuracy(table.reset_index().rename_axis(columns=None))


def add_relative_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """``top1_relative`` = ``top1 / fp32_top1`` where a row has both and no recorded ratio (BiBench)."""
    if not {"top1", "fp32_top1"} <= set(table.columns):
        return table
    computed = table["top1"] / table["fp32_top1"].where(table["fp32_top1"] != 0)
    recorded = table["top1_relative"] if "top1_relative" in table else pd.Series(np.nan, index=table.index)
    return table.assign(top1_relative=recorded.fillna(computed))


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a view, leading metrics first, then alphabetical."""
    metrics = [c for c in table.columns if c not in [*SEED_KEYS, "seeds"] and not str(c).endswith(STD_SUFFIX)]
    ordered = [m for m in LEADING_METRICS if m in metrics]
    return [*ordered, *sorted(m for m in metrics if m not in ordered)]


def overview_table(
    tidy: pd.DataFrame, metrics: Sequence[str] | None = OVERVIEW_METRICS, scoped: Callable[[str], bool] | None = None
) -> pd.DataFrame:
    """One row per run (``ROW_KEYS``): each metric's mean over seeds, its standard deviation as
    ``<metric> std`` (NaN with one seed), and ``seeds``. ``metrics=None`` keeps every metric.

    Sorted by ``top1``, best first, when there is one.
    """
    per_seed = seed_table(tidy, scoped)
    if per_seed.empty:
        return pd.DataFrame(columns=[*ROW_KEYS, "seeds"])
    chosen = [m for m in (metrics or metric_columns(per_seed)) if m in per_seed.columns]
    groups = per_seed.groupby(ROW_KEYS, sort=True)
    table = pd.concat([groups[chosen].mean(), groups[chosen].std().add_suffix(STD_SUFFIX)], axis=1)
    table = table[[c for m in chosen for c in (m, m + STD_SUFFIX)]].assign(seeds=groups["seed"].nunique())
    table = table.reset_index()
    if "top1" in table:
        table = table.sort_values("top1", ascending=False, kind="stable", ignore_index=True)
    return table


def mean_std_text(mean: float, std: float) -> str:
    """'0.977 ± 0.004': the mean to the decimal of the std's first significant digit; counts in K/M/G.

    The mean alone where the std is NaN (one seed) or 0 (the seeds agree); ``seeds`` tells which.
    """
    if pd.isna(mean):
        return ""
    if pd.isna(std) or std == 0:  # one seed, or a metric seeds do not change (params, MACs)
        return human_number(mean)
    if abs(mean) >= 1e4:
        return f"{human_number(mean)} ± {human_number(std)}"
    decimals = max(0, -math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def format_overview(table: pd.DataFrame) -> pd.DataFrame:
    """The overview for reading: each metric and its std column merged into one 'mean ± std' text."""
    formatted = table.copy()
    for metric in [c for c in table.columns if c + STD_SUFFIX in table.columns]:
        std = formatted.pop(metric + STD_SUFFIX)
        formatted[metric] = [mean_std_text(m, s) for m, s in zip(table[metric], std, strict=True)]
    return formatted


def numbers_view(table: pd.DataFrame) -> pd.DataFrame:
    """The overview as numbers (each column sortable): a metric's std column only where some run has a spread,
    so that single-seed results do not double every column with empty ones."""
    spread = [c for c in table.columns if str(c).endswith(STD_SUFFIX) and (table[c].fillna(0) != 0).any()]
    return table.drop(columns=[c for c in table.columns if str(c).endswith(STD_SUFFIX) and c not in spread])


# Key columns a reader needs only where they tell rows apart.
OPTIONAL_KEYS = ("variant", "deployable", "budget", "division")


def drop_constant_keys(table: pd.DataFrame, keys: Sequence[str] = OPTIONAL_KEYS) -> tuple[pd.DataFrame, dict]:
    """``table`` without the key columns that hold one value in every row, and those values (to say once, above
    the table): a budget column appears only where two budgets are mixed, a variant column where there are
    variants. Empty values (no variant) are not reported."""
    constant = {key: table[key].iloc[0] for key in keys if key in table and len(table) and table[key].nunique() == 1}
    return table.drop(columns=list(constant)), {key: value for key, value in constant.items() if value != ""}


def source_labels(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
    """``table`` with its ``source`` column short (:func:`short_sources`), and n -> the citation of 'paper [n]'."""
    if "source" not in table:
        return table, {}
    short, citations = short_sources(table["source"])
    return table.assign(source=table["source"].map(short)), citations


def short_sources(sources: Iterable[str]) -> tuple[dict[str, str], dict[int, str]]:
    """Each source as a reader sees it, how the numbers were obtained (``ours``, ``sandbox``, ``verified``:
    :func:`effbench.records.provenance`) or ``paper [n]``; and n -> the paper's citation."""
    sources = set(sources)
    citations = sorted(s.removeprefix(PAPER_PREFIX).strip() for s in sources if s.startswith(PAPER_PREFIX))
    numbers = {citation: n for n, citation in enumerate(citations, start=1)}
    short = {s: f"paper [{numbers[s.removeprefix(PAPER_PREFIX).strip()]}]" if s.startswith(PAPER_PREFIX)
             else provenance(s) for s in sources}  # fmt: skip
    return short, {n: citation for citation, n in numbers.items()}


# ------------------------------------------------------------------------------------- noisy timings

# A timing whose timed calls spread this much (std / mean) is not one number: the machine was busy.
NOISY_CV = 0.5
CV_SUFFIX, MEDIAN_SUFFIX = "_cv", "_median_ms"


def noisy_timings(tidy: pd.DataFrame, threshold: float = NOISY_CV) -> pd.DataFrame:
    """Every timing (``..._median_ms``) of a seed whose coefficient of variation (``..._cv``, std / mean of its
    timed calls) is above ``threshold``: ``SEED_KEYS``, ``timing`` (``<scope>/<metric>`` for a scoped one) and
    ``cv``."""
    columns = [*SEED_KEYS, "timing", "cv"]
    if tidy.empty:
        return pd.DataFrame(columns=columns)
    rows = tidy[tidy["metric"].str.endswith(CV_SUFFIX)]
    rows = rows.assign(cv=pd.to_numeric(rows["value"], errors="coerce"))
    rows = rows[rows["cv"] > threshold]
    timing = rows["metric"].str.removesuffix(CV_SUFFIX) + MEDIAN_SUFFIX
    rows = rows.assign(timing=timing.where(rows["scope"] == "", rows["scope"] + "/" + timing))
    return rows[columns].reset_index(drop=True)


def noisy_column(table: pd.DataFrame, noisy: pd.DataFrame, names: Mapping[str, str] | None = None) -> pd.Series:
    """Per row of ``table``, its noisy timings among its columns, worst seed's cv: 'lce_t1_ms (cv 6.2)'; '' if none.

    ``names`` maps a column of ``table`` to the timing it shows (a suite summary's ``lce_t1_ms`` shows
    ``lce/lce_t1_median_ms``); by default a column is the timing of its own name. Rows are matched on the
    key columns ``table`` and ``noisy`` share.
    """
    names = dict(names) if names is not None else {str(c): str(c) for c in table.columns}
    shown = {timing: column for column, timing in names.items() if column in table.columns}
    found = noisy[noisy["timing"].isin(list(shown))] if not noisy.empty else noisy
    keys = [k for k in SEED_KEYS if k in table.columns and k in noisy.columns and k != "seed"]
    if found.empty or not keys:
        return pd.Series("", index=table.index, dtype=object)
    worst = found.groupby([*keys, "timing"])["cv"].max().reset_index()
    worst["text"] = worst["timing"].map(shown) + " (cv " + worst["cv"].map(lambda cv: f"{cv:.3g}") + ")"
    texts = worst.groupby(keys)["text"].agg("; ".join)
    index = pd.MultiIndex.from_frame(table[keys].astype(object)) if len(keys) > 1 else table[keys[0]]
    return pd.Series(texts.reindex(index).fillna("").to_numpy(), index=table.index, dtype=object)


@dataclass(frozen=True)
class View:
    """A table as the leaderboard shows it, with what is said once beside it instead of in every row."""

    table: pd.DataFrame
    # Key columns that hold one value in every row (budget 'quick'), dropped from the table.
    constants: dict[str, Any]
    # 'paper [n]' in the source column -> the paper's citation.
    citations: dict[int, str]


def reading_view(
    table: pd.DataFrame, noisy: pd.DataFrame | None = None, timings: Mapping[str, str] | None = None,
    as_text: bool = True, hidden: Sequence[str] = ("suite",),
) -> View:
    """``table`` (an overview, with ``<metric> std`` columns, or a plain table) made for reading: a ``noisy
    timings`` column where some timing is noisy (:func:`noisy_column`), 'mean ± std' text when ``as_text``
    (else numbers, std columns only where runs spread: :func:`numbers_view`), short sources with the papers
    as citations, and no ``hidden`` columns nor key columns of one value (:func:`drop_constant_keys`)."""
    if noisy is not None and not noisy.empty:
        flags = noisy_column(table, noisy, timings)
        if (flags != "").any():
            table = table.assign(**{NOISY_COLUMN: flags})
    table = format_overview(table) if as_text else numbers_view(table)
    table, citations = source_labels(table.drop(columns=[c for c in hidden if c in table.columns]))
    table, constants = drop_constant_keys(table, (*OPTIONAL_KEYS, "source"))
    return View(table.reset_index(drop=True), constants, citations)


NOISY_COLUMN = "noisy timings"


def split_by(table: pd.DataFrame, column: str) -> dict[Any, pd.DataFrame]:
    """One table per value of ``column`` (e.g. one per task), without that column."""
    return {value: rows.drop(columns=column).reset_index(drop=True) for value, rows in table.groupby(column)}


def human_number(value: float) -> str:
    """Four significant digits; counts of ten thousand and more with a K/M/G/T suffix."""
    for threshold, unit, suffix in ((1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / unit:.4g}{suffix}"
    return f"{value:.4g}"


def format_table(table: pd.DataFrame, fmt: str) -> str:
    """``csv`` (full precision), ``markdown`` or ``text`` (both rounded for reading).

    The ``deployable`` key is left out where every row is a method's main model (most tables).
    """
    if "deployable" in table.columns and (table["deployable"] == "").all():
        table = table.drop(columns="deployable")
    if fmt == "csv":
        return table.to_csv(index=False)
    readable = table.copy()
    for column in readable.columns:
        if pd.api.types.is_float_dtype(readable[column]):
            readable[column] = readable[column].map(lambda v: "" if pd.isna(v) else human_number(v))
    if fmt == "markdown":
        return readable.to_markdown(index=False)
    return readable.to_string(index=False)


# ------------------------------------------------------------------------------------- suite summary

# One row of a suite's summary: a run apart from its seed (paper values are left out, so no ``source``).
SUMMARY_KEYS = ["task", "method", "variant", "deployable", "budget", "division"]
BITS_COLUMN = "W/A"


def summary_per_seed(rows: pd.DataFrame, columns: Mapping[str, tuple[str, str]], keys: Sequence[str]) -> pd.DataFrame:
    """One row per run and seed (``keys`` and ``seed`` as index), one column per summary column (column ->
    (scope, metric)) holding that metric's number. A ``top1_relative`` column the run did not record is
    ``top1 / fp32_top1`` where it has both columns (a paper's value, say)."""
    wanted = {(scope, metric): name for name, (scope, metric) in columns.items()}
    picked = rows.assign(column=[wanted.get(key) for key in zip(rows["scope"], rows["metric"], strict=True)])
    picked = picked.dropna(subset=["column"])
    picked = picked.assign(number=pd.to_numeric(picked["value"], errors="coerce")).dropna(subset=["number"])
    per_seed = picked.pivot_table(index=[*keys, "seed"], columns="column", values="number", aggfunc="mean")
    if "top1_relative" in columns and {"top1", "fp32_top1"} <= set(columns):
        per_seed = add_relative_accuracy(per_seed.reset_index()).set_index([*keys, "seed"])
    return per_seed[[name for name in columns if name in per_seed.columns]].rename_axis(columns=None)


def suite_table(
    tidy: pd.DataFrame, suite: str, protocol: SuiteProtocol | None = None, abouts: Mapping[str, dict] | None = None
) -> pd.DataFrame:
    """A suite's overview: one row per run of it (``ROW_KEYS``; papers' values in rows of their own) with the
    columns its protocol declares (``summary_columns``) as each one's mean over seeds and ``<column> std``,
    then ``W/A`` (the method's declared bit-widths: :func:`bits_label`), a column per ``summary_outcomes``
    scope (how that converted variant fared), and ``seeds``. Sorted by task, then by the protocol's
    ``summary_sort`` column, best first.

    ``protocol`` is the suite's from the index unless given; ``abouts`` what records say of methods the index
    does not know (:func:`method_abouts`).
    """
    protocol = protocol or index.protocol(suite)
    columns, outcomes = dict(protocol.summary_columns), list(protocol.summary_outcomes)
    rows = tidy[tidy["suite"] == suite] if not tidy.empty else tidy
    per_seed = summary_per_seed(rows, columns, ROW_KEYS) if not rows.empty else pd.DataFrame()
    if per_seed.empty:
        return pd.DataFrame(columns=[*ROW_KEYS, BITS_COLUMN, "seeds"])
    groups = per_seed.groupby(level=ROW_KEYS)
    present = list(per_seed.columns)
    table = pd.concat([groups.mean(), groups.std().add_suffix(STD_SUFFIX)], axis=1)
    table = table[[c for name in present for c in (name, name + STD_SUFFIX)]]
    for scope in outcomes:
        outcome = _conversion_outcomes(rows, scope, ROW_KEYS)
        if len(outcome):  # no column for a variant no run converted (the edge track did not run)
            table[scope] = outcome
    table = table.assign(seeds=groups.size()).reset_index()
    bits = table["method"].map(lambda slug: bits_label(declared_about(slug, abouts)))
    table.insert(len(ROW_KEYS), BITS_COLUMN, bits)
    filled = {scope: "" for scope in outcomes if scope in table}
    return _sorted_summary(table, _sort_key(table, protocol), protocol).fillna(filled)


def _sorted_summary(table: pd.DataFrame, key: pd.Series, protocol: SuiteProtocol) -> pd.DataFrame:
    """By task, then ``key`` (the ``summary_sort`` column's numbers) best first, rows without it last."""
    scope, metric = protocol.summary_columns[protocol.summary_sort]
    spec = index.metric_spec(metric, scoped=bool(scope))
    lower_is_better = spec is not None and spec.direction == "lower"
    ordered = table.assign(_key=key.to_numpy() if lower_is_better else -key.to_numpy())
    ordered = ordered.sort_values(["task", "_key"], na_position="last", kind="stable")
    return ordered.drop(columns="_key").reset_index(drop=True)


def _sort_key(table: pd.DataFrame, protocol: SuiteProtocol) -> pd.Series:
    sort = protocol.summary_sort
    return table[sort].astype(float) if sort in table else pd.Series(0.0, index=table.index)


def suite_summary(
    tidy: pd.DataFrame, suite: str, protocol: SuiteProtocol | None = None, abouts: Mapping[str, dict] | None = None
) -> pd.DataFrame:
    """``effbench table --suite S``: one row per run of ``suite`` (:data:`SUMMARY_KEYS`) with the columns its
    protocol declares, as text.

    ``protocol`` is the suite's from the index unless given. ``W/A``, then its ``summary_columns`` (column ->
    (scope, metric)) as 'mean ± std' over seeds, then ``seeds``, a column per ``summary_outcomes`` scope saying
    how that converted variant fared (:func:`_conversion_outcomes`; empty where the edge track did not run),
    ``noisy`` (timings whose spread is above :data:`NOISY_CV`) and ``hardware``. Sorted by task, then by the
    protocol's ``summary_sort`` column, best first. Paper values are left out (they are not runs).
    """
    protocol = protocol or index.protocol(suite)
    metrics, outcomes = dict(protocol.summary_columns), list(protocol.summary_outcomes)
    rows = tidy[(tidy["suite"] == suite) & ~is_reference(tidy)] if not tidy.empty else tidy
    columns = [*SUMMARY_KEYS, BITS_COLUMN, *metrics, "seeds", *outcomes, "noisy", "hardware"]
    per_seed = summary_per_seed(rows, metrics, SUMMARY_KEYS) if not rows.empty else pd.DataFrame()
    if per_seed.empty:
        return pd.DataFrame(columns=columns)
    groups = per_seed.groupby(level=SUMMARY_KEYS)
    present = list(per_seed.columns)
    means, stds = groups.mean(), groups.std()
    table = pd.DataFrame({name: [mean_std_text(m, s) for m, s in zip(means[name], stds[name], strict=True)]
                          for name in present}, index=means.index)  # fmt: skip
    table = table.assign(seeds=groups.size(), hardware=_hardware(rows))
    for scope in outcomes:
        table[scope] = _conversion_outcomes(rows, scope, SUMMARY_KEYS)
    key = _sort_key(means, protocol).to_numpy()
    table = table.reset_index()
    table[BITS_COLUMN] = table["method"].map(lambda slug: bits_label(declared_about(slug, abouts)))
    timings = {name: f"{scope}/{metric}" if scope else metric for name, (scope, metric) in metrics.items()}
    table["noisy"] = noisy_column(table, noisy_timings(rows), timings)
    table = _sorted_summary(table, pd.Series(key, index=table.index), protocol)
    return table.reindex(columns=columns).fillna("").reset_index(drop=True)


def _conversion_outcomes(rows: pd.DataFrame, scope: str, keys: Sequence[str]) -> pd.Series:
    """Per run: 'converted' where every seed's ``scope`` variant (``lce``, ``int8``) converted and ran; else
    the first seed's error, as 'failed: <converter error>' or 'run failed: <interpreter error>' (converted,
    but its interpreter cannot run it).
    """
    variant = rows[rows["scope"] == scope]
    converted = variant[variant["metric"] == "converted"].groupby(list(keys))["value"].min()
    outcome = converted.map(lambda v: "converted" if float(v) == 1 else "failed")
    for metric, prefix in (("run_error", "run failed: "), ("converter_error", "failed: ")):
        errors = variant[variant["metric"] == metric].groupby(list(keys))["value"].first()
        failed = outcome.index.isin(errors.index)
        outcome = outcome.where(~failed, prefix + errors.astype(str).map(_error_tail).reindex(outcome.index))
    return outcome


def _error_tail(message: str, keep: int = 60) -> str:
    """The end of a long error message (where runtimes put the failed check); the record keeps it whole."""
    return message if len(message) <= keep + 10 else "…" + message[-keep:]


def _hardware(rows: pd.DataFrame) -> pd.Series:
    """Per run, the hardware of its timed records (edge, training_cost); of all its records where none is timed."""

    def labels(frame: pd.DataFrame) -> pd.Series:
        return frame.groupby(SUMMARY_KEYS)["hardware"].agg(lambda found: "; ".join(sorted(set(found))))

    timed = labels(rows[rows["track"].isin(["edge", "edge-lce", "training_cost"])])
    return timed.combine_first(labels(rows))


# ---------------------------------------------------------------------------------------------- pareto


def is_cost(spec: MetricSpec) -> bool:
    """A cost where lower is better: what a Pareto plot's x axis needs."""
    return spec.role == "cost" and spec.direction == "lower"


def is_quality(spec: MetricSpec) -> bool:
    """A quality where higher is better: what a Pareto plot's y axis needs."""
    return spec.role == "quality" and spec.direction == "higher"


def metric_axes(table: pd.DataFrame, wanted: Callable[[MetricSpec], bool]) -> list[str]:
    """The run-level metric columns of ``table`` whose metadata ``wanted`` accepts, in the order the tracks
    declare their metrics (tracks by slug); columns of one metric family (one name pattern) by name.

    A layer's ``<layer>/<metric>`` column is not a property of the run, so it is never an axis.
    """
    ranks: dict[MetricSpec, int] = {}
    for rank, spec in enumerate(index.metric_specs()):
        ranks.setdefault(spec, rank)
    found = []
    for column in map(str, table.columns):
        spec = column_spec(column)
        per_layer = "/" in column and spec is not None and "layer" in spec.scopes
        if spec is not None and not per_layer and wanted(spec):
            found.append((ranks[spec], column))
    return [column for _, column in sorted(found)]


def cost_axes(table: pd.DataFrame) -> list[str]:
    """Columns of ``table`` a Pareto plot can use as cost (x): the metrics declared as costs, lower is better."""
    return metric_axes(table, is_cost)


def quality_axes(table: pd.DataFrame) -> list[str]:
    """Columns of ``table`` a Pareto plot can use as accuracy (y): qualities, higher is better (``top1`` first)."""
    return metric_axes(table, is_quality)


def metric_legend(track: str) -> pd.DataFrame:
    """What each metric of ``track`` means, from its metadata: unit, which value is better, role, where recorded."""
    rows = [{"metric": spec.name, "unit": spec.unit, "better": "" if spec.direction == "none" else spec.direction,
             "role": spec.role, "recorded": ", ".join(scope or "whole model" for scope in spec.scopes)}
            for spec in index.metric_specs(track)]  # fmt: skip
    return pd.DataFrame(rows, columns=["metric", "unit", "better", "role", "recorded"])


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows no other row dominates (x lower or equal and y higher or equal, one strictly), sorted by x.

    Rows missing x or y are left out; identical points on the front are all kept.
    """
    ordered = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False], kind="stable")
    # Sorted by cost, every earlier row costs at most as much: a row is on the front when it beats all of them.
    best_before = ordered[y].cummax().shift(fill_value=-np.inf)
    strict = ordered[y] > best_before
    pairs = pd.MultiIndex.from_frame(ordered[[x, y]])
    return ordered[pairs.isin(pairs[strict.to_numpy()])]


def pareto_points(table: pd.DataFrame, x: str, y: str = "top1") -> pd.DataFrame:
    """The runs with both ``x`` and ``y``, with ``origin`` ('ours' or 'paper'), ``on_front``, ``seeds`` and
    each axis' standard deviation over seeds as ``<x> std`` and ``<y> std`` (0 with one seed).

    The front is computed over our measurements only: a paper's number, measured under another recipe
    and on other hardware, is shown beside the front but does not move it.
    """
    keys = [c for c in ROW_KEYS if c in table.columns]
    spreads = [c + STD_SUFFIX for c in (x, y)]
    points = table.dropna(subset=[x, y]).reset_index(drop=True)
    points = points.reindex(columns=[*keys, x, y, *spreads, "seeds"])
    points[spreads] = points[spreads].fillna(0.0)
    points["origin"] = np.where(is_reference(points), "paper", "ours")
    front = pareto_front(points[points["origin"] == "ours"], x, y)
    points["on_front"] = points.index.isin(front.index)
    return points


def pareto_defaults(table: pd.DataFrame, costs: Sequence[str], qualities: Sequence[str]) -> tuple[str, str, str]:
    """(task, cost, quality) a Pareto page opens on: the first quality (``top1``), the task where most of our
    runs have it and some cost, and that task's cost with the most such runs (ties: the declared order)."""
    y = qualities[0]
    ours = table[~is_reference(table) & table[y].notna()]
    counts = {(task, x): int(rows[x].notna().sum()) for task, rows in ours.groupby("task") for x in costs}
    if not counts or max(counts.values()) == 0:
        return sorted(table["task"].unique())[0], costs[0], y
    per_task = {task: max(n for (t, _), n in counts.items() if t == task) for task, _ in counts}
    task = min(per_task, key=lambda t: (-per_task[t], t))
    x = min(costs, key=lambda c: (-counts[(task, c)], costs.index(c)))
    return task, x, y


def spread_ties(cost: pd.Series, quality: pd.Series, log: bool, step: float = 0.02, close: float = 0.03) -> pd.Series:
    """Positions to draw points at so that none hides another: points that share a cost and whose qualities lie
    within ``close`` of the quality axis' span of each other are spread sideways around their cost, ``step`` of
    the cost axis' span apart (in decades on a log axis), so that a dozen methods of one BOPs count stay apart.
    Every other point stays at its cost; the data (and the tooltip) keep the true costs."""
    x = np.log10(cost.astype(float).clip(lower=1e-300)) if log else cost.astype(float)
    x_span = float(x.max() - x.min()) or 1.0
    y_span = float(quality.max() - quality.min()) or 1.0
    shifted = x.copy()
    for _, members in x.groupby(x.round(9)):
        if len(members) < 2:
            continue
        ordered = quality[members.index].sort_values(kind="stable")
        # Runs of qualities closer than `close` form one cluster: the points that would overlap.
        cluster = (ordered.diff().fillna(np.inf) > close * y_span).cumsum()
        for _, indices in ordered.groupby(cluster).groups.items():
            offsets = (np.arange(len(indices)) - (len(indices) - 1) / 2) * step * x_span
            shifted[indices] = x[indices] + offsets
    return 10**shifted if log else shifted


# Ten colours (Tableau 10) times eight marker shapes: every method gets a pair of its own, up to 80 methods,
# and neighbours in the legend differ in both.
PALETTE = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac"]  # fmt: skip
SHAPES = ["circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "triangle-left", "triangle-right"]


def method_styles(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Method -> (colour, shape), distinct pairs: the i-th method (sorted) gets colour i mod 10 and shape
    (i + i // 10) mod 8; as 11 and 8 are coprime, no two of the first 80 methods share both."""
    return {method: (PALETTE[i % len(PALETTE)], SHAPES[(i + i // len(PALETTE)) % len(SHAPES)])
            for i, method in enumerate(sorted(set(methods)))}  # fmt: skip


def point_labels(points: pd.DataFrame) -> pd.Series:
    """What a point is called on the plot: its method, variant and deployable; ' (paper)' for a paper's value."""
    label = points["method"] + points["variant"].where(points["variant"] == "", ":" + points["variant"])
    label = label + points["deployable"].where(points["deployable"] == "", " {" + points["deployable"] + "}")
    return label.where(points["origin"] == "ours", label + " (paper)")


def deployable_curves(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """The points of every (method, variant, task, budget, division, source) measured on more than one
    deployable (an elastic method's sub-networks), sorted by ``x``: one curve each."""
    keys = [c for c in ROW_KEYS if c in points.columns and c != "deployable"]
    if points.empty or "deployable" not in points.columns:
        return points.iloc[:0]
    several = points.groupby(keys)["deployable"].transform("nunique") > 1
    return points[several].sort_values([*keys, x], kind="stable")


# ---------------------------------------------------------------------------------------------- grids

# Keys of a grid point besides its facts; where one of them varies among the points, it splits them into panels.
GRID_KEYS = ["variant", "budget", "division", "source"]


def deployable_facts(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per deployable whose records carry facts (``RUN_KEYS``), one column per scalar fact (a number, a
    text, a boolean) of its newest record; facts that are lists or mappings (per-layer bit widths) are left out."""
    if runs.empty or "facts" not in runs:
        return pd.DataFrame(columns=RUN_KEYS)
    rows = runs[runs["facts"] != "{}"].sort_values("timestamp", kind="stable")
    newest = rows.drop_duplicates(RUN_KEYS, keep="last")
    scalars = [{name: value for name, value in json.loads(text).items() if isinstance(value, int | float | str)}
               for text in newest["facts"]]  # fmt: skip
    return pd.concat([newest[RUN_KEYS].reset_index(drop=True), pd.DataFrame(scalars)], axis=1)


def is_number_column(column: pd.Series) -> bool:
    """Numbers (not booleans, which name a choice) in every row."""
    values = column.dropna()
    return len(values) == len(column) and all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_) for v in values
    )


def grid_axes(points: pd.DataFrame, facts: Sequence[str]) -> list[str]:
    """The ``facts`` that are numbers taking more than one value among ``points``: what a grid is drawn over."""
    return [fact for fact in facts if is_number_column(points[fact]) and points[fact].nunique() > 1]


def grid_methods(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Method -> the tasks on which its deployables' facts hold a grid axis (:func:`grid_axes`): the methods
    that ran a sweep as many deployables (a depth x width grid, sub-networks by width), whatever the facts."""
    facts = deployable_facts(runs)
    found: dict[str, list[str]] = {}
    for (method, task), rows in facts.groupby(["method", "task"], sort=True):
        rows = rows.dropna(axis=1, how="all")
        if grid_axes(rows, [c for c in rows.columns if c not in RUN_KEYS]):
            found.setdefault(method, []).append(task)
    return found


@dataclass(frozen=True)
class Grid:
    """One method's deployables on one task as points of a grid: ``points`` has the run keys, a column per fact
    (``facts``), each metric's mean and ``<metric> std`` over seeds, ``seeds`` and ``panel``, a label of what
    else sets a point apart (the other facts that vary, a variant: ``form=deep``; '' where nothing does)."""

    points: pd.DataFrame
    facts: list[str]
    axes: list[str]


def grid(tidy: pd.DataFrame, runs: pd.DataFrame, method: str, task: str, axes: Sequence[str] = ()) -> Grid:
    """The grid of ``method``'s deployables on ``task`` (our measurements only), drawn over ``axes`` (default: the
    first two of :func:`grid_axes`); every other fact or key that varies among the points makes their ``panel``."""
    facts = deployable_facts(runs[(runs["method"] == method) & (runs["task"] == task)]).dropna(axis=1, how="all")
    rows = tidy[(tidy["method"] == method) & (tidy["task"] == task) & ~is_reference(tidy)]
    points = overview_table(rows, metrics=None).merge(facts, on=RUN_KEYS, how="inner")
    named = [c for c in facts.columns if c not in RUN_KEYS]
    shown = list(axes) or grid_axes(points, named)[:2]
    split = [c for c in [*named, *GRID_KEYS] if c not in shown and points[c].nunique() > 1]
    labels = [points[c].map(lambda value, c=c: f"{c}={value}") for c in split]
    panel = functools.reduce(lambda a, b: a + " · " + b, labels) if labels else pd.Series("", index=points.index)
    return Grid(points.assign(panel=panel), named, shown)


# -------------------------------------------------------------------------------------- method, compare

def method_abouts(runs: pd.DataFrame) -> dict[str, dict]:
    """Method -> what its newest record says it is (``Record.about``): for methods the index does not know."""
    if runs.empty or "about" not in runs:
        return {}
    newest = runs.sort_values("timestamp", kind="stable").drop_duplicates("method", keep="last")
    abouts = {method: json.loads(text) for method, text in zip(newest["method"], newest["about"], strict=True)}
    return {method: about for method, about in abouts.items() if about}


def declared_about(slug: str, abouts: Mapping[str, dict] | None = None) -> dict | None:
    """What method ``slug`` is: the index's declaration of a built-in method, else what its records say."""
    spec = index.method(slug)
    if spec is not None:
        return method_about(spec)
    return (abouts or {}).get(slug)


def bits_label(about: Mapping[str, Any] | None) -> str:
    """'1/1', '3/3', '32/32': the weight and activation bit-widths a method declares it deploys at; '' unknown."""
    taxonomy = (about or {}).get("taxonomy") or {}
    if "weight_bits" not in taxonomy:
        return ""
    return f"{taxonomy['weight_bits']}/{taxonomy['activation_bits']}"


def method_info(
    slug: str, runs: pd.DataFrame | None = None, folders: Mapping[str, list[dict]] | None = None
) -> dict[str, Any] | None:
    """What the leaderboard says of method ``slug``: its paper, kind, taxonomy and scale, from the index for a
    built-in method, else from its records (a submission's method records what its registration declared);
    ``submissions``, the distinct submissions of it that ``runs``' records name, or whose ``submission.yaml``
    (``folders``: :func:`folder_submissions`) declares it (team, licence, paper...); ``declared_by``:
    ``registry``, ``records`` or ``submission`` (only its YAML). None when none of them knows the method."""
    abouts = method_abouts(runs[runs["method"] == slug]) if runs is not None and not runs.empty else {}
    about = declared_about(slug, abouts)
    submissions = submissions_of(runs, slug) if runs is not None else []
    known = {submission.get("folder") for submission in submissions}
    submissions += [s for s in (folders or {}).get(slug, []) if s.get("folder") not in known]
    if about is None and submissions:
        # Records written before records carried what their method is: the submission's YAML says a little.
        about = {"paper": submissions[0].get("paper") or {}}
    if about is None:
        return None
    taxonomy = about.get("taxonomy") or {}
    paper = about.get("paper") or {}
    return {
        "slug": slug, "suite": about.get("suite", ""), "kind": about.get("kind", ""), "scale": about.get("scale", ""),
        "summary": about.get("summary", ""), "paper": paper.get("title", ""), "year": paper.get("year", ""),
        "url": paper.get("url", ""), "tags": taxonomy_tags(taxonomy) if taxonomy else [],
        "submissions": submissions,
        "declared_by": "registry" if index.method(slug) is not None else "records" if "kind" in about else "submission",
    }  # fmt: skip


SUBMISSION_FILE = "submission.yaml"


def folder_submissions(roots: Iterable[Path]) -> dict[str, list[dict]]:
    """Method -> the submissions declaring it, read from the ``submission.yaml`` beside each result folder that is
    a submission's (``submissions/<slug>/results``): team, licence, division, open tags, paper, folder. Read as
    data (strict YAML); a file that cannot be read is left out, as ``effbench submit`` would refuse it."""
    found: dict[str, list[dict]] = {}
    for root in roots:
        path = Path(root).parent / SUBMISSION_FILE
        if Path(root).name != "results" or not path.is_file():
            continue
        try:
            data = load_mapping(path, path.read_text(encoding="utf-8"), ValueError, "a mapping")
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        paper = data.get("paper") if isinstance(data.get("paper"), dict) else {}
        submission = {"folder": path.parent.name, "team": str(data.get("team", "")),
                      "licence": str(data.get("licence", "")), "division": str(data.get("division", "")),
                      "open_tags": [str(tag) for tag in data.get("open_tags") or []],
                      "paper": {key: paper.get(key) for key in ("title", "year", "url") if key in paper}}  # fmt: skip
        for ref in data.get("methods") or []:
            found.setdefault(str(ref).split(":")[0], []).append(submission)
    return found


def submissions_of(runs: pd.DataFrame, slug: str) -> list[dict]:
    """The distinct ``about.submission`` entries of method ``slug``'s records (who submitted it, with what)."""
    if runs.empty or "about" not in runs:
        return []
    found = {}
    for text in runs.loc[runs["method"] == slug, "about"]:
        submission = json.loads(text).get("submission")
        if submission:
            found[json.dumps(submission, sort_keys=True)] = submission
    return list(found.values())


def taxonomy_tags(taxonomy: Mapping[str, Any]) -> list[str]:
    """Short labels for a taxonomy (``effbench.registry.Taxonomy`` as a mapping), as the leaderboard shows them."""
    tags = [f"W{taxonomy.get('weight_bits')}/A{taxonomy.get('activation_bits')}", f"applied: {taxonomy.get('applied')}",
            f"data: {taxonomy.get('data')}"]  # fmt: skip
    if taxonomy.get("structured") is not None:
        tags.append("structured sparsity" if taxonomy["structured"] else "unstructured sparsity")
    if taxonomy.get("dynamic"):
        tags.append("dynamic")
    return tags


def method_catalog(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per method with records: ``method``, ``suite``, ``paper`` (title and year), for the search box."""
    if runs.empty:
        return pd.DataFrame(columns=["method", "suite", "paper"])
    abouts = method_abouts(runs)
    rows = []
    for slug, suite in runs[["method", "suite"]].drop_duplicates("method").itertuples(index=False):
        paper = (declared_about(slug, abouts) or {}).get("paper") or {}
        title = f"{paper['title']} ({paper.get('year', '')})" if paper.get("title") else ""
        rows.append({"method": slug, "suite": suite, "paper": title})
    return pd.DataFrame(rows).sort_values("method", ignore_index=True)


def search_methods(catalog: pd.DataFrame, query: str) -> pd.DataFrame:
    """The methods of ``catalog`` whose slug, suite or paper title holds every word of ``query`` (any case);
    slugs that start with the query first."""
    words = query.lower().split()
    if not words or catalog.empty:
        return catalog.iloc[:0]
    text = (catalog["method"] + " " + catalog["suite"] + " " + catalog["paper"]).str.lower()
    found = catalog[[all(word in row for word in words) for row in text]]
    starts = found["method"].str.lower().str.startswith(query.lower().strip())
    return found.assign(_first=~starts).sort_values(["_first", "method"]).drop(columns="_first")


def method_runs(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    """A method's records: what was run, on what hardware, with which versions, commit and config."""
    if runs.empty:
        return runs
    rows = runs[runs["method"] == method]
    versions = sorted(c for c in runs.columns if c.startswith("v_"))
    columns = ["track", "task", "variant", "deployable", "seed", "budget", "division", "source", "hardware",
               "git_commit", "timestamp", *versions, "run_id", "config_hash", "config"]  # fmt: skip
    rows = rows[columns].sort_values(["task", "track", "seed"], ignore_index=True)
    # A paper's value ran on no commit of ours: say so instead of its placeholder 'none'.
    return rows.assign(git_commit=rows["git_commit"].where(~is_reference(rows), NOT_RUN_HERE))


def _newest_facts(runs: pd.DataFrame, method: str) -> list[tuple[tuple[str, str, str], dict]]:
    """((task, variant, deployable), facts) of the newest record of each of the method's deployables with facts."""
    if runs.empty or "facts" not in runs:
        return []
    rows = runs[(runs["method"] == method) & (runs["facts"] != "{}")].sort_values("timestamp")
    newest = rows.drop_duplicates(["task", "variant", "deployable"], keep="last")
    keys = zip(newest["task"], newest["variant"], newest["deployable"], strict=True)
    return sorted((key, json.loads(text)) for key, text in zip(keys, newest["facts"], strict=True))


def bit_width_table(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    """The per-layer bit widths a mixed-precision method chose (facts ``bit_widths``), per task and deployable."""
    rows = [
        {"task": task, "variant": variant, "deployable": deployable, "layer": layer, "w_bits": w, "a_bits": a}
        for (task, variant, deployable), facts in _newest_facts(runs, method)
        for layer, (w, a) in facts.get("bit_widths", {}).items()
    ]
    return pd.DataFrame(rows, columns=["task", "variant", "deployable", "layer", "w_bits", "a_bits"])


def facts_table(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    """Every other fact of the method's deployables (calibration data, budgets), one row per fact, as JSON text."""
    rows = [
        {"task": task, "variant": variant, "deployable": deployable, "fact": name,
         "value": json.dumps(value, sort_keys=True)}
        for (task, variant, deployable), facts in _newest_facts(runs, method)
        for name, value in sorted(facts.items()) if name != "bit_widths"
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["task", "variant", "deployable", "fact", "value"])


NOT_RUN_HERE = "not run here (a paper's value)"
DIRTY_SUFFIX = "+dirty"


def dirty_records(runs: pd.DataFrame) -> int:
    """How many records were measured from a working tree with uncommitted changes: their code is not a commit."""
    return int(runs["git_commit"].astype(str).str.endswith(DIRTY_SUFFIX).sum()) if not runs.empty else 0


def layer_table(tidy: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per-layer complexity of a method (complexity rows with a scope), layers in graph order, mean over seeds."""
    if tidy.empty:
        return pd.DataFrame()
    rows = tidy[(tidy["method"] == method) & (tidy["track"] == "complexity") & (tidy["scope"] != "")]
    rows = rows.assign(number=pd.to_numeric(rows["value"], errors="coerce")).dropna(subset=["number"])
    if rows.empty:
        return pd.DataFrame()
    index = ["task", "variant", "budget", "division", "scope"]
    table = rows.pivot_table(index=index, columns="metric", values="number", aggfunc="mean", sort=False)
    return table.reset_index().rename(columns={"scope": "layer"}).rename_axis(columns=None)


def method_curves(curves: pd.DataFrame, method: str) -> pd.DataFrame:
    """A method's training curves, each labelled with its run ('task · variant · budget · seed N')."""
    rows = curves[curves["method"] == method] if not curves.empty else curves
    if rows.empty:
        return rows
    variant = rows["variant"].where(rows["variant"] == "", " · " + rows["variant"])
    label = rows["task"] + variant + " · " + rows["budget"] + " · seed " + rows["seed"].astype(str)
    return rows.assign(run=label)


def run_labels(table: pd.DataFrame) -> pd.Series:
    """'method [variant] {deployable} · task · budget · division', ' · paper' for a paper's values."""
    variant = table["variant"].where(table["variant"] == "", " [" + table["variant"] + "]")
    deployable = table["deployable"].where(table["deployable"] == "", " {" + table["deployable"] + "}")
    label = (table["method"] + variant + deployable + " · " + table["task"] + " · " + table["budget"] + " · "
             + table["division"])
    return label.where(~is_reference(table), label + " · paper")


def compare_table(overview: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """2 to 4 methods side by side, as text: one column per run of theirs, one row per metric ('mean ± std'),
    plus ``source`` and ``seeds``. ``overview`` is :func:`overview_table`'s."""
    if not 2 <= len(methods) <= 4:
        raise ValueError(f"compare 2 to 4 methods, not {len(methods)}")
    rows = overview[overview["method"].isin(methods)]
    rows = rows.assign(_order=rows["method"].map({m: i for i, m in enumerate(methods)}))
    rows = rows.sort_values(["_order", "task", "variant", "budget"], kind="stable").drop(columns="_order")
    text = format_overview(rows).astype(str)
    shown = ["source", *(c for c in text.columns if c not in [*ROW_KEYS, "seeds"]), "seeds"]
    table = text.set_index(run_labels(rows))[shown].T.rename_axis(index="metric", columns=None)
    return table[(table != "").any(axis=1)]  # a metric none of them has is no comparison


def to_csv(frame: pd.DataFrame) -> bytes:
    """A frame as CSV bytes, full precision (the download of the filtered table)."""
    return frame.to_csv(index=False).encode()
