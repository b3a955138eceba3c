"""Whether XNNPACK could run a pruned model with its sparse kernels, and whether it does on this CPU.

XNNPACK (LiteRT's default CPU delegate) has sparse-times-dense kernels for 1x1 convolutions, used only for a
subgraph that (XNNPACK's README, "Sparse Inference"):

1. starts with a 3x3 stride-2 convolution on 3 input channels (where XNNPACK switches to its sparse layout);
2. whose 1x1 convolutions have at least 2/3 of their weights zero;
3. ends in a MEAN (global average pooling) or DEPTH_TO_SPACE, followed only by layers outside the subgraph.

It also turns the sparse path off on x86 processors with AVX (its dense kernels are faster there), so no pruned
model computes faster on such a machine. :func:`sparse_inference_metrics` records both, read from the Keras
graph and the CPU flags, beside the measured latency of the ``sparse`` flatbuffer: a model that meets the rules
is a candidate, not a measured speedup. The full list of ops XNNPACK allows inside the subgraph is not checked.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from effbench.tf import keras
from effbench.track import Metric

SPARSE_SCOPE = "sparse"
MIN_ZERO_FRACTION = 2 / 3
# Layers that may follow the subgraph's final MEAN: the classifier head.
HEAD_LAYERS = (keras.layers.Dense, keras.layers.Flatten, keras.layers.Reshape, keras.layers.Dropout,
               keras.layers.Activation, keras.layers.Softmax)  # fmt: skip
CPUINFO = Path("/proc/cpuinfo")


def _zero_fraction(layer: keras.layers.Layer) -> float:
    kernel = np.asarray(layer.kernel)
    return float(np.mean(kernel == 0))


def unmet_rules(model: keras.Model) -> list[str]:
    """The XNNPACK sparse-inference rules (module docstring) the model breaks, in words; empty if it meets them."""
    convs = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    unmet = []
    first = convs[0] if convs else None
    if first is None or first.kernel_size != (3, 3) or first.strides != (2, 2) or first.kernel.shape[2] != 3:
        unmet.append("the first conv is not a 3x3 stride-2 conv on 3 channels")
    pointwise = [layer for layer in convs if layer.kernel_size == (1, 1)]
    dense_pointwise = [layer.name for layer in pointwise if _zero_fraction(layer) < MIN_ZERO_FRACTION]
    if not pointwise:
        unmet.append("no 1x1 conv")
    elif dense_pointwise:
        unmet.append(f"1x1 convs under 2/3 zeros: {', '.join(dense_pointwise)}")
    means = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    tail = model.layers[means[-1] + 1 :] if means else []
    if not means or not all(isinstance(layer, HEAD_LAYERS) for layer in tail):
        unmet.append("it does not end in a global average pooling (MEAN) before its head")
    return unmet


def x86_with_avx() -> bool:
    """True on an x86 processor whose flags include AVX (XNNPACK's sparse path is then off)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = next((line for line in CPUINFO.read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return True  # an x86 CPU whose flags cannot be read: every x86-64 CPU of the last decade has AVX
    return " avx" in f" {flags.split(':', 1)[-1]}"


def sparse_inference_metrics(model: keras.Model) -> list[Metric]:
    unmet = unmet_rules(model)
    metrics = [Metric("xnnpack_sparse_rules_met", int(not unmet), "bool", SPARSE_SCOPE)]
    if unmet:
        metrics.append(Metric("xnnpack_sparse_unmet", "; ".join(unmet), "text", SPARSE_SCOPE))
    metrics.append(Metric("xnnpack_sparse_enabled_on_cpu", int(not x86_with_avx()), "bool", SPARSE_SCOPE))
    return metrics
