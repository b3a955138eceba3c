"""Screenshots of the leaderboard in headless Chromium: the README's pictures (``docs/*.png``) and the browser test.

    python -m leaderboard.screenshot OUT.png [--results DIR ...] [--query page=Pareto&cost=bops] [--size 1400,1000]
    python -m leaderboard.screenshot --docs          # docs/leaderboard.png and docs/leaderboard-pareto.png

It serves the app with ``streamlit run`` on a free local port, opens it in headless Chromium (Debian's
``chromium``: ``apt-get install chromium``) until the page shows every marker text (Streamlit draws in the
browser, from a websocket: a page caught too early shows only placeholders), and saves the screenshot.
Without ``--results`` the app reads its default folders (the committed results).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
DOCS = APP.parent.parent / "docs"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=60000"]  # fmt: skip
# The README's pictures: file -> (query, window size, a text the finished page shows).
DOC_SHOTS = {
    "leaderboard.png": ("suite=binarization&task=digits", (1400, 1050), "Suite: binarization"),
    "leaderboard-pareto.png": ("page=Pareto&suite=binarization&cost=bops", (1400, 1300), "bops"),
}


class ScreenshotError(RuntimeError):
    """The app or the browser could not be run, or the page never finished drawing."""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise ScreenshotError("no Chromium found: apt-get install chromium (Debian), or put chromium on PATH")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(results: Sequence[Path] = (), env: dict[str, str] | None = None, seconds: float = 90) -> Iterator[str]:
    """The app served on a free local port while the block runs; yields its address."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address",
               "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # fmt: skip
    if results:
        command += ["--", "--results", *(str(Path(path).resolve()) for path in results)]
    server = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        wait_until_serving(server, port, seconds)
        yield f"http://127.0.0.1:{port}/"
    finally:
        # The whole session: streamlit may have started children of its own.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def wait_until_serving(server: subprocess.Popen, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ScreenshotError(f"streamlit exited with status {server.returncode}: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise ScreenshotError(f"streamlit did not answer on port {port} within {seconds} s")


def render(url: str, screenshot: Path, size: tuple[int, int] = (1400, 1000)) -> str:
    """One Chromium run: the screenshot, and the DOM of the same moment (returned)."""
    with tempfile.TemporaryDirectory(prefix="effbench-chromium-") as profile:
        done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--window-size={size[0]},{size[1]}",
                               f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=180)  # fmt: skip
    return done.stdout


def capture(url: str, screenshot: Path, markers: Sequence[str], size: tuple[int, int] = (1400, 1000),
            tries: int = 10) -> str:  # fmt: skip
    """Render ``url`` until its DOM holds every marker (a slow machine needs several tries); returns the DOM."""
    dom = ""
    for _ in range(tries):
        dom = render(url, screenshot, size)
        if all(marker in dom for marker in markers):
            return dom
        time.sleep(2)
    missing = [marker for marker in markers if marker not in dom]
    raise ScreenshotError(f"{url} never showed {missing} in {tries} tries")


def make_docs(folder: Path = DOCS) -> list[Path]:
    """The README's pictures, from the committed results."""
    made = []
    with serving() as address:
        for name, (query, size, marker) in DOC_SHOTS.items():
            path = folder / name
            capture(f"{address}?{query}", path, ['data-testid="stDataFrame"', marker], size)
            made.append(path)
    return made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="the PNG to write")
    parser.add_argument("--docs", action="store_true", help=f"write the README's pictures into {DOCS}")
    parser.add_argument("--results", type=Path, nargs="+", default=[], metavar="DIR")
    parser.add_argument("--query", default="", help="the URL's query: page=Pareto&suite=binarization")
    parser.add_argument("--size", default="1400,1000", help="window width,height in pixels")
    args = parser.parse_args(argv)
    if args.docs:
        print("\n".join(map(str, make_docs())))
        return 0
    if args.out is None:
        parser.error("give OUT.png or --docs")
    width, height = (int(part) for part in args.size.split(","))
    with serving(args.results) as address:
        capture(f"{address}?{args.query}", args.out, ['data-testid="stDataFrame"'], (width, height))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
