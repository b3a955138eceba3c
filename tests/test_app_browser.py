"""End to end: `streamlit run` of the leaderboard, rendered by headless Chromium, shows the table with its data.

Needs ``chromium`` (Debian: ``apt-get install chromium``); skipped without it, except under CI (``$CI`` set),
where a missing browser fails. ``$EFFBENCH_SCREENSHOT``, when set, names a file the screenshot is copied to.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from leaderboard import tables
from tests.test_app import APP, leaderboard_records
from tests.test_leaderboard_tables import save_all

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--virtual-time-budget=15000"]  # fmt: skip
# Streamlit renders in the browser from a websocket: a page caught before that shows only placeholders.
RENDERED_MARKERS = ['data-testid="stDataFrame"', "resnet-cifar", "mlp", "bnn-toy", "0.982 ± 0.003", "paper: He"]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI installs it in .ci/run")
        pytest.skip("chromium is not installed (apt-get install chromium); the browser test needs it")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(server: subprocess.Popen, port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with status {server.returncode}: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer on port {port} within {seconds} s")


def render(browser: str, url: str, screenshot: Path, profile: Path) -> str:
    """One Chromium run: the screenshot, and the DOM of the same moment (returned)."""
    shutil.rmtree(profile, ignore_errors=True)
    done = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120)  # fmt: skip
    return done.stdout


def test_the_leaderboard_renders_its_table_in_a_browser(tmp_path):
    browser = chromium()
    results = tmp_path / "results"
    save_all(results, leaderboard_records())
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env={**os.environ, tables.RESULTS_ENV: str(results)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    screenshot = tmp_path / "leaderboard.png"
    try:
        wait_until_serving(server, port)
        for _ in range(8):
            dom = render(browser, f"http://127.0.0.1:{port}/", screenshot, tmp_path / "profile")
            if all(marker in dom for marker in RENDERED_MARKERS):
                break
        missing = [marker for marker in RENDERED_MARKERS if marker not in dom]
        assert not missing, f"the page never showed {missing}"
        assert screenshot.stat().st_size > 20_000  # a rendered table, not the blank placeholder page
        if os.environ.get("EFFBENCH_SCREENSHOT"):
            shutil.copyfile(screenshot, os.environ["EFFBENCH_SCREENSHOT"])
    finally:
        # The whole session: streamlit may have started children of its own.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
