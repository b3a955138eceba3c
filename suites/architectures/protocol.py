"""The architectures suite's protocol: a backbone trained with the task's recipe as it is.

Here the architecture *is* the method, so its options (depth, width, ...) are free and the closed division
fixes only the recipe: every architecture (kind ``architecture``, a subclass of
:class:`effbench.method.ArchitectureMethod`, whose ``run`` trains with the task's recipe unchanged) is
closed. An architecture is its own reference: no FP32 twin. The summary puts accuracy beside what a
backbone costs: parameters, MACs, packed size, Keras CPU latency, the int8 TFLite model (its accuracy and
LiteRT latency), accuracy under corruptions, and the training time.

This module imports no TensorFlow: the leaderboard reads it.
"""

from dataclasses import dataclass

from effbench.protocol import SuiteProtocol

PROTOCOL = SuiteProtocol(
    suite="architectures",
    description="reference backbones, each trained with the task's recipe unchanged; options free",
    closed_kinds=("architecture",),
    closed_base="effbench.method:ArchitectureMethod",
    twin="none",
    # The quality columns of every task kind: a column shows only where some run recorded it.
    summary_columns={
        "top1": ("", "top1"),
        "permuted_top1": ("", "permuted_top1"),
        "permutation_agreement": ("", "permutation_agreement"),
        "auc": ("", "auc"),
        "logloss": ("", "logloss"),
        "miou": ("", "miou"),
        "psnr_y": ("", "psnr_y"),
        "bicubic_psnr_y": ("", "bicubic_psnr_y"),
        "ssim_y": ("", "ssim_y"),
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


@dataclass(frozen=True)
class SizedRun:
    """One architecture run of ``make architectures``: ``method`` on ``task``.

    With a ``reference``, ``method`` is sized (its size knob is in its options) so that its ``measure`` on the
    task is within 10% of the reference backbone's (:func:`effbench.matching.match_size` found the value;
    tests/test_architectures_protocol.py checks it still holds). Without one, ``method`` is not sized: it is
    the reference the task's other runs are sized to, or a drop-in whose cost is what its rule makes of the
    backbone's (``oneway-conv`` replaces k x k convs by cheaper pairs: its saving is the point).
    """

    task: str
    method: str
    reference: str = ""
    measure: str = "macs"


# Each architecture on the task it was made for, at matched cost; drop-in layers on the backbones they
# replace layers of, which fixes their size. Sized both ways where an architecture's own default is far from
# the reference: the architecture shrunk to the reference's cost, and the reference grown to the architecture's.
SIZED_RUNS: tuple[SizedRun, ...] = (
    SizedRun("digit-sets", "mlp"),
    SizedRun("digit-sets", "lcm:units=61", "mlp"),
    SizedRun("digit-sets", "lcm:aggregator=sum,units=148", "mlp"),
    SizedRun("ctr-synth", "embedding-mlp"),
    SizedRun("ctr-synth", "fcn-cross", "embedding-mlp"),
    SizedRun("digits-seq", "mlp"),
    SizedRun("digits-seq", "lrcn:width=2", "mlp"),
    SizedRun("digits-seq", "lstm:units=71", "mlp"),
    SizedRun("digits-seq", "lrcn"),
    SizedRun("digits-seq", "mlp:units=670", "lrcn"),
    SizedRun("digits-seq", "lstm:units=190", "lrcn"),
    SizedRun("listops-short", "tiny-transformer"),
    SizedRun("listops-short", "macaron:hidden=64", "tiny-transformer"),
    SizedRun("listops-short", "moe-switch:hidden=101", "tiny-transformer"),
    SizedRun("digits", "resnet-cifar"),
    SizedRun("digits", "evonorm", "resnet-cifar"),
    SizedRun("digits", "evonorm:variant=s0", "resnet-cifar"),
    SizedRun("digits", "selu-snn", "resnet-cifar"),
    SizedRun("digits", "ibn-net", "resnet-cifar"),
    SizedRun("digits", "oneway-conv"),
    SizedRun("digits", "astroformer:width=18", "resnet-cifar"),
    SizedRun("digits", "halonet:width=22", "resnet-cifar"),
    SizedRun("digits", "overlock:width=22", "resnet-cifar"),
    SizedRun("digits", "resnet-rs:base=14", "resnet-cifar"),
    SizedRun("digits", "inception-resnet:width=45", "resnet-cifar"),
    SizedRun("digits", "nasnet:filters=13", "resnet-cifar"),
    SizedRun("digits", "gcr", "resnet-cifar"),
    SizedRun("digits", "poincare-resnet", "resnet-cifar"),
    # PHNN keeps the MACs and divides the parameters by n: the backbone is widened until it has the reference's.
    SizedRun("digits", "phnn:backbone=(resnet-cifar:width=2)", "resnet-cifar", "params"),
    SizedRun("digits", "mobilenetv2:alpha=0.35"),
    SizedRun("digits", "evonorm:backbone=(mobilenetv2:alpha=0.35)", "mobilenetv2:alpha=0.35"),
    SizedRun("digits", "selu-snn:backbone=(mobilenetv2:alpha=0.35)", "mobilenetv2:alpha=0.35"),
    SizedRun("digits", "shallow-again:width=33", "resnet-cifar"),
    SizedRun("digits", "shallow-again:form=deep,width=33", "resnet-cifar"),
    # Not sized: the grid spans depths and widths (its main deployable, shallow at depth 4 and width 32, costs
    # 0.94x resnet-cifar's MACs on digits).
    SizedRun("digits", "deep-wide-grid"),
    SizedRun("digits", "bcn-ws", "resnet-cifar"),
    SizedRun("digits", "bcn-ws:backbone=(mobilenetv2:alpha=0.35)", "mobilenetv2:alpha=0.35"),
    SizedRun("digits", "phnn:backbone=(mobilenetv2:alpha=0.75)", "mobilenetv2:alpha=0.35", "params"),
    SizedRun("mnist1d", "mlp"),
    SizedRun("mnist1d", "snnk:features=94", "mlp"),
    SizedRun("mnist1d", "s-kan:units=60", "mlp"),
    SizedRun("sr-photos-x3", "fcn-small"),
    SizedRun("sr-photos-x3", "espcn:filters1=19", "fcn-small"),
    SizedRun("sr-photos-x3", "espcn"),
    SizedRun("sr-photos-x3", "fcn-small:width=25", "espcn"),
    SizedRun("sr-photos-x2", "fcn-small"),
    SizedRun("sr-photos-x2", "espcn:filters1=25", "fcn-small"),
    SizedRun("sr-photos-x2", "espcn"),
    SizedRun("sr-photos-x2", "fcn-small:width=24", "espcn"),
    SizedRun("seg-shapes", "fcn-small"),
    SizedRun("seg-shapes", "unetpp:width=5", "fcn-small"),
    SizedRun("seg-shapes", "seg-efficient"),
    SizedRun("seg-shapes", "fcn-small:width=11", "seg-efficient"),
    SizedRun("noisy-signals", "fcn-small"),
    SizedRun("noisy-signals", "fullsubnet-fast:fullband_units=104", "fcn-small"),
    SizedRun("noisy-signals", "fullsubnet-fast"),
    SizedRun("noisy-signals", "fcn-small:width=8", "fullsubnet-fast"),
)


def runs_by_task() -> dict[str, list[str]]:
    """Task -> the methods ``make architectures`` runs on it, in :data:`SIZED_RUNS` order."""
    plan: dict[str, list[str]] = {}
    for run in SIZED_RUNS:
        plan.setdefault(run.task, []).append(run.method)
    return plan


if __name__ == "__main__":
    # `make architectures` reads one line per task: the task, then its methods (no spaces or glob characters).
    for task, methods in runs_by_task().items():
        print(task, *methods)
