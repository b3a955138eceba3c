"""The EffBench leaderboard, a Streamlit app. It only lays out: every table comes from ``leaderboard.tables``.

    streamlit run leaderboard/app.py -- --results DIR [DIR ...]
    effbench leaderboard [--results DIR ...] [--port N] [--headless]

Result folders: ``--results`` after ``--``; else ``$EFFBENCH_RESULTS`` (folders separated by ``os.pathsep``);
else the committed results (``results/baselines``, the other ``results/*`` but ``demo``, every
``submissions/*/results``) of the project in the current folder, or of this checkout when it has none.

Views are shareable: the page, the filters and each page's choices are bound to the URL's query parameters,
named by the widgets' keys (``?page=Pareto&pareto_task=digits&cost=bops``), so a link opens the same view.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from effbench import index
from effbench.records import RecordConflict, RecordError
from leaderboard import tables

REPO = Path(__file__).resolve().parent.parent
PAPER_NOTE = ("`paper [n]` rows are values a paper reports, shown beside ours, not measured here. Source `ours`: "
              "EffBench measured its own method; `sandbox` / `verified`: a submission's, measured in the sandbox / "
              "from its files by a process that never ran its code.")  # fmt: skip
NOISY_NOTE = (f"`noisy timings`: timings whose timed calls spread more than cv = std / mean = {tables.NOISY_CV} in "
              "some seed (worst seed shown): the machine was busy; re-measure them on an idle one.")  # fmt: skip
# Widgets whose value is part of the URL (their key is the query parameter).
URL = "query-params"

# Row and header height of st.dataframe, and the width of a character of its font, in pixels.
ROW_PX, SCROLLBAR_PX, CHAR_PX, CELL_PAD_PX, MIN_COLUMN_PX, MAX_COLUMN_PX = 35, 16, 7.6, 28, 48, 480


@dataclass(frozen=True)
class Context:
    """What every page may read besides the filtered frames: the unfiltered records' knowledge of methods."""

    abouts: dict[str, dict]
    runs: pd.DataFrame
    # Method -> the submissions whose submission.yaml declares it (tables.folder_submissions).
    submissions: dict[str, list[dict]]


def column_widths(table: pd.DataFrame) -> dict[str, int]:
    """Each column as wide as its longest text (header or cell), so no cell is cut ('1.171M ± 12K')."""
    widths = {}
    for column in table.columns:
        longest = max([len(str(column)), *(len(str(value)) for value in table[column].head(500))])
        widths[str(column)] = int(min(MAX_COLUMN_PX, max(MIN_COLUMN_PX, longest * CHAR_PX + CELL_PAD_PX)))
    return widths


def show(table: pd.DataFrame) -> None:
    """A sortable table, every row visible (no inner vertical scrolling), each column as wide as its content."""
    height = ROW_PX * (len(table) + 1) + SCROLLBAR_PX
    config = {column: st.column_config.Column(width=width) for column, width in column_widths(table).items()}
    st.dataframe(table, hide_index=True, height=height, column_config=config, placeholder="")  # no 'None' for NaN


def show_view(view: tables.View) -> pd.DataFrame:
    """A :class:`tables.View`: the constants above, the table, the papers cited below; returns the table."""
    if view.constants:
        st.caption(" · ".join(f"{key}: **{value}**" for key, value in view.constants.items()) + " (every row)")
    show(view.table)
    if view.citations:
        st.caption("  \n".join(f"[{n}] {markdown_text(citation)}" for n, citation in view.citations.items()))
    return view.table


