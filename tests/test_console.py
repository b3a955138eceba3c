"""A quiet console: TensorFlow's native log lines never reach the user unless asked for; EffBench's own do."""

import os
import subprocess
import sys
from pathlib import Path

from effbench.console import VERBOSE_ENV, native_stderr_filtered, without_noise

REPO = Path(__file__).resolve().parent.parent
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796158362.927755   15845 port.cc:153] oneDNN custom operations are on.\n",
    "I0000 00:00:1796158362.928196   15845 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n",
    "E0000 00:00:1796158366.249002   15845 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32\n",
]
KEPT = ["effbench: 3 runs to do\n", "E0000 00:00:1.5 1 tfl.cc:3] a converter error that matters\n",
        "Traceback (most recent call last):\n"]  # fmt: skip


def test_known_noise_is_dropped_and_every_other_line_kept():
    assert without_noise("".join(NOISE + KEPT)) == "".join(KEPT)


def test_native_writes_to_stderr_are_filtered_unless_verbose(capfd):
    with native_stderr_filtered({}):
        for line in NOISE + KEPT:
            os.write(2, line.encode())
    assert capfd.readouterr().err == "".join(KEPT)
    with native_stderr_filtered({VERBOSE_ENV: "1"}):
        os.write(2, NOISE[1].encode())
    assert capfd.readouterr().err == NOISE[1]


def test_importing_tensorflow_through_effbench_prints_nothing():
    check = "import effbench.tf\nprint('imported')"
    env = {key: value for key, value in os.environ.items() if key != VERBOSE_ENV}
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "imported\n"
    assert done.stderr == ""
