"""The progress line: runs done, running and failed, and an ETA from the mean time per finished job."""

from __future__ import annotations

import io

from effbench.progress import ProgressLine, estimate_remaining, format_duration, format_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_line_counts_runs_and_estimates_from_finished_jobs():
    assert format_progress(10, 0, 0, 2, 5.0, None) == (
        "[--------------------] 0/10 runs: 0 done, 2 running, 0 failed | 5s elapsed, ETA --"
    )
    assert format_progress(10, 4, 1, 3, 125.0, 250.0) == (
        "[##########----------] 5/10 runs: 4 done, 3 running, 1 failed | 2m05s elapsed, ETA 4m10s"
    )
    assert estimate_remaining(60.0, 2, 5) == 90.0 and estimate_remaining(60.0, 0, 5) is None
    assert [format_duration(s) for s in (0.4, 59, 61, 3599, 7380)] == ["0s", "59s", "1m01s", "59m59s", "2h03m"]


def test_without_a_terminal_each_update_is_a_line():
    stream, clock = io.StringIO(), Clock()
    line = ProgressLine(total_jobs=2, total_runs=3, stream=stream, clock=clock)
    line.started(2)
    clock.now += 30
    line.finished(2, recorded=1)
    line.started(1)
    line.close()
    assert stream.getvalue().splitlines() == [
        "[--------------------] 0/3 runs: 0 done, 2 running, 0 failed | 0s elapsed, ETA --",
        "[#############-------] 2/3 runs: 1 done, 0 running, 1 failed | 30s elapsed, ETA 30s",
        "[#############-------] 2/3 runs: 1 done, 1 running, 1 failed | 30s elapsed, ETA 30s",
    ]


def test_on_a_terminal_the_line_is_redrawn_in_place_around_log_lines():
    stream, logged = Terminal(), []
    line = ProgressLine(total_jobs=1, total_runs=1, stream=stream, clock=Clock())
    line.started(1)
    line.wrap(logged.append)("training")
    line.finished(1, recorded=1)
    line.close()
    running = "[--------------------] 0/1 runs: 0 done, 1 running, 0 failed | 0s elapsed, ETA --"
    done = "[####################] 1/1 runs: 1 done, 0 running, 0 failed | 0s elapsed, ETA 0s"
    erase = "\r\x1b[K"
    assert stream.getvalue() == f"\r{running}\x1b[K{erase}\r{running}\x1b[K\r{done}\x1b[K\n"
    assert logged == ["training"]


def test_a_quiet_line_writes_nothing_and_leaves_the_log_alone():
    stream = Terminal()
    line = ProgressLine(total_jobs=1, total_runs=1, enabled=False, stream=stream)
    line.started(1)
    assert line.wrap(print) is print
    line.finished(1, recorded=0)
    line.close()
    assert stream.getvalue() == ""
