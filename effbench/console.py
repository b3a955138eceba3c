"""A quiet console: TensorFlow's, LiteRT's and the converters' own log lines are kept off stderr.

TensorFlow's C++ core logs through absl before anything initialises absl's logging, so its lines (oneDNN,
"Could not find cuda drivers", ``failed call to cuInit``) go to file descriptor 2 whatever
``TF_CPP_MIN_LOG_LEVEL`` says, once per shared library that holds a copy of absl (twice per import). The
TFLite converter and LiteRT print with C's stdio. None of it passes through Python, so
:func:`native_stderr_filtered` catches file descriptor 2 itself while such code runs, and writes back every
line that is not one of :data:`NOISE`: EffBench's own lines, Python warnings and tracebacks, and any native
line it does not know, are kept.

``--verbose`` on the command line (or ``EFFBENCH_VERBOSE=1``) turns the filter off. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping

VERBOSE_ENV = "EFFBENCH_VERBOSE"
# Lines known to be chatter, matched at the start of a line.
NOISE = re.compile(
    "|".join([
        r"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] ",  # absl INFO / WARNING records
        r"E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ cuda_[\w.]+:\d+\] failed call to cuInit",  # no GPU driver: no GPU, fine
        r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
        r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU",
        r"fully_quantize: \d+, inference_type: ",  # the int8 converter's settings, printed by its C++ code
    ])
)  # fmt: skip


def is_verbose(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(VERBOSE_ENV, "") not in ("", "0")


def without_noise(text: str) -> str:
    """``text`` without its :data:`NOISE` lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


@contextlib.contextmanager
def native_stderr_filtered(environ: Mapping[str, str] = os.environ) -> Iterator[None]:
    """Catch file descriptor 2 while the block runs, then write what it got back without the noise.

    Python's own writes to ``sys.stderr`` in the block are caught too and written back in order. The
    block's output appears when it ends, so wrap short steps (an import, a conversion), not a whole run.
    Does nothing when verbose (:func:`is_verbose`) or when stderr has no file descriptor.
    """
    try:
        saved = None if is_verbose(environ) else os.dup(2)
    except OSError:
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as caught:
        sys.stderr.flush()
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = without_noise(caught.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
