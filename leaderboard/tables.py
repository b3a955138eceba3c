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
from effbench.records import TEMP_PREFIX, Record, ResultStore, tidy_rows
from effbench.registry import MetricSpec
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
CACHE_LAYOUT = 2
CACHE_KEY = b"effbench_cache_key"
METRIC_COLUMNS = ("metric", "value", "unit", "scope")
CURVE_KEYS = ["config_hash", "suite", "method", "variant", "deployable", "task", "track", "seed", "budget", "division",
              "source", "hardware"]  # fmt: skip
RESULTS_ENV = "EFFBENCH_RESULTS"


# --------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ResultFrames:
    """What the leaderboard reads from result folders.

    ``tidy``: one row per metric (``tidy_rows`` columns plus ``hardware``; numbers as floats);
    ``runs``: one row per record, with ``config`` and ``files`` as JSON text;
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
    tidy = _repeat_rows(runs.drop(columns=["config", "files"]), [len(record.metrics) for record in records], {
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
    return row


def _repeat_rows(parent: pd.DataFrame, counts: Sequence[int], columns: Mapping[str, Any]) -> pd.DataFrame:
    """Row i of ``parent`` repeated ``counts[i]`` times, side by side with ``columns`` (one value per row)."""
    repeated = parent.iloc[np.repeat(np.arange(len(parent)), counts)].reset_index(drop=True)
    return pd.concat([repeated, pd.DataFrame(dict(columns))], axis=1)


def hardware_labels(runs: pd.DataFrame) -> pd.Series:
    """'<cpu>, <n> threads' plus the GPUs when there are any: one label per row to filter on."""

    def column(name: str) -> pd.Series:
        return runs[name].astype(str) if name in runs else pd.Series("", index=runs.index)

    label = column("hw_cpu") + ", " + column("hw_cpu_threads") + " threads"
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
    """The records of every folder in ``roots``, through each folder's cache when ``cache``."""
    parts = [_load_root(Path(root), cache) for root in roots]
    return ResultFrames(*(_concat([getattr(part, f.name) for part in parts]) for f in fields(ResultFrames)))


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
    (``os.pathsep``-separated), else the committed results of ``repo``: ``results/baselines``, every other folder
    of ``results/`` but ``demo`` (``make demo``'s scratch output), and every ``submissions/*/results``."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--results", nargs="+", type=Path, default=[])
    given = parser.parse_known_args(list(argv))[0].results
    if given:
        return given
    if environ.get(RESULTS_ENV):
        return [Path(part) for part in environ[RESULTS_ENV].split(os.pathsep) if part]
    suites = sorted(p for p in (repo / "results").glob("*") if p.is_dir() and p.name not in ("baselines", "demo"))
    return [repo / "results" / "baselines", *suites, *sorted(repo.glob("submissions/*/results"))]


# --------------------------------------------------------------------------------------------- filters


def filter_options(tidy: pd.DataFrame) -> dict[str, list]:
    """The values each filter can take, sorted."""
    return {column: sorted(tidy[column].dropna().unique().tolist()) for column in FILTER_COLUMNS if column in tidy}


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
    that track's metrics are kept and its scoped ones become ``<scope>/<metric>`` columns.
    """
    if tidy.empty:
        return pd.DataFrame(columns=[*RUN_KEYS, "seeds"])
    if track is not None:
        tidy = tidy[tidy["track"] == track].copy()
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
    """:func:`pivot_runs` of the measured records: papers' values are never averaged into ours."""
    if "source" in tidy.columns:
        tidy = tidy[tidy["source"] == "measured"]
    return pivot_runs(tidy, track)


def track_table(tidy: pd.DataFrame, track: str) -> pd.DataFrame:
    """:func:`results_table` of one track, scoped metrics included, with paper values in rows of their own."""
    tidy = tidy[tidy["track"] == track] if not tidy.empty else tidy
    if tidy.empty:
        return pd.DataFrame(columns=[*RUN_KEYS, "source", "seeds"])
    parts = [pivot_runs(rows, track).assign(source=source) for source, rows in tidy.groupby("source")]
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
SUMMARY_KEYS = ["task", "method", "variant", "deployable", "division"]


def suite_summary(tidy: pd.DataFrame, suite: str, protocol: SuiteProtocol | None = None) -> pd.DataFrame:
    """One row per run of ``suite`` (:data:`SUMMARY_KEYS`) with the columns its protocol declares.

    ``protocol`` is the suite's from the index unless given. Its ``summary_columns`` (column -> (scope,
    metric)) as 'mean ± std' over seeds, then ``seeds``, a column per ``summary_outcomes`` scope saying how
    that converted variant fared (:func:`_conversion_outcomes`; empty where the edge track did not run),
    and ``hardware``. Sorted by task, then by the protocol's ``summary_sort`` column, best first. Paper
    values are left out (they are not runs).
    """
    protocol = protocol or index.protocol(suite)
    metrics, outcomes = dict(protocol.summary_columns), list(protocol.summary_outcomes)
    rows = tidy[(tidy["suite"] == suite) & ~is_reference(tidy)] if not tidy.empty else tidy
    columns = [*SUMMARY_KEYS, *metrics, "seeds", *outcomes, "hardware"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    wanted = {(scope, metric): name for name, (scope, metric) in metrics.items()}
    keys = list(zip(rows["scope"], rows["metric"], strict=True))
    picked = rows.assign(column=[wanted.get(key) for key in keys]).dropna(subset=["column"])
    picked = picked.assign(number=pd.to_numeric(picked["value"], errors="coerce")).dropna(subset=["number"])
    per_seed = picked.pivot_table(index=[*SUMMARY_KEYS, "seed"], columns="column", values="number", aggfunc="mean")
    groups = per_seed.groupby(level=SUMMARY_KEYS)
    present = [name for name in metrics if name in per_seed.columns]
    table = pd.DataFrame({
        name: [mean_std_text(m, s) for m, s in zip(groups[name].mean(), groups[name].std(), strict=True)]
        for name in present
    }, index=groups[present[0]].mean().index)  # fmt: skip
    table = table.assign(seeds=groups.size(), hardware=_hardware(rows))
    for scope in outcomes:
        table[scope] = _conversion_outcomes(rows, scope)
    sort = protocol.summary_sort
    table["sort_key"] = groups[sort].mean() if sort in present else 0.0
    table = table.reset_index().sort_values(["task", "sort_key"], ascending=[True, False], kind="stable")
    return table.reindex(columns=columns).fillna("").reset_index(drop=True)


def _conversion_outcomes(rows: pd.DataFrame, scope: str) -> pd.Series:
    """Per run: 'converted' where every seed's ``scope`` variant (``lce``, ``int8``) converted and ran; else
    the first seed's error, as 'failed: <converter error>' or 'run failed: <interpreter error>' (converted,
    but its interpreter cannot run it).
    """
    variant = rows[rows["scope"] == scope]
    converted = variant[variant["metric"] == "converted"].groupby(SUMMARY_KEYS)["value"].min()
    outcome = converted.map(lambda v: "converted" if float(v) == 1 else "failed")
    for metric, prefix in (("run_error", "run failed: "), ("converter_error", "failed: ")):
        errors = variant[variant["metric"] == metric].groupby(SUMMARY_KEYS)["value"].first()
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
    """The runs with both ``x`` and ``y``, with ``origin`` ('ours' or 'paper') and ``on_front``.

    The front is computed over our measurements only: a paper's number, measured under another recipe
    and on other hardware, is shown beside the front but does not move it.
    """
    keys = [c for c in ROW_KEYS if c in table.columns]
    points = table.dropna(subset=[x, y])[[*keys, x, y]].reset_index(drop=True)
    points["origin"] = np.where(is_reference(points), "paper", "ours")
    front = pareto_front(points[points["origin"] == "ours"], x, y)
    points["on_front"] = points.index.isin(front.index)
    return points


def deployable_curves(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """The points of every (method, variant, task, budget, division, source) measured on more than one
    deployable (an elastic method's sub-networks), sorted by ``x``: one curve each."""
    keys = [c for c in ROW_KEYS if c in points.columns and c != "deployable"]
    if points.empty or "deployable" not in points.columns:
        return points.iloc[:0]
    several = points.groupby(keys)["deployable"].transform("nunique") > 1
    return points[several].sort_values([*keys, x], kind="stable")


# -------------------------------------------------------------------------------------- method, compare

def method_info(slug: str) -> dict[str, Any] | None:
    """The built-in method ``slug`` (paper, kind, taxonomy, scale) as the index has it; None for another method
    (one a submission registers, or one this checkout does not have)."""
    spec = index.method(slug)
    if spec is None:
        return None
    return {
        "slug": spec.slug, "suite": spec.suite, "kind": spec.kind, "scale": spec.scale, "summary": spec.summary,
        "paper": spec.paper.title, "year": spec.paper.year, "url": spec.paper.url,
        "tags": taxonomy_tags(spec.taxonomy),
    }  # fmt: skip


def taxonomy_tags(taxonomy: Any) -> list[str]:
    """Short labels for an ``effbench.registry.Taxonomy``, as the leaderboard shows them."""
    tags = [f"W{taxonomy.weight_bits}/A{taxonomy.activation_bits}", f"applied: {taxonomy.applied}",
            f"data: {taxonomy.data}"]  # fmt: skip
    if taxonomy.structured is not None:
        tags.append("structured sparsity" if taxonomy.structured else "unstructured sparsity")
    if taxonomy.dynamic:
        tags.append("dynamic")
    return tags


def method_runs(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    """A method's records: what was run, on what hardware, with which versions, commit and config."""
    if runs.empty:
        return runs
    rows = runs[runs["method"] == method]
    versions = sorted(c for c in runs.columns if c.startswith("v_"))
    columns = ["track", "task", "variant", "deployable", "seed", "budget", "division", "source", "hardware",
               "git_commit", "timestamp", *versions, "config_hash", "config"]  # fmt: skip
    return rows[columns].sort_values(["task", "track", "seed"], ignore_index=True)


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
    return text.set_index(run_labels(rows))[shown].T.rename_axis(index="metric", columns=None)


def to_csv(frame: pd.DataFrame) -> bytes:
    """A frame as CSV bytes, full precision (the download of the filtered table)."""
    return frame.to_csv(index=False).encode()
