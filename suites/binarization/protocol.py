"""The binarization suite's protocol: BiBench's operator comparison (declared here, applied by ``operators.py``).

The closed division compares *operators* (kind ``operator``, subclasses of
:class:`suites.binarization.operators.OperatorMethod`): each binarizes the task's default backbone by the
same rules and trains it once with the task's recipe, so only the operator differs. The ``backbone``
option departs from that (another architecture), and so do the compression methods, which do more than
one such training (``pb-partial``, ``mst``): their runs are open. The FP32 twin is the binarized backbone
in float, so ``top1_relative`` is BiBench's relative accuracy. The summary is BiBench's view of a
binarized model: accuracy and its ratio to the twin, BOPs and packed size, and the Larq Compute Engine
deployment (file, 1-thread latency beside the same network as a float TFLite model, agreement).

This module imports no TensorFlow: the leaderboard reads it.
"""

from effbench.protocol import SuiteProtocol

PROTOCOL = SuiteProtocol(
    suite="binarization",
    description="BiBench's operator protocol: the task's default backbone with every conv / dense layer but "
    "the first and the last binarized, trained once with the task's recipe; only the operator differs",
    closed_kinds=("operator",),
    closed_base="suites.binarization.operators:OperatorMethod",
    options={"backbone": "the architecture to binarize (a method reference) instead of the task's default"},
    fixed_options=("backbone",),
    twin="backbone",
    summary_columns={
        "top1": ("", "top1"),
        "fp32_top1": ("", "fp32_top1"),
        "top1_relative": ("", "top1_relative"),
        "bops": ("", "bops"),
        "packed_bytes": ("", "size_bytes"),
        "lce_bytes": ("lce", "size_bytes"),
        "lce_t1_ms": ("lce", "lce_t1_median_ms"),
        "float32_t1_ms": ("float32", "litert_t1_median_ms"),
        "lce_agreement": ("lce", "agreement"),
        "train_seconds": ("", "train_seconds"),
    },
    summary_outcomes=("lce",),
    summary_sort="top1_relative",
)
