"""End to end: `streamlit run` of the leaderboard, rendered by headless Chromium, shows its tables and plot.

Needs ``chromium`` (Debian: ``apt-get install chromium``); skipped without it, except under CI (``$CI`` set),
where a missing browser fails. ``$EFFBENCH_SCREENSHOT``, when set, names a file the screenshot is copied to.
"""

import os
import shutil

import pytest

from leaderboard import screenshot, tables
from tests.test_app import leaderboard_records
from tests.test_leaderboard_tables import save_all

# Streamlit renders in the browser from a websocket: a page caught before that shows only placeholders.
RENDERED_MARKERS = ['data-testid="stDataFrame"', "resnet-cifar", "mlp", "0.982 ± 0.003", "He et al. 2016",
                    "paper [1]"]  # fmt: skip


@pytest.fixture
def browser() -> str:
    try:
        return screenshot.chromium()
    except screenshot.ScreenshotError:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; `make test` installs it where it runs as root with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium); the browser test needs it")


def test_the_leaderboard_renders_its_tables_and_a_shared_link_opens_the_same_view(tmp_path, browser):
    results = tmp_path / "results"
    save_all(results, leaderboard_records())
    overview, pareto = tmp_path / "leaderboard.png", tmp_path / "pareto.png"
    with screenshot.serving(env={tables.RESULTS_ENV: str(results)}) as address:
        screenshot.capture(address, overview, RENDERED_MARKERS)
        # A link with a query opens that page with those choices: the Pareto plot of params on digits.
        dom = screenshot.capture(f"{address}?page=Pareto&cost=params", pareto, ['data-testid="stVegaLiteChart"'])
    assert "Pareto: quality against cost" in dom
    assert overview.stat().st_size > 20_000 and pareto.stat().st_size > 20_000  # drawn, not blank placeholders
    if os.environ.get("EFFBENCH_SCREENSHOT"):
        shutil.copyfile(overview, os.environ["EFFBENCH_SCREENSHOT"])
