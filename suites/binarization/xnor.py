r"""XNOR-Net (BiBench version): scaled signs of weights and activations, clipped STE.

Forward and pseudo-gradient (scales detached; sign(0) = +1)::

    weights:      W_b = alpha_c * sign(W)     alpha_c = mean|W| over output channel c
                  dW_b/dW := 1[|W| <= 1]
    activations:  a_b = beta_n * sign(a)      beta_n = mean|a| over (H, W, C) of sample n
                  da_b/da := 1[|a| <= 1]

The pseudo-gradients are BiBench's (``bibench/models/layers/xnor.py``, ``XNORConv2d``): both operands are
written with the detach trick ``(scale * sign(x)).detach() - clamp(x, -1, 1).detach() + clamp(x, -1, 1)``,
so the scales shape the forward values but not the gradients (the clipped STE, unscaled).

Quantizers: :class:`~suites.binarization._quantizers.ChannelScaledSign` for kernels and
:class:`~suites.binarization._quantizers.SampleScaledSign` for inputs. Both are 1-bit: the scales
multiply the XNOR-popcount result once per output value, so the complexity track counts the binary
layers at 1 bit / 1 bit. Deviations from the paper, as in BiBench: one activation scale per sample
instead of XNOR-Net's per-position K map, and the detached scales. BiBench's ``XNORLinear`` differs from
its convolution (mean-centred rows, alpha-scaled gradients); the convolution's rule is used on dense
layers too (the ``mlp`` backbone).

Paper: Rastegari, Ordonez, Redmon & Farhadi, "XNOR-Net: ImageNet Classification Using Binary
Convolutional Neural Networks", ECCV 2016 (https://arxiv.org/abs/1603.05279).
"""

from __future__ import annotations

from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization._quantizers import XNOR_NET_URL, ChannelScaledSign, SampleScaledSign
from suites.binarization.operators import OperatorMethod


@register_method(
    "xnor",
    suite="binarization",
    kind="operator",
    paper=Paper("XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks", 2016, XNOR_NET_URL),
    summary="per-channel mean|W| * sign(W) and per-sample mean|a| * sign(a), clipped STE (BiBench version)",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class XNORNet(OperatorMethod):
    def input_quantizer(self) -> SampleScaledSign:
        return SampleScaledSign()

    def kernel_quantizer(self) -> ChannelScaledSign:
        return ChannelScaledSign()
