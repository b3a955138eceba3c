"""``effbench leaderboard`` (the Streamlit leaderboard on result folders) and ``effbench table`` (its tables as text).

Added to the command line through :data:`effbench.cli.COMMAND_MODULES`. Nothing is imported here that
``effbench --help`` would pay for: the tables (pandas, pyarrow) are imported when ``table`` runs.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import warnings
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
# The EffBench checkout this package runs from: its results are the defaults where the current folder has none.
CHECKOUT = APP.parent.parent


def add_command(subparsers: argparse._SubParsersAction) -> None:
    add_table_command(subparsers)
    add_plot_command(subparsers)
    parser = subparsers.add_parser("leaderboard", help="open the leaderboard (a Streamlit app) on result folders")
    parser.add_argument("--results", type=Path, nargs="+", default=[], metavar="DIR",
                        help="result folders (default: the current project's results/baselines, other results/* but "
                        "demo, and submissions/*/results; the EffBench checkout's where it has none)")
    parser.add_argument("--port", type=int, default=8501, help="port the app serves on (default 8501)")
    parser.add_argument("--headless", action="store_true", help="serve without opening a browser")
    parser.set_defaults(handler=command_leaderboard)  # fmt: skip


def add_table_command(subparsers: argparse._SubParsersAction) -> None:
    table = subparsers.add_parser("table", help="the results table, one row per (method, task)")
    table.add_argument("--format", choices=["text", "markdown", "csv"], default="text")
    table.add_argument("--track", help="only this track, with its scoped metrics as <scope>/<metric> columns")
    add_selection_arguments(table, "only methods of this suite; without --track, the suite's summary (the columns "
                            "its protocol declares: for binarization, accuracy and its ratio to the FP32 twin, BOPs, "
                            "packed size, LCE size and latency)")  # fmt: skip
    table.set_defaults(handler=command_table)


def add_plot_command(subparsers: argparse._SubParsersAction) -> None:
    plot = subparsers.add_parser("plot", help="a quality against another metric, one line per method, as a PNG")
    plot.add_argument("png", type=Path, help="the PNG to write")
    plot.add_argument("--x", required=True, help="the x metric: sparsity, size_bits, bops, or <scope>/<metric>")
    plot.add_argument("--y", default="top1", help="the y metric (default top1)")
    plot.add_argument("--series", nargs="+", default=[], metavar="OPTION",
                      help="method options whose values make series of their own (default: one per method)")
    plot.add_argument("--log-x", action="store_true", help="a logarithmic x axis")
    plot.add_argument("--front", action="store_true", help="draw the Pareto front (x lower, y higher is better)")
    plot.add_argument("--method", nargs="+", default=[], metavar="SLUG", help="only these methods")
    plot.add_argument("--title", help="default: the suite, task and budget")
    add_selection_arguments(plot)
    plot.set_defaults(handler=command_plot)  # fmt: skip


def add_selection_arguments(parser: argparse.ArgumentParser, suite_help: str = "only methods of this suite") -> None:
    parser.add_argument("--out", type=Path, nargs="+", metavar="DIR",
                        help="result folders (default: the committed ones, as the leaderboard reads them)")
    parser.add_argument("--suite", help=suite_help)
    parser.add_argument("--task", help="only this task")
    parser.add_argument("--budget", help="only runs of this budget, or 'all' (default: the budget most runs have, so "
                        "smoke runs never mix with quick ones unmarked)")  # fmt: skip


def command_plot(args: argparse.Namespace) -> int:
    from leaderboard.figures import curve_points, draw

    selection = selected_records(args)
    if selection is None:
        return 1
    _, tidy, _ = selection
    if args.method:
        tidy = tidy[tidy["method"].isin(args.method)]
    points = curve_points(tidy, args.x, args.y, args.series)
    if points.empty:
        print(f"effbench plot: no run has both {args.x} and {args.y}", file=sys.stderr)
        return 1
    budgets = ", ".join(sorted(points["budget"].unique()))
    title = args.title or " · ".join(filter(None, [args.suite, args.task, f"budget {budgets}"]))
    draw(points, args.x, args.y, title, args.png, args.log_x, args.front)
    print(f"{args.png}: {len(points)} points in {points['series'].nunique()} series", file=sys.stderr)
    return 0


def default_folders() -> list[Path]:
    """The result folders of the current project that hold records (the leaderboard's defaults)."""
    from leaderboard.tables import default_result_dirs, has_records, project_root

    return [folder for folder in default_result_dirs(project_root(Path.cwd(), CHECKOUT)) if has_records(folder)]


def command_table(args: argparse.Namespace) -> int:
    from effbench.records import provenance
    from leaderboard.tables import (
        NOISY_CV,
        format_table,
        method_abouts,
        noisy_column,
        noisy_timings,
        results_table,
        suite_summary,
    )

    selection = selected_records(args)
    if selection is None:
        return 1
    frames, tidy, hidden = selection
    folders = args.out or default_folders()
    if args.suite and not args.track:
        table = suite_summary(tidy, args.suite, abouts=method_abouts(frames.runs))
    else:
        table = results_table(tidy, args.track)
        if table.empty:
            print(f"no numeric metrics for track '{args.track}' in {', '.join(map(str, folders))}", file=sys.stderr)
            return 1
        noisy = noisy_timings(tidy)
        if "source" in table:  # sources shown as how they were obtained: matched the same way
            noisy = noisy.assign(source=noisy["source"].map(provenance))
        table["noisy"] = noisy_column(table, noisy)
        if not (table["noisy"] != "").any():
            table = table.drop(columns="noisy")
    print(context_line(folders, table, hidden), file=sys.stderr)
    if "budget" in table and table["budget"].nunique() == 1:
        table = table.drop(columns="budget")  # said once, in the line above
    print(format_table(table, args.format).rstrip("\n"))
    if "noisy" in table and (table["noisy"] != "").any():
        print(f"noisy: timings whose timed calls spread more than cv = std / mean = {NOISY_CV} in some seed (worst "
              "shown); re-measure them on an idle machine", file=sys.stderr)  # fmt: skip
    return 0


def selected_records(args: argparse.Namespace):
    """(frames, the tidy rows ``--suite``, ``--task`` and ``--budget`` keep, how many runs the budget hid), or None
    when there is nothing to show (said on stderr)."""
    from leaderboard.tables import default_budgets

    folders = args.out or default_folders()
    if not folders:
        print(f"no records under {Path.cwd()}: the committed results are results/baselines, results/<suite> and "
              "submissions/*/results of an EffBench checkout; give --out DIR", file=sys.stderr)  # fmt: skip
        return None
    frames = load_reporting_conflicts(folders)
    tidy = frames.tidy
    for column in ("suite", "task"):
        if not tidy.empty and getattr(args, column):
            tidy = tidy[tidy[column] == getattr(args, column)]
    budgets = default_budgets(tidy) if args.budget is None else [] if args.budget == "all" else [args.budget]
    hidden = 0 if tidy.empty or not budgets else tidy.loc[~tidy["budget"].isin(budgets), "config_hash"].nunique()
    if budgets and not tidy.empty:
        tidy = tidy[tidy["budget"].isin(budgets)]
    if tidy.empty:
        print(f"no records in {', '.join(map(str, folders))}", file=sys.stderr)
        return None
    return frames, tidy, hidden


def load_reporting_conflicts(folders: list[Path]):
    """The folders' frames; records of one run that differ between folders are each reported on one line."""
    from effbench.records import RecordConflict
    from leaderboard.tables import load_frames

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordConflict)
        frames = load_frames(*folders)
    for warning in caught:
        if issubclass(warning.category, RecordConflict):
            print(f"effbench table: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return frames


def context_line(folders: list[Path], table, hidden: int) -> str:
    """Where the rows come from, and their budget when they share one (the table then leaves the column out)."""
    line = f"{len(table)} rows from {', '.join(map(str, folders))}"
    if "budget" in table and table["budget"].nunique() == 1:
        line += f"; budget {table['budget'].iloc[0]}"
    if hidden:
        line += f" ({hidden} runs of other budgets left out: --budget all shows them)"
    return line


def streamlit_command(args: argparse.Namespace, folders: list[Path]) -> list[str]:
    """``streamlit run`` of the app on ``folders``, with this Python (so the app sees the same packages)."""
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(args.port)]
    if args.headless:
        command += ["--server.headless", "true"]
    if folders:
        # Absolute, so the folders mean the same whatever directory Streamlit resolves them from.
        command += ["--", "--results", *(str(path.resolve()) for path in folders)]
    return command


def leaderboard_folders(args: argparse.Namespace) -> list[Path]:
    """``--results``, else the current project's committed result folders (the checkout's where it has none)."""
    from leaderboard.tables import default_result_dirs, project_root

    if args.results:
        return list(args.results)
    return [folder for folder in default_result_dirs(project_root(Path.cwd(), CHECKOUT)) if folder.is_dir()]


def command_leaderboard(args: argparse.Namespace) -> int:
    """Runs the app until it is stopped; returns Streamlit's exit status."""
    folders = leaderboard_folders(args)
    print(f"leaderboard of {', '.join(map(str, folders)) or 'no result folder'}", file=sys.stderr)
    child = subprocess.Popen(streamlit_command(args, folders))
    # Ctrl-C reaches Streamlit too (the same process group), which stops cleanly: no traceback from here.
    # SIGTERM (`kill`, a service manager) reaches this process alone: pass it on and wait, never orphan Streamlit.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda number, _: child.send_signal(number))}  # fmt: skip
    try:
        return child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
