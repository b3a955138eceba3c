r"""Bi-Real Net's operator: ApproxSign for activations, per-channel scaled sign with clipped STE for weights.

Forward and pseudo-gradient (scale detached; sign(0) = +1)::

    activations:  a_b = sign(a)               da_b/da := 2 + 2a on [-1, 0), 2 - 2a on [0, 1), 0 elsewhere
                                                       (= max(0, 2 - 2|a|), the derivative of the
                                                       piecewise quadratic ApproxSign)
    weights:      W_b = alpha_c * sign(W)     alpha_c = mean|W| over output channel c
                  dW_b/dW := 1[|W| <= 1]

Quantizers: larq's ``ApproxSign`` for inputs (its gradient is (2 - 2|a|) on |a| <= 1, which is 0 at
|a| = 1, so equal to the formula above everywhere), and
:class:`~suites.binarization._quantizers.ChannelScaledSign` for kernels. The paper's magnitude-aware
weight gradient is BiBench's detach trick here (``bibench/models/layers/bireal.py``, ``BiRealConv2d``:
``binary.detach() - clamp(W, -1, 1).detach() + clamp(W, -1, 1)``), whose gradient is the clipped STE
without the scale; the activations' ApproxSign is the same trick with the piecewise quadratic.

The paper's other half, a real-valued shortcut around every binary convolution, is architecture-level
and not part of the operator: the default backbone of the image tasks, ``resnet-cifar``, already has a
real-valued shortcut around every basic block (two binary convolutions), not around each one.

Paper: Liu, Wu, Luo, Yang, Liu & Cheng, "Bi-Real Net: Enhancing the Performance of 1-bit CNNs With
Improved Representational Capability and Advanced Training Algorithm", ECCV 2018
(https://arxiv.org/abs/1808.00278).
"""

from __future__ import annotations

from effbench.tf import tf  # noqa: F401  (first: selects the Keras 2 API larq needs)

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization._quantizers import ChannelScaledSign
from suites.binarization.operators import OperatorMethod


@register_method(
    "bireal",
    suite="binarization",
    kind="operator",
    paper=Paper(
        "Bi-Real Net: Enhancing the Performance of 1-bit CNNs With Improved Representational Capability "
        "and Advanced Training Algorithm",
        2018,
        "https://arxiv.org/abs/1808.00278",
    ),
    summary="ApproxSign (2 - 2|a| on |a| < 1) for activations, per-channel mean|W| * sign(W) with clipped STE",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class BiReal(OperatorMethod):
    def input_quantizer(self) -> larq.quantizers.ApproxSign:
        return larq.quantizers.ApproxSign()

    def kernel_quantizer(self) -> ChannelScaledSign:
        return ChannelScaledSign()