def markdown_text(text: str) -> str:
    """``text`` shown as it is by st.markdown: records and submissions may hold '*', '_', '[' or '<'."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", str(text))


def download(view: pd.DataFrame, name: str) -> None:
    st.sidebar.download_button("Download this view (CSV)", tables.to_csv(view), file_name=f"effbench-{name}.csv",
                               mime="text/csv", key="download_view", help="this page's tables, as shown")  # fmt: skip


# ------------------------------------------------------------------------------------------------ pages


def overview_page(frames: tables.ResultFrames, context: Context) -> pd.DataFrame:
    """Per suite, per task: the columns the suite's protocol declares for its summary."""
    st.header("Overview")
    as_numbers = st.toggle("numbers (each column sortable; off: mean ± std as text)", key="numbers", bind=URL)
    noisy = tables.noisy_timings(frames.tidy)
    shown = []
    for suite in sorted(frames.tidy["suite"].unique()):
        protocol = index.protocol(suite)
        table = tables.suite_table(frames.tidy, suite, protocol, context.abouts)
        if table.empty:
            continue
        st.subheader(f"Suite: {suite}")
        st.caption(protocol.description)
        timings = {name: f"{scope}/{metric}" if scope else metric
                   for name, (scope, metric) in protocol.summary_columns.items()}  # fmt: skip
        for task, part in tables.split_by(table, "task").items():
            st.markdown(f"**Task: {task}**")
            view = tables.reading_view(part, noisy, timings, as_text=not as_numbers)
            shown.append(show_view(view).assign(suite=suite, task=task))
    if not shown:
        st.info("The chosen records hold no metric the suites' summaries show.")
        return pd.DataFrame()
    st.caption(f"{PAPER_NOTE} W/A: the bit-widths of weights and activations the method declares. {NOISY_NOTE}")
    return pd.concat(shown, ignore_index=True)


def tracks_page(frames: tables.ResultFrames, context: Context) -> pd.DataFrame:
    """One track: its whole-model metrics, then one scoped metric across its scopes (variants, corruptions)."""
    st.header("Tracks")
    track = st.selectbox("Track", sorted(frames.tidy["track"].unique()), key="view_track", bind=URL)
    noisy = tables.noisy_timings(frames.tidy)
    table = tables.track_table(frames.tidy, track, scoped=False)
    shown = []
    if len(table) and len(table.columns) > len(tables.RUN_KEYS) + 2:
        st.subheader("Whole-model metrics")
        shown.append(show_view(tables.reading_view(table, noisy, as_text=False)).assign(metrics="whole model"))
    scoped = tables.scoped_metrics(frames.tidy, track)
    if scoped:
        st.subheader("Per variant, per corruption")
        metric = st.selectbox("Metric recorded per scope", scoped, key="view_scoped", bind=URL)
        per_scope = tables.scoped_table(frames.tidy, track, metric)
        timings = {scope: f"{scope}/{metric}" for scope in per_scope.columns}
        shown.append(show_view(tables.reading_view(per_scope, noisy, timings, as_text=False)).assign(metrics=metric))
    if frames.tidy[(frames.tidy["track"] == track) & tables.is_layer_row(frames.tidy)].shape[0]:
        st.caption("Per-layer numbers are on the Method page.")
    if not shown:
        st.info(f"No numeric metric of track '{track}' in the chosen records.")
        return pd.DataFrame()
    st.caption(f"Means over seeds (`seeds` counts them). {PAPER_NOTE} {NOISY_NOTE}")
    with st.expander("What the metrics mean"):
        show(tables.metric_legend(track))
    return pd.concat(shown, ignore_index=True)


