r"""DoReFa-Net at 1 bit (BiBench version): per-channel scaled sign of weights, plain sign of activations.

Forward and pseudo-gradient (scale detached; sign(0) = +1)::

    weights:      W_b = alpha_c * sign(W)     alpha_c = mean|W| over output channel c
                  dW_b/dW := 1[|W| <= 1]
    activations:  a_b = sign(a)               da_b/da := 1[|a| <= 1]

The weight pseudo-gradient is BiBench's detach trick (``bibench/models/layers/dorefa.py``,
``DoReFaConv2d``: ``binary.detach() - clamp(W, -1, 1).detach() + clamp(W, -1, 1)``): the clipped STE,
without the scale. (Its ``DoReFaLinear`` scales the STE gradient by alpha instead; the convolution's rule
is used on dense layers too.)

Quantizers: :class:`~suites.binarization._quantizers.ChannelScaledSign` for kernels, larq's ``SteSign``
(``clip_value=1``) for inputs. DoReFa's paper uses one mean|W| for the whole layer at 1 bit and
k-bit activations; BiBench's W1A1 baseline, followed here, scales per output channel and signs the
activations. larq's ``DoReFa`` quantizer is the k-bit activation quantizer, not this operator.

Paper: Zhou, Wu, Ni, Zhou, Wen & Zou, "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks
with Low Bitwidth Gradients", 2016 (https://arxiv.org/abs/1606.06160).
"""

from __future__ import annotations

from effbench.tf import tf  # noqa: F401  (first: selects the Keras 2 API larq needs)

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization._quantizers import ChannelScaledSign
from suites.binarization.operators import OperatorMethod


@register_method(
    "dorefa",
    suite="binarization",
    kind="operator",
    paper=Paper(
        "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth Gradients",
        2016,
        "https://arxiv.org/abs/1606.06160",
    ),
    summary="per-channel mean|W| * sign(W) and sign(a), clipped STE on both (BiBench's W1A1 DoReFa)",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class DoReFa(OperatorMethod):
    def input_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)

    def kernel_quantizer(self) -> ChannelScaledSign:
        return ChannelScaledSign()
