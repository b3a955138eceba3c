"""Pandas tables built from records. Everything the leaderboard shows is computed here."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from effbench.records import Record, ResultStore, tidy_rows

RUN_KEYS = ["method", "variant", "task", "budget", "division"]
# Leading columns of the results table, in reading order; every other metric follows alphabetically.
LEADING_METRICS = ["top1", "top5", "top1_relative", "fp32_top1", "loss", "ece", "params", "macs",
                   "flops", "bops", "size_bits"]  # fmt: skip


def records_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per metric of every record (the tidy table)."""
    rows = [row for record in records for row in tidy_rows(record)]
    return pd.DataFrame(rows)


def load_results(*roots: Path | str) -> pd.DataFrame:
    return records_frame(record for root in roots for record in ResultStore(root).records())


def results_table(tidy: pd.DataFrame, track: str | None = None) -> pd.DataFrame:
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


def human_number(value: float) -> str:
    """Four significant digits; counts of ten thousand and more with a K/M/G/T suffix."""
    for threshold, unit, suffix in ((1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / unit:.4g}{suffix}"
    return f"{value:.4g}"


def format_table(table: pd.DataFrame, fmt: str) -> str:
    """``csv`` (full precision), ``markdown`` or ``text`` (both rounded for reading)."""
    if fmt == "csv":
        return table.to_csv(index=False)
    readable = table.copy()
    for column in readable.columns:
        if pd.api.types.is_float_dtype(readable[column]):
            readable[column] = readable[column].map(lambda v: "" if pd.isna(v) else human_number(v))
    if fmt == "markdown":
        return readable.to_markdown(index=False)
    return readable.to_string(index=False)
