"""``effbench leaderboard``: opens the Streamlit leaderboard on result folders."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("leaderboard", help="open the leaderboard (a Streamlit app) on result folders")
    parser.add_argument("--results", type=Path, nargs="+", default=[], metavar="DIR",
                        help="result folders (default: results/baselines and every submissions/*/results)")
    parser.add_argument("--port", type=int, default=8501, help="port the app serves on (default 8501)")
    parser.add_argument("--headless", action="store_true", help="serve without opening a browser")
    parser.set_defaults(handler=command_leaderboard)  # fmt: skip


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
