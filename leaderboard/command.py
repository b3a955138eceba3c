"""``effbench leaderboard`` (the Streamlit leaderboard on result folders) and ``effbench table`` (its tables as text).

Added to the command line through :data:`effbench.cli.COMMAND_MODULES`. Nothing is imported here that
``effbench --help`` would pay for: the tables (pandas, pyarrow) are imported when ``table`` runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def add_command(subparsers: argparse._SubParsersAction) -> None:
    add_table_command(subparsers)
    parser = subparsers.add_parser("leaderboard", help="open the leaderboard (a Streamlit app) on result folders")
    parser.add_argument("--results", type=Path, nargs="+", default=[], metavar="DIR",
                        help="result folders (default: results/baselines and every submissions/*/results)")
    parser.add_argument("--port", type=int, default=8501, help="port the app serves on (default 8501)")
    parser.add_argument("--headless", action="store_true", help="serve without opening a browser")
    parser.set_defaults(handler=command_leaderboard)  # fmt: skip


def add_table_command(subparsers: argparse._SubParsersAction) -> None:
    table = subparsers.add_parser("table", help="the results table, one row per (method, task)")
    table.add_argument("--out", type=Path, nargs="+", default=[Path("results")], help="result folders")
    table.add_argument("--format", choices=["text", "markdown", "csv"], default="text")
    table.add_argument("--suite", help="only methods of this suite; without --track, the suite's summary "
                       "(the columns its protocol declares: for binarization, accuracy and its ratio to the FP32 "
                       "twin, BOPs, packed size, LCE size and latency)")
    table.add_argument("--task", help="only this task")
    table.add_argument("--track", help="only this track, with its scoped metrics as <scope>/<metric> columns")
    table.set_defaults(handler=command_table)


def command_table(args: argparse.Namespace) -> int:
    from leaderboard.tables import format_table, load_results, results_table, suite_summary

    tidy = load_results(*args.out)
    if not tidy.empty and args.suite:
        tidy = tidy[tidy["suite"] == args.suite]
    if not tidy.empty and args.task:
        tidy = tidy[tidy["task"] == args.task]
    if tidy.empty:
        print(f"no records in {', '.join(map(str, args.out))}", file=sys.stderr)
        return 1
    if args.suite and not args.track:
        print(format_table(suite_summary(tidy, args.suite), args.format))
        return 0
    table = results_table(tidy, args.track)
    if table.empty:
        print(f"no numeric metrics for track '{args.track}' in {', '.join(map(str, args.out))}", file=sys.stderr)
        return 1
    print(format_table(table, args.format))
    return 0


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """``streamlit run`` of the app, with this Python (so the app sees the same packages)."""
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(args.port)]
    if args.headless:
        command += ["--server.headless", "true"]
    if args.results:
        # Absolute, so the folders mean the same whatever directory Streamlit resolves them from.
        command += ["--", "--results", *(str(path.resolve()) for path in args.results)]
    return command


def command_leaderboard(args: argparse.Namespace) -> int:
    """Runs the app until it is stopped; returns Streamlit's exit status."""
    return subprocess.call(streamlit_command(args))
