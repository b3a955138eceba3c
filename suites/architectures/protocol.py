"""The architectures suite's protocol: a backbone trained with the task's recipe as it is.

Here the architecture *is* the method, so its options (depth, width, ...) are free and the closed division
fixes only the recipe: every architecture (kind ``architecture``, a subclass of
:class:`effbench.method.ArchitectureMethod`, whose ``run`` trains with the task's recipe unchanged) is
closed. An architecture is its own reference: no FP32 twin. The summary puts accuracy beside what a
backbone costs: parameters, MACs, packed size, Keras CPU latency, the int8 TFLite model (its accuracy and
LiteRT latency), accuracy under corruptions, and the training time.

This module imports no TensorFlow: the leaderboard reads it.
"""

from effbench.protocol import SuiteProtocol

PROTOCOL = SuiteProtocol(
    suite="architectures",
    description="reference backbones, each trained with the task's recipe unchanged; options free",
    closed_kinds=("architecture",),
    closed_base="effbench.method:ArchitectureMethod",
    twin="none",
    summary_columns={
        "top1": ("", "top1"),
        "params": ("", "params"),
        "macs": ("", "macs"),
        "packed_bytes": ("", "size_bytes"),
        "keras_cpu_b1_ms": ("", "keras_cpu_b1_median_ms"),
        "int8_top1": ("int8", "top1"),
        "int8_t1_ms": ("int8", "litert_t1_median_ms"),
        "corruption_top1": ("", "mean_corruption_top1"),
        "train_seconds": ("", "train_seconds"),
    },
    summary_outcomes=("int8",),
    summary_sort="top1",
)