def pareto_chart(points: pd.DataFrame, x: str, y: str, log_x: bool, every_method: list[str]) -> alt.LayerChart:
    """Every run a marker of its method's own colour and shape (papers' values hollow), mean ± std over seeds as
    error bars, equal costs spread sideways, our Pareto front as a step line with its points labelled, and each
    method with several deployables as a dashed curve through them. A method's colour and shape are its own among
    ``every_method`` (all the records'), so they stay the same whatever the filters, task or axes."""
    # Metric names such as 'int8/litert_t1_median_ms' are renamed: Vega-Lite reads '.' and '[' in field names.
    data = points.rename(columns={x: "cost", y: "accuracy", f"{x}{tables.STD_SUFFIX}": "cost_std",
                                  f"{y}{tables.STD_SUFFIX}": "accuracy_std"})  # fmt: skip
    data = data.assign(shown_cost=tables.spread_ties(data["cost"], data["accuracy"], log_x),
                       label=tables.point_labels(data),
                       provenance=tables.source_labels(data)[0]["source"])  # fmt: skip
    data = data.assign(low=data["accuracy"] - data["accuracy_std"], high=data["accuracy"] + data["accuracy_std"],
                       left=(data["shown_cost"] - data["cost_std"]).clip(lower=data["shown_cost"] / 10),
                       right=data["shown_cost"] + data["cost_std"])  # fmt: skip
    styles = tables.method_styles(every_method)
    methods = sorted(set(data["method"]))
    scale = alt.Scale(type="log" if log_x else "linear")
    x_axis = alt.X("shown_cost:Q", title=x, scale=scale)
    y_axis = alt.Y("accuracy:Q", title=y, scale=alt.Scale(zero=False))
    # Below the plot, in columns: every method listed, however many (a legend beside it is cut off at ~20).
    legend = alt.Legend(title="method", orient="bottom", columns=6, symbolLimit=0, labelLimit=170)
    color = alt.Color("method:N", scale=alt.Scale(domain=methods, range=[styles[m][0] for m in methods]),
                      legend=legend)  # fmt: skip
    shape = alt.Shape("method:N", scale=alt.Scale(domain=methods, range=[styles[m][1] for m in methods]),
                      legend=legend)  # fmt: skip
    tooltip = ["label", "task", "budget", "division", "provenance", alt.Tooltip("cost:Q", title=x, format=",.6~g"),
               alt.Tooltip("cost_std:Q", title=f"{x} std", format=",.3~g"),
               alt.Tooltip("accuracy:Q", title=y, format=".4f"),
               alt.Tooltip("accuracy_std:Q", title=f"{y} std", format=".4f"), "seeds", "on_front"]  # fmt: skip
    base = alt.Chart(data)
    front = alt.Chart(data[data["on_front"]]).mark_line(interpolate="step-after", color="#888").encode(
        alt.X("cost:Q", scale=scale), y_axis
    )
    spread = data[(data["accuracy_std"] > 0) | (data["cost_std"] > 0)]
    y_bars = alt.Chart(spread).mark_rule(opacity=0.6).encode(x_axis, alt.Y("low:Q"), alt.Y2("high:Q"), color=color)
    x_bars = alt.Chart(spread).mark_rule(opacity=0.6).encode(alt.X("left:Q", scale=scale), alt.X2("right:Q"), y_axis,
                                                             color=color)  # fmt: skip
    ours = base.transform_filter(alt.datum.origin == "ours").mark_point(size=110, filled=True, opacity=0.9)
    papers = base.transform_filter(alt.datum.origin == "paper").mark_point(size=190, filled=False, strokeWidth=2.5)
    ours, papers = (marks.encode(x_axis, y_axis, color=color, shape=shape, tooltip=tooltip) for marks in (ours, papers))
    labelled = data[data["on_front"] | (data["origin"] == "paper")]
    labels = alt.Chart(labelled).mark_text(align="left", dx=9, dy=-9, fontSize=11).encode(
        x_axis, y_axis, text="label:N", color=alt.value("#333")
    )
    # A method with several deployables (an elastic method's sub-networks) is one curve, in cost order.
    curves = tables.deployable_curves(data, "cost")
    curve = alt.Chart(curves).mark_line(strokeDash=[4, 2]).encode(
        x_axis, y_axis, color=color, detail="variant:N", order="cost:Q"
    )
    return alt.layer(front, curve, y_bars, x_bars, ours, papers, labels).properties(height=480)


