"""The EffBench leaderboard, a Streamlit app. It only lays out: every table comes from ``leaderboard.tables``.

    streamlit run leaderboard/app.py -- --results DIR [DIR ...]
    effbench leaderboard [--results DIR ...] [--port N] [--headless]

Result folders: ``--results`` after ``--``; else ``$EFFBENCH_RESULTS`` (folders separated by ``os.pathsep``);
else ``results/baselines`` and every ``submissions/*/results`` of the repository.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from effbench.records import RecordError
from leaderboard import tables

REPO = Path(__file__).resolve().parent.parent
PAPER_NOTE = "Rows whose source starts with `paper:` are values a paper reports, shown beside ours, not measured here."


ROW_PX, MAX_ROWS, SCROLLBAR_PX = 35, 16, 14


def show(table: pd.DataFrame) -> None:
    """A sortable table tall enough for its rows (up to MAX_ROWS) and the horizontal scrollbar of a wide one."""
    height = ROW_PX * (min(len(table), MAX_ROWS) + 1) + SCROLLBAR_PX
    st.dataframe(table, hide_index=True, height=height)


def overview_page(frames: tables.ResultFrames) -> None:
    st.header("Overview")
    as_text = st.toggle("mean ± std as text (off: numbers, each sortable)", value=True, key="as_text")
    overview = tables.overview_table(frames.tidy)
    if overview.empty:
        st.info("The chosen records hold no numeric whole-model metric.")
        return
    shown = tables.format_overview(overview) if as_text else overview
    for suite, suite_table in tables.split_by(shown, "suite").items():
        st.subheader(f"Suite: {suite}")
        for task, table in tables.split_by(suite_table, "task").items():
            st.markdown(f"**Task: {task}**")
            show(table)
    st.caption(PAPER_NOTE)


def tracks_page(frames: tables.ResultFrames) -> None:
    st.header("Tracks")
    track = st.selectbox("Track", sorted(frames.tidy["track"].unique()), key="track")
    st.caption("Every metric of the track, averaged over seeds; scoped ones (a layer, a converted variant, a "
               "corruption) as `<scope>/<metric>` columns.")  # fmt: skip
    table = tables.track_table(frames.tidy, track)
    if table.empty:
        st.info(f"No numeric metric of track '{track}' in the chosen records.")
        return
    show(table)
    st.caption(PAPER_NOTE)
    with st.expander("What the metrics mean"):
        show(tables.metric_legend(track))


def pareto_chart(points: pd.DataFrame, x: str, y: str, log_x: bool) -> alt.LayerChart:
    """Our runs as dots, papers' values as diamonds, our Pareto front as a step line, and each method with
    several deployables as a dashed curve through them."""
    # Metric names such as 'int8/litert_t1_median_ms' are renamed: Vega-Lite reads '.' and '[' in field names.
    data = points.rename(columns={x: "cost", y: "accuracy"})
    x_axis = alt.X("cost:Q", title=x, scale=alt.Scale(type="log" if log_x else "linear"))
    y_axis = alt.Y("accuracy:Q", title=y, scale=alt.Scale(zero=False))
    front = alt.Chart(data[data["on_front"]]).mark_line(interpolate="step-after", color="#888").encode(x_axis, y_axis)
    dots = alt.Chart(data).mark_point(size=120, filled=True).encode(
        x_axis, y_axis, color=alt.Color("method:N"),
        shape=alt.Shape("origin:N", scale=alt.Scale(domain=["ours", "paper"], range=["circle", "diamond"])),
        tooltip=["method", "variant", "deployable", "task", "budget", "division", "source",
                 alt.Tooltip("cost:Q", title=x), alt.Tooltip("accuracy:Q", title=y, format=".4f"), "on_front"],
    )  # fmt: skip
    # A method with several deployables (an elastic method's sub-networks) is one curve, in cost order.
    curves = tables.deployable_curves(data, "cost")
    curve = alt.Chart(curves).mark_line(strokeDash=[4, 2]).encode(
        x_axis, y_axis, color=alt.Color("method:N"), detail="variant:N", order="cost:Q"
    )
    return alt.layer(front, curve, dots)


def pareto_page(frames: tables.ResultFrames) -> None:
    st.header("Pareto: accuracy against cost")
    table = tables.overview_table(frames.tidy, metrics=None, scoped=tables.is_latency_metric)
    costs, accuracies = tables.cost_axes(table), tables.quality_axes(table)
    if not costs or not accuracies:
        st.info("A Pareto plot needs the accuracy track and a cost: the complexity, latency or edge track.")
        return
    task = st.selectbox("Task", sorted(table["task"].unique()), key="pareto_task")
    x = st.selectbox("Cost (x, lower is better)", costs, key="pareto_x")
    y = st.selectbox("Accuracy (y, higher is better)", accuracies, key="pareto_y")
    log_x = st.checkbox("logarithmic cost axis", value=True, key="pareto_log")
    points = tables.pareto_points(table[table["task"] == task], x, y)
    if points.empty:
        st.info(f"No run on {task} has both {x} and {y}.")
        return
    st.altair_chart(pareto_chart(points, x, y, log_x), width="stretch")
    st.caption("Line: our Pareto front (no other run of ours is both cheaper and more accurate). "
               "Diamonds: values papers report; they do not move our front.")  # fmt: skip
    show(points)


def registry_entry(info: dict | None) -> None:
    if info is None:
        st.caption("This method is not in this checkout's registry: only what its records carry is shown.")
        return
    st.markdown(f"**{info['summary']}**  \n[{info['paper']}]({info['url']}) ({info['year']})")
    st.markdown(" ".join(f"`{tag}`" for tag in [info["kind"], f"scale: {info['scale']}", *info["tags"]]))


def curves_chart(curves: pd.DataFrame) -> alt.FacetChart:
    """One panel per curve (loss, accuracy, ...), each on its own scale; one line per record."""
    return alt.Chart(curves).mark_line(point=True).encode(
        x=alt.X("epoch:Q"), y=alt.Y("value:Q", title=None),
        color=alt.Color("run:N", legend=alt.Legend(orient="bottom")),
        detail="config_hash:N",  # records that share a label still get lines of their own
        tooltip=["run", "curve", "epoch", alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=250, height=180).facet(facet="curve:N", columns=3).resolve_scale(y="independent")  # fmt: skip


def method_page(frames: tables.ResultFrames) -> None:
    st.header("Method")
    method = st.selectbox("Method", sorted(frames.tidy["method"].unique()), key="method")
    registry_entry(tables.method_info(method))
    overview = tables.overview_table(frames.tidy, metrics=None)
    st.subheader("Results")
    show(tables.format_overview(overview[overview["method"] == method]))
    layers = tables.layer_table(frames.tidy, method)
    if not layers.empty:
        st.subheader("Per-layer complexity")
        show(layers)
    curves = tables.method_curves(frames.curves, method)
    if not curves.empty:
        st.subheader("Training curves")
        st.altair_chart(curves_chart(curves))
    runs = tables.method_runs(frames.runs, method)
    st.subheader("Provenance")
    show(runs.drop(columns="config"))
    st.subheader("Config")
    chosen = st.selectbox("Record", runs.index, key="method_run",
                          format_func=lambda i: f"{runs.at[i, 'track']} · {runs.at[i, 'task']} · seed "
                                                f"{runs.at[i, 'seed']} · {runs.at[i, 'config_hash']}")  # fmt: skip
    st.json(runs.at[chosen, "config"])


def compare_page(frames: tables.ResultFrames) -> None:
    st.header("Compare")
    methods = sorted(frames.tidy["method"].unique())
    chosen = st.multiselect("Methods (2 to 4)", methods, default=methods[:2], max_selections=4, key="compare")
    if len(chosen) < 2:
        st.info("Choose 2 to 4 methods to see them side by side.")
        return
    # The metric names as a column of their own: Streamlit sizes the index column too narrow for them.
    show(tables.compare_table(tables.overview_table(frames.tidy), chosen).reset_index())
    st.caption(PAPER_NOTE)


PAGES: dict[str, Callable[[tables.ResultFrames], None]] = {
    "Overview": overview_page, "Tracks": tracks_page, "Pareto": pareto_page, "Method": method_page,
    "Compare": compare_page,
}  # fmt: skip


def sidebar_filters(tidy: pd.DataFrame) -> dict[str, list]:
    """One multiselect per filter column; choosing nothing keeps everything."""
    st.sidebar.header("Filters")
    return {
        column: st.sidebar.multiselect(column.capitalize(), options, key=f"filter_{column}", placeholder="all")
        for column, options in tables.filter_options(tidy).items()
    }


def no_records_message(dirs: list[Path]) -> str:
    folders = ", ".join(f"`{d}`" for d in dirs) or "no folder"
    return (f"No records yet in {folders}. Make some with `effbench run ... --out DIR`, then open "
            f"`effbench leaderboard --results DIR` (or set `${tables.RESULTS_ENV}`).")  # fmt: skip


def main() -> None:
    st.set_page_config(page_title="EffBench leaderboard", layout="wide")
    st.title("EffBench leaderboard")
    dirs = tables.result_dirs(sys.argv[1:], os.environ, REPO)
    try:
        frames = tables.load_frames(*dirs)
    except RecordError as error:
        st.error(f"A record cannot be read, so the leaderboard would be wrong: {error}")
        return
    if frames.tidy.empty:
        st.info(no_records_message(dirs))
        return
    page = st.sidebar.radio("Page", list(PAGES), key="page")
    filtered = tables.filter_frames(frames, sidebar_filters(frames.tidy))
    st.sidebar.download_button("Download the filtered records (CSV)", tables.to_csv(filtered.tidy),
                               file_name="effbench-records.csv", mime="text/csv", key="download")  # fmt: skip
    st.caption(f"{len(filtered.runs)} of {len(frames.runs)} records, from {', '.join(map(str, dirs))}")
    if filtered.tidy.empty:
        st.warning("No record matches the filters.")
        return
    PAGES[page](filtered)


if __name__ == "__main__":
    main()
