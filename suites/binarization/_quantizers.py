r"""Mechanisms shared by the binarization operators: the clipped-STE sign and its two scaled forms.

Private (the leading underscore keeps the registry from importing it as a method module); the operator
modules import from here so each mechanism is written once.

* :func:`straight_through` is the detach trick: a quantized value forward, the identity backward.
* :func:`clipped_ste_sign` is larq's ``ste_sign`` with ``clip_value=1``: forward ``sign(x)`` with
  ``sign(0) = +1`` (``larq.math.sign``), backward ``1`` where ``|x| <= 1`` and ``0`` elsewhere.
* :func:`mean_abs_per_output_channel` and :func:`mean_abs_per_sample` are the XNOR-Net scales, detached
  (``tf.stop_gradient``), as in BiBench's operator code.
* :func:`scaled_clipped_ste_sign` is ``scale * sign(x)`` with BiBench's detach-trick gradient: the
  clipped STE, *unscaled*.
* :class:`ChannelScaledSign` (kernels) and :class:`SampleScaledSign` (activations) are the scaled signs
  as larq quantizers.

A scale multiplies the binary values, so a binary layer still computes its multiply-accumulates as
XNOR-popcount on :math:`\pm 1` operands; the per-channel (or per-sample) float multiply comes after,
once per output value. The complexity track (``effbench.bits.layer_bit_widths``) reads the quantizers'
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


def straight_through(x: tf.Tensor, quantized: tf.Tensor) -> tf.Tensor:
    """``quantized`` forward, the identity to ``x`` backward: ``x + stop_gradient(quantized - x)``."""
    return x + tf.stop_gradient(quantized - x)


def clipped_ste_sign(x: tf.Tensor) -> tf.Tensor:
    """sign(x) forward (0 -> +1); the incoming gradient where |x| <= 1, zero elsewhere, backward."""
    return larq.quantizers.ste_sign(x, clip_value=1.0)


def scaled_clipped_ste_sign(x: tf.Tensor, scale: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """``scale(x) * sign(x)`` forward (0 -> +1); the incoming gradient where |x| <= 1, zero elsewhere, backward.

    BiBench's operators write it with the detach trick (``xnor.py``, ``dorefa.py``, ``bireal.py``,
    ``react.py``: ``binary.detach() - clamp(x, -1, 1).detach() + clamp(x, -1, 1)`` with ``binary = scale *
    sign(x)``), whose gradient is that of ``clamp(x, -1, 1)``: the scale is in the forward value only. A
    custom gradient gives the same gradient with the forward value exactly ``scale * sign(x)``.
    """

    @tf.custom_gradient
    def quantize(x: tf.Tensor) -> tf.Tensor:
        def grad(upstream: tf.Tensor) -> tf.Tensor:
            return upstream * tf.cast(tf.abs(x) <= 1.0, upstream.dtype)

        return scale(x) * larq.math.sign(x), grad

    return quantize(x)


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
    """A positive scale times the sign, with the unscaled clipped STE (:func:`scaled_clipped_ste_sign`);
    subclasses pick the scale."""

    precision = 1
    # The scale of a tensor (mean_abs_per_output_channel or mean_abs_per_sample).
    scale: ClassVar[Callable[[tf.Tensor], tf.Tensor]]

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return super().call(scaled_clipped_ste_sign(inputs, self.scale))


@larq.utils.register_keras_custom_object
class ChannelScaledSign(_ScaledSign):
    r"""Kernel binarizer of XNOR-Net, DoReFa (1-bit) and Bi-Real in BiBench: per-output-channel mean|W| * sign(W).

    Forward and pseudo-gradient, with :math:`\alpha_c = \frac{1}{n}\sum_{i} |W_{i,c}|` over the n weights
    of output channel c (a constant to the gradient, ``stop_gradient``)::

        q(W)_{i,c} = alpha_c * sign(W_{i,c})          dq/dW_{i,c} := 1[|W_{i,c}| <= 1]

    with sign(0) = +1. The pseudo-gradient is BiBench's (the detach trick of its ``XNORConv2d``,
    ``DoReFaConv2d``, ``BiRealConv2d``, ``ReActConv2d``): the clipped STE without the scale. The output is
    1-bit: :math:`\pm\alpha_c` per channel, counted at 1 bit. On dense layers too: BiBench's ``XNORLinear``
    and ``DoReFaLinear`` instead scale the STE gradient by alpha (and ``XNORLinear`` mean-centres each
    row first); the convolutions' rule, which its CNN backbones train with, is applied to every layer here.

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

        q(a)_{n,h,w,c} = beta_n * sign(a_{n,h,w,c})    dq/da_{n,h,w,c} := 1[|a_{n,h,w,c}| <= 1]

    with sign(0) = +1: the pseudo-gradient is that of BiBench's ``XNORConv2d`` (the detach trick, the
    clipped STE without the scale). XNOR-Net's paper averages |a| over channels per spatial position (its K map);
    BiBench's simplification, followed here, uses one scale per sample.

    Paper: Rastegari et al., "XNOR-Net", ECCV 2016 (https://arxiv.org/abs/1603.05279), BiBench version.
    """

    scale = staticmethod(mean_abs_per_sample)


# ---------------------------------------------------------------------------------------------------------------
# Elastic (learned-step) activation quantizer, shared by ternary-nlg and binarydm-lmb.
# ---------------------------------------------------------------------------------------------------------------

ELASTIC_QUANT_URL = "https://arxiv.org/abs/2306.01841"  # Liu et al., "Binary and Ternary Natural Language Generation"


def elastic_levels(bits: int) -> tuple[int, int]:
    """(Q_n, Q_p) of a signed k-bit grid; 1 and 2 bits are the binary / ternary grid [-1, 1] (official code)."""
    if bits <= 2:
        return -1, 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def elastic_quantize(v: tf.Tensor, step: tf.Tensor, bits: int) -> tf.Tensor:
    r"""alpha * q(v / alpha) with LSQ pseudo-gradients; ``step`` is the scalar alpha (a tensor, not a variable).

    With :math:`u = v/\alpha` and :math:`g = 1/\sqrt{N Q_p}` (N elements of ``v``)::

        bits == 1:  y = alpha * sign(v)                         dy/dv := 1[|u| <= 1]
                                                                 dy/dalpha := g * sign(v)
        bits >= 2:  y = alpha * clip(round(u), Q_n, Q_p)        dy/dv := 1[Q_n <= u <= Q_p]
                                                                 dy/dalpha := g * (round(u) - u inside,
                                                                              Q_n below, Q_p above)

    sign(0) = +1; ``round`` is half-to-even (as ``torch.round``); alpha is floored at 1e-5.
    """
    low, high = elastic_levels(bits)

    @tf.custom_gradient
    def quantize(v: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
        alpha = tf.maximum(alpha, 1e-5)
        u = v / alpha
        q = larq.math.sign(u) if bits == 1 else tf.clip_by_value(tf.round(u), float(low), float(high))

        def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            below, above = u < low, u > high
            middle = tf.cast(tf.logical_not(below | above), v.dtype)
            scale = tf.math.rsqrt(tf.cast(tf.size(v), v.dtype) * float(high))
            if bits == 1:
                local = q
            else:
                local = tf.where(below, float(low), tf.where(above, float(high), tf.round(u) - u))
            return upstream * middle, tf.reduce_sum(upstream * local) * scale

        return alpha * q, grad

    return quantize(v, step)


@larq.utils.register_keras_custom_object
class ElasticQuantizer(larq.quantizers._BaseQuantizer):
    r"""Elastic activation quantizer of Liu et al. (ACL 2023): a learned step and, optionally, a learned shift.

    Forward, with learned scalar step :math:`\alpha` and learned per-channel shift :math:`\beta` (last axis;
    the official code's ``LearnableBias`` ``move``, :math:`x + b` with :math:`b = -\beta`)::

        x_q = alpha * q((x - beta) / alpha)       (q of :func:`elastic_quantize`: sign at 1 bit, the ternary
                                                   grid at 2 bits, the signed k-bit grid above)

    Pseudo-gradients: :func:`elastic_quantize` (LSQ, Esser et al., https://arxiv.org/abs/1902.08153);
    beta receives minus the gradient of x. ``alpha`` starts at 1; :func:`initialize_elastic_steps` sets
    it from data as the official code does on its first batch: :math:`2\,\mathrm{mean}|x| / \sqrt{Q_p}`.
    ``precision`` is ``bits`` (2 for the ternary grid: a ternary value takes 2 bits packed).
    """

    def __init__(self, bits: int = 8, shift: bool = True, **kwargs):
        if bits < 1:
            raise ValueError(f"bits is {bits}, expected >= 1")
        super().__init__(**kwargs)
        self.bits = int(bits)
        self.shift = bool(shift)
        self.precision = self.bits

    def build(self, input_shape: tf.TensorShape) -> None:
        self.step = self.add_weight(name="elastic_step", shape=(), initializer="ones")
        if self.shift:
            self.offset = self.add_weight(name="elastic_offset", shape=(input_shape[-1],), initializer="zeros")
        super().build(input_shape)

    def centred(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs - self.offset if self.shift else inputs

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return super().call(elastic_quantize(self.centred(inputs), tf.convert_to_tensor(self.step), self.bits))

    def initial_step(self, inputs: tf.Tensor) -> tf.Tensor:
        """The official data initialisation of alpha: 2 mean|x - beta| / sqrt(Q_p)."""
        return 2.0 * tf.reduce_mean(tf.abs(self.centred(inputs))) / float(elastic_levels(self.bits)[1]) ** 0.5

    def get_config(self) -> dict:
        return {**super().get_config(), "bits": self.bits, "shift": self.shift}


def initialize_elastic_steps(model, x) -> None:
    """Set every binary layer's :class:`ElasticQuantizer` step from its input on the batch ``x``."""
    from effbench.tf import keras

    layers = [layer for layer in model.layers if isinstance(getattr(layer, "input_quantizer", None), ElasticQuantizer)]
    if not layers:
        return
    inputs = keras.Model(model.inputs, [layer.input for layer in layers])(x, training=False)
    inputs = inputs if isinstance(inputs, list | tuple) else [inputs]
    for layer, activation in zip(layers, inputs, strict=True):
        layer.input_quantizer.step.assign(layer.input_quantizer.initial_step(activation))


def apply_in_training(training: bool | tf.Tensor | None, function: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor):
    """``function(x)`` when the layer runs in training mode, ``x`` itself otherwise (``None`` = inference).

    For mechanisms that exist only while training (ReCU's per-sample activation standardisation,
    FDA's noise adaptation): the inference graph, and so the converted edge model, never holds them.
    ``training`` may be a Python bool or a symbolic tensor (Keras' call context passes either).
    """
    if training is None:
        return x
    return tf.__internal__.smart_cond.smart_cond(training, lambda: function(x), lambda: x)


# ---------------------------------------------------------------------------------------------------------
# Std-normalised sign with the ApproxSign backward (BiPer; ReCU's activations in BiBench use the same rule).
# Added by the BiPer implementation; keep this block self-contained.
# ---------------------------------------------------------------------------------------------------------

STD_EPSILON = 1e-5


def variance(x: tf.Tensor, axes: list[int], unbiased: bool = False) -> tf.Tensor:
    """Var(x) over ``axes``, kept for broadcasting; ``unbiased`` divides by n - 1 (PyTorch's ``var``), else by n."""
    count = 1
    for axis in axes:
        count *= x.shape[axis]
    centred = x - tf.reduce_mean(x, axis=axes, keepdims=True)
    return tf.reduce_sum(tf.square(centred), axis=axes, keepdims=True) / (max(count - 1, 1) if unbiased else count)


def per_sample_std(activation: tf.Tensor, epsilon: float = STD_EPSILON, unbiased: bool = False) -> tf.Tensor:
    """sqrt(Var(a) + eps) over every axis but the batch axis, *not* detached; broadcasts against ``activation``."""
    axes = list(range(1, len(activation.shape)))
    return tf.sqrt(variance(activation, axes, unbiased) + epsilon)


@larq.utils.register_keras_custom_object
class StdNormalizedApproxSign(larq.quantizers._BaseQuantizer):
    r"""Activation binarizer of BiPer (and ReCU): sign of the per-sample standardised input, ApproxSign backward.

    Forward and pseudo-gradient, with :math:`\sigma_n = \sqrt{\operatorname{Var}(a_n) + 10^{-5}}` over
    (H, W, C) of sample n, in training only (part of the graph, so the gradient flows through it too)::

        training:   q(a) = sign(a / sigma_n)        dq/da := ApproxSign'(a / sigma_n) * d(a / sigma_n)/da
        inference:  q(a) = sign(a)                  (the same values: sigma_n > 0 does not change a sign)

    with ApproxSign'(u) = max(0, 2 - 2|u|) (larq's ``approx_sign``) and sign(0) = +1. The inference
    form has no normalisation, so the deployed graph is a plain sign that Larq Compute Engine fuses.
    The variance is the population variance (PyTorch's ``var`` in the official code is the unbiased one;
    the two differ by a factor (n - 1)/n inside the square root, n = H·W·C); a subclass sets
    ``unbiased_variance = True`` for the latter (ReCU, as BiBench).
    """

    precision = 1
    unbiased_variance: ClassVar[bool] = False

    def standardise(self, activation: tf.Tensor) -> tf.Tensor:
        return activation / per_sample_std(activation, unbiased=self.unbiased_variance)

    def call(self, inputs: tf.Tensor, training: bool | tf.Tensor | None = None) -> tf.Tensor:
        normalised = apply_in_training(training, self.standardise, inputs)
        return super().call(larq.quantizers.approx_sign(normalised))
