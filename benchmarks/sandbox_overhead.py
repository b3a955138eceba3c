"""The sandbox's cost: a smoke submission run through the sandbox vs the same submission run directly.

Both sides are whole processes on a fresh copy of the same submission folder (the toy operator of
tests/test_submission.py, digits, smoke budget, accuracy and complexity; with ``--default-tracks``, the tracks a
submission that names none gets: every track but sensitivity and edge-lce), alternated:

- **sandbox**: ``effbench submit FOLDER``: a sandboxed check, a sandboxed run (method.py imported there,
  twin and method trained and measured there), a third sandbox verifying the flatbuffers, and the records
  written by the parent;
- **direct**: what ``submit`` did before the sandbox: method.py imported into the process, the same plan
  run and saved in-process (``open_submission`` + ``run_submission``), no verification.

    python benchmarks/sandbox_overhead.py --repeats 3 [--default-tracks]

Prints each repeat's wall times and the ratio of the medians. The sandbox side with ``--default-tracks`` is what
a researcher's first smoke submission costs (target: under 60 s on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_submission import METHOD_PY, VALID  # noqa: E402

DIRECT = """
import sys
from pathlib import Path
from effbench.runner import make_plan
from effbench.submission import SubmissionStore, open_submission, run_submission

with open_submission(Path(sys.argv[1])) as submission:
    store = SubmissionStore(submission)
    jobs = make_plan(list(submission.methods), list(submission.tasks), list(submission.seeds),
                     list(submission.tracks), submission.budget, store, submission.division)
    sys.exit(run_submission(store, jobs, progress=False))
"""


def fresh_folder(parent: Path, name: str, default_tracks: bool) -> Path:
    folder = parent / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    declared = {key: value for key, value in VALID.items() if not (default_tracks and key == "tracks")}
    (folder / "submission.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))
    (folder / "method.py").write_text(METHOD_PY)
    return folder


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--default-tracks", action="store_true", help="declare no tracks: run the default ones")
    args = parser.parse_args()
    sides: dict[str, list[float]] = {"sandbox": [], "direct": []}
    with tempfile.TemporaryDirectory(prefix="effbench-sandbox-bench-") as scratch:
        os.chmod(scratch, 0o755)  # run as root, the sandbox drops to an unprivileged user, who must read the folder
        for repeat in range(args.repeats):
            for side in sides:
                folder = fresh_folder(Path(scratch), side, args.default_tracks)
                command = ([sys.executable, "-m", "effbench.cli", "submit", str(folder)] if side == "sandbox"
                           else [sys.executable, "-c", DIRECT, str(folder)])  # fmt: skip
                sides[side].append(timed(command))
            print(f"repeat {repeat + 1}: sandbox {sides['sandbox'][-1]:.1f} s, direct {sides['direct'][-1]:.1f} s")
    medians = {side: statistics.median(times) for side, times in sides.items()}
    print(f"medians: sandbox {medians['sandbox']:.1f} s, direct {medians['direct']:.1f} s; "
          f"ratio {medians['sandbox'] / medians['direct']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
