"""A progress line for a sweep: runs done, running and failed, and when the rest should be finished.

Counts are in runs (one track of one trained model); the ETA is in jobs (one training and its tracks),
since a job's runs finish together: ``elapsed / finished jobs x jobs left``, the mean wall time per
finished job. With several jobs in flight at once, that mean is wall time per job at the executor's
parallelism, so the estimate already accounts for it. On a terminal the line is redrawn in place; when
stderr goes to a file or a pipe, each update is a line of its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 20


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``2h07m``: short enough for one line, precise enough for an estimate."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def estimate_remaining(elapsed: float, finished_jobs: int, total_jobs: int) -> float | None:
    """Seconds until every job is finished at the mean pace so far; None before the first one finishes."""
    if finished_jobs == 0:
        return None
    return elapsed / finished_jobs * (total_jobs - finished_jobs)


def format_progress(
    total: int, done: int, failed: int, running: int, elapsed: float, remaining: float | None
) -> str:
    """One line: a bar of finished runs, the counts, the time spent and the estimate."""
    finished = done + failed
    filled = BAR_WIDTH * finished // total if total else BAR_WIDTH
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    eta = "--" if remaining is None else format_duration(remaining)
    return (
        f"[{bar}] {finished}/{total} runs: {done} done, {running} running, {failed} failed"
        f" | {format_duration(elapsed)} elapsed, ETA {eta}"
    )


class ProgressLine:
    """Shows the state of a sweep on ``stream`` (stderr) after every job that starts or finishes."""

    def __init__(
        self,
        total_jobs: int,
        total_runs: int,
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total_jobs, self.total_runs = total_jobs, total_runs
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started_at = clock()
        self.done = self.failed = self.running = self.finished_jobs = 0
        self._in_place = enabled and self.stream.isatty()
        self._drawn = False

    def text(self) -> str:
        elapsed = self.clock() - self.started_at
        remaining = estimate_remaining(elapsed, self.finished_jobs, self.total_jobs)
        return format_progress(self.total_runs, self.done, self.failed, self.running, elapsed, remaining)

    def started(self, runs: int) -> None:
        self.running += runs
        self._draw()

    def finished(self, runs: int, recorded: int) -> None:
        self.running -= runs
        self.done += recorded
        self.failed += runs - recorded
        self.finished_jobs += 1
        self._draw()

    def wrap(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log``, but lifting the line off the terminal while it writes, so the two never mix."""
        if not self._in_place:
            return log

        def log_around_line(message: str) -> None:
            self._erase()
            log(message)
            self._draw()

        return log_around_line

    def close(self) -> None:
        """Leave the last state on the terminal, ending its line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self) -> None:
        if not self.enabled:
            return
        if self._in_place:
            self.stream.write(f"\r{self.text()}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"{self.text()}\n")
        self.stream.flush()

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