def pareto_page(frames: tables.ResultFrames, context: Context) -> pd.DataFrame:
    st.header("Pareto: quality against cost")
    table = tables.overview_table(frames.tidy, metrics=None, scoped=tables.is_latency_metric)
    costs, qualities = tables.cost_axes(table), tables.quality_axes(table)
    if not costs or not qualities:
        st.info("A Pareto plot needs a quality (the accuracy track) and a cost (complexity, latency or edge).")
        return pd.DataFrame()
    task, cost, quality = tables.pareto_defaults(table, costs, qualities)
    tasks = sorted(table["task"].unique())
    task = st.selectbox("Task", tasks, index=tasks.index(task), key="pareto_task", bind=URL)
    x = st.selectbox("Cost (x, lower is better)", costs, index=costs.index(cost), key="cost", bind=URL)
    y = st.selectbox("Quality (y, higher is better)", qualities, index=qualities.index(quality), key="quality",
                     bind=URL)  # fmt: skip
    log_x = st.checkbox("logarithmic cost axis", value=True, key="log", bind=URL)
    points = tables.pareto_points(table[table["task"] == task], x, y)
    if points.empty:
        st.info(f"No run on {task} has both {x} and {y}: choose another task or cost.")
        return pd.DataFrame()
    chart = pareto_chart(points, x, y, log_x, sorted(context.runs["method"].unique()))
    # The element's height, set: left to Streamlit, the legend below squeezes the plot.
    legend_rows = -(-points["method"].nunique() // 6)
    st.altair_chart(chart, width="stretch", height=480 + 90 + 30 * legend_rows)
    st.caption("Filled markers: our runs, one colour and shape per method; hollow: values papers report (they do "
               "not move our front). Bars: mean ± std over seeds. Line: our Pareto front (no other run of ours is "
               "both cheaper and better), its points labelled. Runs of equal cost are spread sideways; hover "
               "for the exact numbers.")  # fmt: skip
    return show_view(tables.reading_view(points.drop(columns="origin")))


def method_header(info: dict | None) -> None:
    if info is None:
        st.caption("Neither this checkout's registry nor the method's records say what it is: only its numbers "
                   "are shown.")  # fmt: skip
        return
    lines = [f"**{markdown_text(info['summary'])}**"] if info["summary"] else []
    if info["paper"]:
        lines.append(f"[{markdown_text(info['paper'])}]({info['url']}) ({info['year']})")
    tags = [info["kind"], info["suite"] and f"suite: {info['suite']}", info["scale"] and f"scale: {info['scale']}",
            *info["tags"]]  # fmt: skip
    lines.append(" ".join(f"`{code_text(tag)}`" for tag in tags if tag))
    st.markdown("  \n".join(line for line in lines if line))
    if info["declared_by"] == "records":
        st.caption("Not a built-in method of this checkout: as its records declare it.")
    elif info["declared_by"] == "submission":
        st.caption("Not a built-in method of this checkout, and its records predate records saying what their "
                   "method is: what its submission.yaml says is shown; `effbench submit` records the rest.")
    for submission in info["submissions"]:
        st.markdown(submission_text(submission, info["paper"]))


def code_text(text: str) -> str:
    """``text`` inside a code span, where markdown escapes do not apply: only a backtick could end it."""
    return str(text).replace("`", "'")


def submission_text(submission: dict, shown_paper: str = "") -> str:
    """Who submitted a method, under which licence and division; its paper unless the header shows it."""
    paper = submission.get("paper") or {}
    tags = ", ".join(submission.get("open_tags") or [])
    division = f"{submission.get('division', '')} division" + (f" ({tags})" if tags else "")
    text = (f"Submitted by **{markdown_text(submission.get('team', '?'))}** "
            f"(`submissions/{code_text(submission.get('folder', ''))}`, {markdown_text(division)}, "
            f"licence {markdown_text(submission.get('licence', '?'))})")  # fmt: skip
    if paper.get("title") and paper["title"] != shown_paper:
        text += f"  \nPaper: [{markdown_text(paper['title'])}]({paper.get('url', '')}) ({paper.get('year', '')})"
    return text


def curves_chart(curves: pd.DataFrame) -> alt.FacetChart:
    """One panel per curve (loss, accuracy, ...), each on its own scale; one line per record."""
    return alt.Chart(curves).mark_line(point=True).encode(
        x=alt.X("epoch:Q"), y=alt.Y("value:Q", title=None),
        color=alt.Color("run:N", legend=alt.Legend(orient="bottom")),
        detail="config_hash:N",  # records that share a label still get lines of their own
        tooltip=["run", "curve", "epoch", alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=250, height=180).facet(facet="curve:N", columns=3).resolve_scale(y="independent")  # fmt: skip


def method_page(frames: tables.ResultFrames, context: Context) -> pd.DataFrame:
    st.header("Method")
    methods = sorted(frames.tidy["method"].unique())
    if st.session_state.get("method") not in methods:
        st.session_state.pop("method", None)  # chosen elsewhere, and hidden by the filters now
    method = st.selectbox("Method", methods, key="method", bind=URL)
    method_header(tables.method_info(method, context.runs[context.runs["method"] == method], context.submissions))
    tidy = frames.tidy[frames.tidy["method"] == method]
    st.subheader("Results")
    overview = tables.overview_table(tidy, metrics=None)
    results = show_view(tables.reading_view(overview, tables.noisy_timings(tidy)))
    layers = tables.layer_table(frames.tidy, method)
    if not layers.empty:
        st.subheader("Per-layer complexity")
        layers, constants = tables.drop_constant_keys(layers)
        with st.expander(f"{len(layers)} rows: every layer of every task and variant measured"):
            show_view(tables.View(layers, constants, {}))
    method_facts(context.runs, method)
    curves = tables.method_curves(frames.curves, method)
    if not curves.empty:
        st.subheader("Training curves")
        st.altair_chart(curves_chart(curves))
    runs = tables.method_runs(frames.runs, method)
    st.subheader("Provenance")
    show(runs.drop(columns="config"))
    dirty = tables.dirty_records(runs)
    if dirty:
        st.caption(f"{dirty} of these records were measured from a working tree with uncommitted changes "
                   f"(`{tables.DIRTY_SUFFIX}`): no commit holds the code that made them.")  # fmt: skip
    st.subheader("Config")
    labels = {row.config_hash: f"{row.track} · {row.task} · seed {row.seed} · {row.budget} · {row.config_hash}"
              for row in runs.itertuples()}  # fmt: skip
    # Keyed by the method, its options the records' hashes: a record of the method shown before never stays.
    chosen = st.selectbox("Record", list(labels), key=f"record_{method}", format_func=labels.__getitem__)
    st.json(runs.loc[runs["config_hash"] == chosen, "config"].iloc[0])
    return results


def method_facts(runs: pd.DataFrame, method: str) -> None:
    """What the method decided for each deployable (its records' facts): bit widths, calibration data."""
    bits, facts = tables.bit_width_table(runs, method), tables.facts_table(runs, method)
    if bits.empty and facts.empty:
        return
    st.subheader("What the method chose")
    if not bits.empty:
        st.caption("Per-layer weight / activation bits of each deployable (the records' `bit_widths` facts).")
        show(bits)
    if not facts.empty:
        show(facts)


def grid_chart(grid: tables.Grid, quality: str) -> alt.Chart | alt.LayerChart | alt.FacetChart:
    """Over two axes, a heat map of ``quality``: a cell per point, coloured and labelled by its value; over one, a
    curve. One heat map per panel (what else sets points apart: ``form=deep``, ``form=shallow``), one curve each."""
    # Vega-Lite reads '.', '[' and '/' in field names: the columns drawn get names of their own.
    axes = dict(zip(("grid_x", "grid_y"), grid.axes, strict=False))
    data = grid.points.rename(columns={quality: "grid_quality", f"{quality}{tables.STD_SUFFIX}": "grid_quality_std"})
    data = data.assign(**{field: grid.points[fact] for field, fact in axes.items()})
    tooltip = ["deployable", "panel", *(alt.Tooltip(f"{field}:Q", title=fact) for field, fact in axes.items()),
               alt.Tooltip("grid_quality:Q", title=quality, format=".4f"),
               alt.Tooltip("grid_quality_std:Q", title=f"{quality} std", format=".4f"), "seeds"]  # fmt: skip
    if len(axes) == 1:
        return alt.Chart(data).mark_line(point=True).encode(
            alt.X("grid_x:Q", title=axes["grid_x"]),
            alt.Y("grid_quality:Q", title=quality, scale=alt.Scale(zero=False)),
            color=alt.Color("panel:N", title=None), tooltip=tooltip,
        ).properties(height=360)  # fmt: skip
    base = alt.Chart(data).encode(alt.X("grid_x:O", title=axes["grid_x"]),
                                  alt.Y("grid_y:O", title=axes["grid_y"], sort="descending"))  # fmt: skip
    cells = base.mark_rect().encode(
        alt.Color("grid_quality:Q", title=quality, scale=alt.Scale(scheme="viridis")), tooltip=tooltip
    )
    # Dark text on the light (high) half of the scale, light text on the dark half.
    middle = float(data["grid_quality"].min() + data["grid_quality"].max()) / 2
    values = base.mark_text(fontSize=12).encode(
        text=alt.Text("grid_quality:Q", format=".3f"),
        color=alt.condition(alt.datum.grid_quality > middle, alt.value("#222"), alt.value("#fff")),
    )
    size = {"width": 70 * data["grid_x"].nunique(), "height": 45 * data["grid_y"].nunique()}
    chart = alt.layer(cells, values).properties(**size)
    return chart.facet(column=alt.Column("panel:N", title=None)) if data["panel"].nunique() > 1 else chart


def grid_page(frames: tables.ResultFrames, context: Context) -> pd.DataFrame:
    """Quality over the facts of a method's deployables: a heat map over two numbers (depth x width), else a curve."""
    st.header("Grid: quality over what each deployable is")
    found = tables.grid_methods(frames.runs)
    if not found:
        st.info("No method's deployables carry a number that varies among them (a depth x width grid, sub-networks "
                "by width): their records' facts hold no grid.")  # fmt: skip
        return pd.DataFrame()
    if st.session_state.get("grid_method") not in found:
        st.session_state.pop("grid_method", None)  # chosen elsewhere, and hidden by the filters now
    method = st.selectbox("Method", list(found), key="grid_method", bind=URL)
    task = st.selectbox("Task", found[method], key=f"grid_task_{method}")
    grid = tables.grid(frames.tidy, frames.runs, method, task)
    axes = tables.grid_axes(grid.points, grid.facts)
    if len(axes) > 2:
        pairs = [f"{x} × {y}" for x in axes for y in axes if x != y]
        pair = st.selectbox("Axes (x × y)", pairs, key=f"grid_axes_{method}")
        grid = tables.grid(frames.tidy, frames.runs, method, task, pair.split(" × "))
    qualities = tables.quality_axes(grid.points)
    if not qualities:
        st.info(f"No quality (the accuracy track) of {method}'s deployables on {task} in the chosen records.")
        return pd.DataFrame()
    quality = st.selectbox("Quality", qualities, key=f"grid_quality_{method}")
    st.altair_chart(grid_chart(grid, quality))
    st.caption(f"Each point a deployable of {method}, placed by its facts (what the method recorded it is), at the "
               f"mean {quality} over seeds; hover for the std. Panels: the other facts that vary.")  # fmt: skip
    table = grid.points[[*tables.GRID_KEYS, "deployable", *grid.facts, quality, f"{quality}{tables.STD_SUFFIX}",
                         "seeds"]].sort_values([*grid.facts, "deployable"], kind="stable")  # fmt: skip
    return show_view(tables.reading_view(table))


def compare_page(frames: tables.ResultFrames, context: Context) -> pd.DataFrame:
    st.header("Compare")
    methods = sorted(frames.tidy["method"].unique())
    chosen = st.multiselect("Methods (2 to 4)", methods, default=methods[:2], max_selections=4, key="compare",
                            bind=URL)  # fmt: skip
    if len(chosen) < 2:
        st.info("Choose 2 to 4 methods to see them side by side.")
        return pd.DataFrame()
    table = tables.compare_table(tables.overview_table(frames.tidy), chosen)
    short, citations = tables.short_sources(table.loc["source"])
    table.loc["source"] = table.loc["source"].map(short)
    # The metric names as a column of their own: Streamlit sizes the index column too narrow for them.
    table = table.reset_index()
    show_view(tables.View(table, {}, citations))
    st.caption(PAPER_NOTE)
    return table


PAGES: dict[str, Callable[[tables.ResultFrames, Context], pd.DataFrame]] = {
    "Overview": overview_page, "Tracks": tracks_page, "Pareto": pareto_page, "Method": method_page,
    "Compare": compare_page, "Grid": grid_page,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- sidebar


def open_method(slug: str) -> None:
    """The search's answer: the Method page of ``slug`` (a callback, run before the page is drawn again)."""
    st.session_state["page"] = "Method"
    st.session_state["method"] = slug


def search_box(runs: pd.DataFrame) -> None:
    """Finds a method across suites by slug or paper title; a click opens its Method page."""
    query = st.text_input("Find a method", key="search", placeholder="slug or paper title, e.g. 'xnor'")
    if not query:
        return
    found = tables.search_methods(tables.method_catalog(runs), query)
    if found.empty:
        st.caption("No method of the filtered records matches.")
    for row in found.head(8).itertuples():
        st.button(f"{row.method} · {row.suite}", key=f"found_{row.method}", help=row.paper or None,
                          on_click=open_method, args=(row.method,))  # fmt: skip


def sidebar_filters(frames: tables.ResultFrames) -> dict[str, list]:
    """One multiselect per filter column; choosing nothing keeps everything. The budget starts on the one most
    runs have (and the papers'), so that test runs of another budget do not sit among them."""
    st.sidebar.header("Filters")
    defaults = {"budget": tables.default_budgets(frames.runs)}
    chosen = {
        column: st.sidebar.multiselect(column.capitalize(), options, default=defaults.get(column), key=column,
                                       placeholder="all", bind=URL)
        for column, options in tables.filter_options(frames.tidy).items()
    }  # fmt: skip
    st.sidebar.caption("Budget starts on the most common one (and papers'); clear it to see every budget.")
    return chosen


def no_records_message(dirs: list[Path]) -> str:
    folders = ", ".join(f"`{d}`" for d in dirs) or "no folder"
    return (f"No records yet in {folders}. Make some with `effbench run ... --out DIR`, then open "
            f"`effbench leaderboard --results DIR` (or set `${tables.RESULTS_ENV}`).")  # fmt: skip


def main() -> None:
    st.set_page_config(page_title="EffBench leaderboard", layout="wide")
    st.title("EffBench leaderboard")
    dirs = tables.result_dirs(sys.argv[1:], os.environ, tables.project_root(Path.cwd(), REPO))
    try:
        with warnings.catch_warnings(record=True) as conflicts:
            warnings.simplefilter("always", RecordConflict)
            frames = tables.load_frames(*dirs)
    except RecordError as error:
        st.error(f"A record cannot be read, so the leaderboard would be wrong: {error}")
        return
    shown = [str(conflict.message) for conflict in conflicts if issubclass(conflict.category, RecordConflict)]
    if shown:  # another record of a run, shown from an earlier folder: never averaged
        # Collapsed: every page would otherwise open under a wall of them.
        with st.expander(f"{len(shown)} runs have different records in two folders: the first folder's is shown"):
            for message in shown:
                st.warning(message)
    if frames.tidy.empty:
        st.info(no_records_message(dirs))
        return
    search = st.sidebar.container()  # on top, filled once the filters say which records it searches
    page = st.sidebar.radio("Page", list(PAGES), key="page", bind=URL)
    filtered = tables.filter_frames(frames, sidebar_filters(frames))
    with search:
        search_box(filtered.runs)
    st.caption(f"{len(filtered.runs)} of {len(frames.runs)} records, from {', '.join(map(str, dirs))}")
    if filtered.tidy.empty:
        st.warning("No record matches the filters.")
        return
    context = Context(tables.method_abouts(frames.runs), frames.runs, tables.folder_submissions(dirs))
    view = PAGES[page](filtered, context)
    download(view, page.lower())
    st.sidebar.download_button("Download the filtered records (tidy CSV)", tables.to_csv(filtered.tidy),
                               file_name="effbench-records.csv", mime="text/csv", key="download",
                               help="one row per metric, every field of the records")  # fmt: skip


if __name__ == "__main__":
    main()
