"""``effbench plot``: a quality against any other metric, per method, drawn from the records as a PNG.

One line per series: a method, or a method and the values of the ``--series`` options of its variants (``bits``
for a sweep over bit widths and depths). Its points are its variants and deployables in x order, each at the
mean over seeds, with the standard deviation over seeds as error bars on both axes; papers' values are hollow
stars. Where the runs carry their FP32 twin's top-1 (``fp32_top1``), each twin's value is a dashed line.

Any metric can be an axis: a whole-model one (``sparsity``, ``size_bits``, ``top1``) or a scoped one as
``<scope>/<metric>`` (``deployed/size_bytes``). The docs' curves of accuracy against sparsity or bits are made
with it (``make figures``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from effbench.method import MethodRef
from leaderboard import tables

# Altair's shape names (tables.method_styles) as matplotlib's markers.
MARKERS = {"circle": "o", "square": "s", "triangle-up": "^", "diamond": "D", "triangle-down": "v", "cross": "P",
           "triangle-left": "<", "triangle-right": ">"}  # fmt: skip
TWIN = "fp32_top1"


def series_name(method: str, variant: str, options: Sequence[str]) -> str:
    """``method``, or ``method key=value ...`` for the ``options`` its variant sets."""
    chosen = dict(MethodRef.parse(f"{method}:{variant}" if variant else method).options)
    named = [f"{key}={chosen[key]}" for key in options if key in chosen]
    return " ".join([method, *named])


def curve_points(tidy: pd.DataFrame, x: str, y: str, options: Sequence[str] = ()) -> pd.DataFrame:
    """Per run (``tables.ROW_KEYS``): ``x``, ``y``, their std over seeds, ``seeds``, ``series`` and ``origin``.

    Runs without both axes are left out; so is the FP32 twin's value, kept as the ``fp32_top1`` column.
    """
    wanted = [x, y, TWIN]
    scoped = {metric.split("/", 1)[1] for metric in wanted if "/" in metric}
    table = tables.overview_table(tidy, wanted, scoped=scoped.__contains__)
    points = table.dropna(subset=[c for c in (x, y) if c in table.columns])
    if x not in points or y not in points or points.empty:
        return pd.DataFrame(columns=[*tables.ROW_KEYS, x, y, "series", "origin"])
    points = points.assign(
        series=[series_name(m, v, options) for m, v in zip(points["method"], points["variant"], strict=True)],
        origin=np.where(tables.is_reference(points), "paper", "ours"),
    )
    return points.sort_values(["series", x], kind="stable", ignore_index=True)


def draw(points: pd.DataFrame, x: str, y: str, title: str, out: Path, log_x: bool = False, front: bool = False) -> None:
    """The figure of :func:`curve_points` ``points``, saved as ``out`` (PNG); ``front``: with the Pareto front of
    our runs (``x`` lower and ``y`` higher is better) as a black step line through its points."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    styles = tables.method_styles(points["series"])
    figure, axes = plt.subplots(figsize=(11, 6.5), dpi=110)
    for series, rows in points.groupby("series", sort=True):
        colour, shape = styles[series]
        ours, paper = rows[rows["origin"] == "ours"], rows[rows["origin"] == "paper"]
        if not ours.empty:
            axes.errorbar(ours[x], ours[y], xerr=_spread(ours, x), yerr=_spread(ours, y), color=colour,
                          marker=MARKERS[shape], markersize=6, linewidth=1.4, capsize=3, label=series)  # fmt: skip
        if not paper.empty:
            axes.scatter(paper[x], paper[y], marker="*", s=160, facecolors="none", edgecolors=colour,
                         label=f"{series} (paper)")  # fmt: skip
    if front:
        best = tables.pareto_front(points[points["origin"] == "ours"], x, y)
        axes.step(best[x], best[y], where="post", color="black", linewidth=1, alpha=0.6, zorder=0,
                  label="Pareto front (ours)")  # fmt: skip
    if TWIN in points and y == "top1":
        for value in sorted(points.loc[points["origin"] == "ours", TWIN].dropna().round(4).unique()):
            axes.axhline(value, color="0.45", linestyle="--", linewidth=1)
            axes.annotate(f"FP32 twin {value:.3f}", (1, value), xycoords=("axes fraction", "data"), ha="right",
                          va="bottom", fontsize=8, color="0.35")  # fmt: skip
    if log_x:
        axes.set_xscale("log")
    axes.set(xlabel=x, ylabel=y, title=title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)


def _spread(rows: pd.DataFrame, column: str) -> np.ndarray | None:
    spread = rows.get(column + tables.STD_SUFFIX)
    return None if spread is None or spread.isna().all() else spread.fillna(0.0).to_numpy()
