r"""XNOR-Net++ (BiBench version): plain signs with the clipped STE, and a learned rank-1 output scale.

Forward and pseudo-gradient (sign(0) = +1)::

    activations:  a_b = sign(a)               da_b/da := 1[|a| <= 1]
    weights:      W_b = sign(W)               dW_b/dW := 1[|W| <= 1]
    output:       y = Gamma * conv(a_b, W_b) + bias,   Gamma[h, w, c] = o[c] * h[h] * w[w]

No statistical scale is computed from the weights or activations: XNOR-Net's analytic alpha and K map
are replaced by :math:`\Gamma = o \otimes h \otimes w` (:math:`o \in \mathbb{R}^{C_{out}}`,
:math:`h \in \mathbb{R}^{H_{out}}`, :math:`w \in \mathbb{R}^{W_{out}}`, all initialised to 1), learned
by back-propagation with the rest of the network (the paper's "case 2" factorisation, the one
BiBench uses). A binary Dense layer has only :math:`o`. The convolution itself sees only
:math:`\pm 1`; :math:`\Gamma` is one float multiply per output value, so the layer counts at
1 bit / 1 bit.

Layers: :class:`~suites.binarization._layers.ScaledQuantConv2D` / ``ScaledQuantDense`` with
``output_scale="rank1"``; quantizers: larq's ``SteSign(clip_value=1)`` on both operands.

Deviations: BiBench's PyTorch layer allocates :math:`h, w` of length 2000 and slices them to the output
size; here they are built at the exact output size. BiBench's clipped STE zeroes the gradient at
:math:`|x| = 1` itself; larq's passes it there (a measure-zero difference). Latent weights are clipped
to [-1, 1] (``weight_clip``), as for every clipped-STE operator of the suite.

Paper: Bulat & Tzimiropoulos, "XNOR-Net++: Improved Binary Neural Networks", BMVC 2019
(https://arxiv.org/abs/1909.13863).
"""

from __future__ import annotations

from typing import Any

from effbench.tf import keras

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization._layers import output_scaled_layer
from suites.binarization.operators import OperatorMethod


@register_method(
    "xnorpp",
    suite="binarization",
    kind="operator",
    paper=Paper("XNOR-Net++: Improved Binary Neural Networks", 2019, "https://arxiv.org/abs/1909.13863"),
    summary="sign(a), sign(W) with clipped STE, no statistical scale; output times learned Gamma = o x h x w",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class XNORNetPlusPlus(OperatorMethod):
    def input_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)

    def kernel_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)

    def binary_layer(self, larq_class: type, config: dict[str, Any]) -> keras.layers.Layer:
        return output_scaled_layer(larq_class, config, "rank1")
