r"""Mechanisms shared by the binarization operators: the clipped-STE sign and its two scaled forms.

Private (the leading underscore keeps the registry from importing it as a method module); the operator
modules import from here so each mechanism is written once.

* :func:`clipped_ste_sign` is larq's ``ste_sign`` with ``clip_value=1``: forward ``sign(x)`` with
  ``sign(0) = +1`` (``larq.math.sign``), backward ``1`` where ``|x| <= 1`` and ``0`` elsewhere.
* :func:`mean_abs_per_output_channel` and :func:`mean_abs_per_sample` are the XNOR-Net scales, detached
  (``tf.stop_gradient``), as in BiBench's operator code.
* :class:`ChannelScaledSign` (kernels) and :class:`SampleScaledSign` (activations) are the scaled signs
  as larq quantizers.

A scale multiplies the binary values, so a binary layer still computes its multiply-accumulates as
XNOR-popcount on :math:`\pm 1` operands; the per-channel (or per-sample) float multiply comes after,
once per output value. The complexity track (``tracks._bits.layer_bit_widths``) reads the quantizers'
``precision = 1`` and counts such a layer at 1 bit for weights and activations, the way BiBench and
XNOR-Net count it; the scale multiply itself is not counted (it is O(outputs), not O(MACs)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from effbench.tf import tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

XNOR_NET_URL = "https://arxiv.org/abs/1603.05279"


def clipped_ste_sign(x: tf.Tensor) -> tf.Tensor:
    """sign(x) forward (0 -> +1); the incoming gradient where |x| <= 1, zero elsewhere, backward."""
    return larq.quantizers.ste_sign(x, clip_value=1.0)


def mean_abs_per_output_channel(kernel: tf.Tensor) -> tf.Tensor:
    """mean|W| over every axis but the last (the output channels of a Conv2D / Dense kernel), detached.

    Keeps the reduced axes, so it broadcasts against ``kernel``. For a DepthwiseConv2D kernel
    (kh, kw, channels, multiplier) the last axis is the depth multiplier, so the scale is per multiplier
    rather than per channel: the quantizer sees only the tensor, not the layer.
    """
    axes = list(range(len(kernel.shape) - 1))
    return tf.stop_gradient(tf.reduce_mean(tf.abs(kernel), axis=axes, keepdims=True))


def mean_abs_per_sample(activation: tf.Tensor) -> tf.Tensor:
    """mean|a| over every axis but the batch axis (H, W, C of an image batch), detached; broadcasts."""
    axes = list(range(1, len(activation.shape)))
    return tf.stop_gradient(tf.reduce_mean(tf.abs(activation), axis=axes, keepdims=True))


class _ScaledSign(larq.quantizers._BaseQuantizer):
    """A detached positive scale times the clipped-STE sign; subclasses pick the scale."""

    precision = 1
    # The detached scale of a tensor (mean_abs_per_output_channel or mean_abs_per_sample).
    scale: ClassVar[Callable[[tf.Tensor], tf.Tensor]]

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = self.scale(inputs) * clipped_ste_sign(inputs)
        return super().call(outputs)


@larq.utils.register_keras_custom_object
class ChannelScaledSign(_ScaledSign):
    r"""Kernel binarizer of XNOR-Net, DoReFa (1-bit) and Bi-Real in BiBench: per-output-channel mean|W| * sign(W).

    Forward and pseudo-gradient, with :math:`\alpha_c = \frac{1}{n}\sum_{i} |W_{i,c}|` over the n weights
    of output channel c (a constant to the gradient, ``stop_gradient``)::

        q(W)_{i,c} = alpha_c * sign(W_{i,c})          dq/dW_{i,c} := alpha_c * 1[|W_{i,c}| <= 1]

    with sign(0) = +1. The output is 1-bit: :math:`\pm\alpha_c` per channel, counted at 1 bit.

    Paper: Rastegari, Ordonez, Redmon & Farhadi, "XNOR-Net: ImageNet Classification Using Binary
    Convolutional Neural Networks", ECCV 2016 (https://arxiv.org/abs/1603.05279), as implemented in
    BiBench (https://arxiv.org/abs/2301.11233).
    """

    scale = staticmethod(mean_abs_per_output_channel)


@larq.utils.register_keras_custom_object
class SampleScaledSign(_ScaledSign):
    r"""Activation binarizer of XNOR-Net in BiBench: per-sample mean|a| * sign(a).

    Forward and pseudo-gradient, with :math:`\beta_n = \frac{1}{HWC}\sum_{h,w,c} |a_{n,h,w,c}|` for
    sample n (a constant to the gradient, ``stop_gradient``)::

        q(a)_{n,h,w,c} = beta_n * sign(a_{n,h,w,c})    dq/da_{n,h,w,c} := beta_n * 1[|a_{n,h,w,c}| <= 1]

    with sign(0) = +1. XNOR-Net's paper averages |a| over channels per spatial position (its K map);
    BiBench's simplification, followed here, uses one scale per sample.

    Paper: Rastegari et al., "XNOR-Net", ECCV 2016 (https://arxiv.org/abs/1603.05279), BiBench version.
    """

    scale = staticmethod(mean_abs_per_sample)
