"""The pruning suite's protocol: ShrinkBench's answer, one trained twin, one fine-tune recipe, curves and seeds.

ShrinkBench (Blalock et al., "What is the state of neural network pruning?", MLSys 2020) found pruning papers
incomparable: different baselines, metrics, single sparsity levels, no seeds. The closed division fixes all of
it. A method of :class:`suites.pruning.base.PruningMethod` prunes a protocol backbone (the task's default,
``resnet-cifar`` or ``mobilenetv2`` on images, ``mlp`` on vectors, by name with their default options): from
that backbone's trained weights (the FP32 twin's training, once per task, seed and budget, shared by every
method and sparsity level), fine-tuned with the task's fine-tune recipe; or, for methods that prune at
initialisation or during training (their taxonomy's ``applied``), from a fresh backbone with the task's recipe.
The sparsity target is the method's own option (``gmp:sparsity=0.9``): a curve is several runs. The summary is
ShrinkBench's set: accuracy and its ratio to the twin, dense and nonzero params and FLOPs, compression ratio and
theoretical speedup, the physical params and MACs, the sparse flatbuffer's size, and the measured LiteRT latency.

This module imports no TensorFlow: the leaderboard reads it.
"""

from effbench.protocol import SuiteProtocol

PROTOCOL = SuiteProtocol(
    suite="pruning",
    description="one trained FP32 protocol backbone (the task's default, or mobilenetv2 on images), pruned by each "
    "method from those weights and fine-tuned once with the task's fine-tune recipe (methods that prune at "
    "initialisation train it from scratch with the task's recipe); sparsity targets are the methods' options",
    closed_kinds=("compression", "training", "elastic"),
    closed_base="suites.pruning.base:PruningMethod",
    options={
        "backbone": "the architecture to prune (a method reference) instead of the task's default; the closed "
        "division also takes mobilenetv2",
        "sparsity": "the fraction of prunable weights (or channels, for structured methods) removed",
    },
    fixed_options=("backbone",),
    closed_values={"backbone": ("resnet-cifar", "mobilenetv2", "mlp")},
    twin="backbone",
    summary_columns={
        "top1": ("", "top1"),
        "fp32_top1": ("", "fp32_top1"),
        "top1_relative": ("", "top1_relative"),
        "sparsity": ("", "sparsity"),
        "compression_ratio": ("", "compression_ratio"),
        "theoretical_speedup": ("", "theoretical_speedup"),
        "params": ("", "params"),
        "params_nonzero": ("", "params_nonzero"),
        "macs": ("", "macs"),
        "macs_nonzero": ("", "macs_nonzero"),
        "sparse_bytes": ("sparse", "size_bytes"),
        "float32_bytes": ("float32", "size_bytes"),
        "float32_t1_ms": ("float32", "litert_t1_median_ms"),
        "train_seconds": ("", "train_seconds"),
    },
    summary_sort="top1_relative",
)
