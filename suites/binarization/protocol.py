"""The binarization suite's protocol: BiBench's operator comparison (declared here, applied by ``operators.py``).

The closed division compares *operators* (kind ``operator``, subclasses of
:class:`suites.binarization.operators.OperatorMethod`): each binarizes a protocol backbone by the same
rules, starting from that backbone's trained weights (the FP32 twin's training), and fine-tunes it once
with the task's fine-tune recipe, so only the operator differs. The protocol backbones are the task's
default backbone and BiBench's two CIFAR CNNs, ``resnet-cifar`` (ResNet-20) and ``vgg-small``, by name with
their default options: ``bnn:backbone=vgg-small`` is closed, ``bnn:backbone=resnet-cifar:depth=56`` or
``bnn:backbone=mlp`` is open. Also open: starting from scratch (``init=scratch``), ReActNet's RPReLU
layers (``reactnet:rprelu=true``, an architecture change), and the compression methods (``pb-partial``
binarizes weights only, ``mst`` changes how a trained BNN is counted). The FP32 twin is the binarized
backbone in float, so ``top1_relative`` is BiBench's relative accuracy. The summary is BiBench's view of a
binarized model: accuracy and its ratio to the twin, BOPs, OPs and packed size, and the Larq Compute
Engine deployment (file, 1-thread latency beside the same network as a float TFLite model, agreement).

This module imports no TensorFlow: the leaderboard reads it.
"""

from effbench.protocol import SuiteProtocol

PROTOCOL = SuiteProtocol(
    suite="binarization",
    description="BiBench's operator protocol: a protocol backbone (the task's default, resnet-cifar or "
    "vgg-small) with every conv / dense layer but the first, the last and the shortcut projections "
    "binarized, started from its trained weights and fine-tuned once; only the operator differs",
    closed_kinds=("operator",),
    closed_base="suites.binarization.operators:OperatorMethod",
    options={
        "backbone": "the architecture to binarize (a method reference) instead of the task's default; the closed "
        "division takes resnet-cifar and vgg-small",
        "init": "trained (the backbone's trained weights, the protocol) or scratch (a fresh initialisation)",
        "rprelu": "reactnet only: RPReLU layers in place of the backbone's ReLUs (an architecture change)",
    },
    fixed_options=("backbone", "init", "rprelu"),
    closed_values={"backbone": ("resnet-cifar", "vgg-small")},
    twin="backbone",
    summary_columns={
        "top1": ("", "top1"),
        "fp32_top1": ("", "fp32_top1"),
        "top1_relative": ("", "top1_relative"),
        "bops": ("", "bops"),
        "ops": ("", "ops"),
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
