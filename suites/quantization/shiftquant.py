r"""ShiftQuant integer training: shift-grouped sub-8-bit gradients, 4-bit weights and activations, L1 normalization.

Sub-8-bit integer training makes every matmul of a training step integer: the forward :math:`Y = X W` and
both backward ones, :math:`dX = dY\,W^T` and :math:`dW = X^T dY`. So the kernels and the layer inputs are
quantized (forward) and so is the gradient :math:`dY` that reaches each conv / dense output (backward).
Forward and pseudo-gradient of the three pieces, side by side:

**Weights and activations** (option ``bits``, default 4; every conv / dense, first and last included):
``_uniform``'s per-output-channel max-abs kernels and per-tensor min/max-calibrated inputs, with the STE
(:func:`suites.quantization._uniform.fake_quantize`).

**Gradients: ShiftQuant** (:class:`ShiftGradientQuantizer`; options ``gradient_bits``, default 4, and
``groups`` K, default 8). The forward pass is the identity; the backward pass replaces the incoming
gradient :math:`G = dL/dY` (channels on the last axis) by its group quantization whose group scales are
the tensor's scale shifted by a power of two::

    m_c = max |G[..., c]|   (over every axis but the channel)      M = max_c m_c
    k_c = min(floor(log2(M / m_c)), K - 1)                         (the channel's shift, its group)
    s_c = (M / q_max) * 2^-k_c                                     q_max = 2^(b-1) - 1
    Q(G)[..., c] = s_c * clip(round_sr(G[..., c] / s_c), -q_max, q_max)
    forward: y = x             backward: dL/dx := Q(dL/dy)

:math:`\operatorname{round}_{sr}` is stochastic rounding (``rounding=stochastic``, the default: unbiased,
:math:`E[Q(G)] = G`) or round-to-nearest (``rounding=nearest``). Channels whose range is :math:`2^k`
times below the tensor's get a :math:`2^k`-times finer step (no clipping: :math:`m_c / s_c \le q_{max}`),
which is group quantization with K groups; the groups need no memory rearrangement (no sorting of
channels into contiguous groups) because a group is only a shift: in :math:`dX = dY\,W^T`, which sums
over the channels, channel c's integers are shifted left by :math:`K - 1 - k_c` bits before the integer
accumulation and the result scaled once by :math:`2^{-(K-1)} M / q_{max}`; in :math:`dW = X^T dY` the
scale is per output column. Here that arithmetic is simulated (fake quantization in float).

**L1 normalization** (:class:`L1Normalization`, in place of every BatchNormalization): normalise by the
mean absolute deviation instead of the standard deviation, so the statistic needs no square and no square
root and the layer can be computed on integers::

    training:  mu = mean(x), a = mean|x - mu|  (over every axis but the channel; moving averages kept)
    inference: mu, a = the moving averages
    y = gamma * (x - mu) / (a + eps) + beta    (autodiff through mu and a; d|u|/du = sign u)

**From the trained backbone.** Replacing a trained BatchNorm changes its statistics, so each L1 layer
starts from the BatchNorm's running statistics: :math:`\mu` = the BN moving mean, :math:`a` =
:math:`\sqrt{2/\pi}\sqrt{\sigma^2 + \epsilon}` (the mean absolute deviation of a Gaussian of that
variance) and :math:`\gamma_{L1} = \gamma_{BN} (a + \epsilon) / \sqrt{\sigma^2 + \epsilon}`,
:math:`\beta_{L1} = \beta_{BN}`: in inference the L1 layer then computes exactly what the BatchNorm did,
and in training its batch statistic is the BatchNorm's to the extent the activations are Gaussian. A
backbone without BatchNorm (``mlp``) keeps its layers. Then the model fine-tunes with the task's
fine-tune recipe, quantized forward and backward.

**Deployment**: the Keras fake-quantized model (``simulated``: LiteRT has no 4-bit kernels), counted at
``(bits, bits)``; the gradient quantizers are the identity at inference, and the L1 layers fold into a
per-channel affine map as BatchNorm does (2 operations per element).

Deviations (small-faithful): the paper's text and code were not available here, so the exact grouping
axis, K and the rounding of its ShiftQuant are this implementation's assumptions (documented above; the
"4-bit ResNets" of the abstract are taken as 4-bit weights, activations and gradients); activations use a
calibrated static range (deployable) rather than a per-step dynamic one; the L1 layer's arithmetic is
simulated in float (its output is quantized by the next layer's input quantizer) and its own backward
pass is not quantized; speed and FPGA resource claims are not measured (no integer kernels).

Paper: Guo, Liu, Xie, Li, Meng, Ning, Zeng, Wang, Lei & Fang, "Towards Accurate and Efficient Sub-8-Bit
Integer Training", 2024 (https://arxiv.org/abs/2411.10948).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.graph import rewrite, transfer_weights
from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.training import TrainContext, fit
from suites.quantization._tensor_quantizers import quantize_outputs
from suites.quantization._uniform import (
    bit_width_facts,
    calibrate_activation_ranges,
    fake_quantize,
    integer_range,
    quantizable_layer_names,
    quantize_layers,
)
from suites.quantization.base import QuantizationMethod, calibration_samples

ROUNDINGS = ("stochastic", "nearest")
# The mean absolute deviation of a Gaussian over its standard deviation.
GAUSSIAN_MAD_PER_STD = math.sqrt(2.0 / math.pi)
_TINY = 1e-30


def shift_group_steps(gradient: tf.Tensor, bits: int, groups: int) -> tf.Tensor:
    """``s_c = (M / q_max) 2^-k_c`` per channel (last axis), ``k_c = min(floor(log2(M / m_c)), K - 1)``."""
    q_max = integer_range(bits, True)[1]
    channel_peak = tf.reduce_max(tf.abs(gradient), axis=list(range(len(gradient.shape) - 1)))
    peak = tf.maximum(tf.reduce_max(channel_peak), _TINY)
    shift = tf.floor(tf.math.log(peak / tf.maximum(channel_peak, _TINY)) / math.log(2.0))
    shift = tf.clip_by_value(shift, 0.0, float(groups - 1))
    return peak / q_max * tf.pow(2.0, -shift)


def shift_group_quantize(gradient: tf.Tensor, bits: int, groups: int, stochastic: bool) -> tf.Tensor:
    """ShiftQuant's ``Q(G)`` (module docstring): shift-grouped ``bits``-bit quantization, stochastic or nearest.

    Stochastic rounding is ``round(G / s + u - 1/2)``, ``u ~ U[0, 1)``: the floor of ``G / s + u``.
    """
    step = shift_group_steps(gradient, bits, groups)
    if stochastic:
        gradient = gradient + (tf.random.uniform(tf.shape(gradient)) - 0.5) * step
    return fake_quantize(gradient, step, bits)


@keras.utils.register_keras_serializable(package="effbench.quantization")
class ShiftGradientQuantizer(larq.quantizers._BaseQuantizer):
    """The identity forward; ShiftQuant on the gradient backward (module docstring). An output quantizer.

    It quantizes no forward value, so it declares no ``precision``.
    """

    def __init__(self, bits: int = 4, groups: int = 8, rounding: str = "stochastic", **kwargs: Any):
        super().__init__(**kwargs)
        integer_range(bits, True)
        if groups < 1:
            raise ValueError(f"ShiftQuant needs at least one group, not {groups}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding '{rounding}' is not one of {', '.join(ROUNDINGS)}")
        self.bits, self.groups, self.rounding = int(bits), int(groups), rounding

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        @tf.custom_gradient
        def quantized_gradient(x: tf.Tensor) -> tf.Tensor:
            def grad(upstream: tf.Tensor) -> tf.Tensor:
                return shift_group_quantize(upstream, self.bits, self.groups, self.rounding == "stochastic")

            return tf.identity(x), grad

        return super().call(quantized_gradient(inputs))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bits": self.bits, "groups": self.groups, "rounding": self.rounding}


@keras.utils.register_keras_serializable(package="effbench.quantization")
class L1Normalization(keras.layers.Layer):
    r"""Batch normalization by the mean absolute deviation (module docstring), over the last axis's channels.

    ``momentum`` as Keras's BatchNormalization (the moving average keeps ``momentum`` of its old value).
    ``effbench_cost``: 2 operations per element, the per-channel affine map it folds to at inference.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs: Any):
        super().__init__(**kwargs)
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def build(self, input_shape: tf.TensorShape) -> None:
        channels = (int(input_shape[-1]),)
        self.gamma = self.add_weight("gamma", shape=channels, initializer="ones")
        self.beta = self.add_weight("beta", shape=channels, initializer="zeros")
        self.moving_mean = self.add_weight("moving_mean", shape=channels, initializer="zeros", trainable=False)
        self.moving_mad = self.add_weight("moving_mad", shape=channels, initializer="ones", trainable=False)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if training is None:
            training = keras.backend.learning_phase()

        def batch_statistics() -> tuple[tf.Tensor, tf.Tensor]:
            axes = list(range(len(inputs.shape) - 1))
            mean = tf.reduce_mean(inputs, axis=axes)
            mad = tf.reduce_mean(tf.abs(inputs - mean), axis=axes)
            for moving, value in ((self.moving_mean, mean), (self.moving_mad, mad)):
                moving.assign(self.momentum * moving + (1.0 - self.momentum) * tf.stop_gradient(value))
            return mean, mad

        def moving_statistics() -> tuple[tf.Tensor, tf.Tensor]:
            return tf.identity(self.moving_mean), tf.identity(self.moving_mad)

        mean, mad = tf.__internal__.smart_cond.smart_cond(training, batch_statistics, moving_statistics)
        return self.gamma * (inputs - mean) / (mad + self.epsilon) + self.beta

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return input_shape

    def effbench_cost(self, input_shapes: list[tuple[int, ...]], output_shapes: list[tuple[int, ...]]):
        return 0, 2 * math.prod(output_shapes[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


def l1_from_batch_norm(batch_norm: keras.layers.BatchNormalization, l1: L1Normalization) -> None:
    """Set ``l1`` to compute in inference what ``batch_norm`` computes (module docstring, "From the backbone")."""
    mean, variance = batch_norm.moving_mean.numpy(), batch_norm.moving_variance.numpy()
    std = (variance + batch_norm.epsilon) ** 0.5
    mad = GAUSSIAN_MAD_PER_STD * std
    gamma = batch_norm.gamma.numpy() if batch_norm.scale else np.ones_like(mean)
    beta = batch_norm.beta.numpy() if batch_norm.center else np.zeros_like(mean)
    l1.set_weights([gamma * (mad + l1.epsilon) / std, beta, mean, mad])


def with_l1_normalization(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with an :class:`L1Normalization` (started from it) in place of every BatchNorm."""

    def rule(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if type(layer) is not keras.layers.BatchNormalization:
            return None
        axis = layer.get_config()["axis"]
        if axis not in (-1, [-1], [len(layer.input_shape) - 1]):
            raise ValueError(f"BatchNorm '{layer.name}' normalises axis {axis}; L1Normalization takes the last")
        return L1Normalization(momentum=layer.momentum, epsilon=layer.epsilon, name=layer.name)

    def transfer(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
        if isinstance(target, L1Normalization):
            l1_from_batch_norm(source, target)
        else:
            transfer_weights(source, target)

    return rewrite(model, rule, transfer)


@register_method(
    "shiftquant",
    suite="quantization",
    kind="training",
    paper=Paper("Towards Accurate and Efficient Sub-8-Bit Integer Training", 2024, "https://arxiv.org/abs/2411.10948"),
    summary="integer training: 4-bit weights/activations, gradients group-quantized to 4 bits with power-of-two "
    "(shift) group scales, L1 normalization (mean absolute deviation) in place of BatchNorm; fine-tuned",
    taxonomy=Taxonomy(weight_bits=4, activation_bits=4, applied="training", data="labelled"),
    scale="small-faithful",
)
class ShiftQuant(QuantizationMethod):
    """Options: ``bits`` (weights and activations, 4), ``gradient_bits`` (4), ``groups`` (K, 8),
    ``rounding`` (of the gradients: ``stochastic`` or ``nearest``), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {
        **QuantizationMethod.default_options, "bits": 4, "gradient_bits": 4, "groups": 8, "rounding": "stochastic",
    }  # fmt: skip

    def gradient_quantizer(self) -> ShiftGradientQuantizer:
        return ShiftGradientQuantizer(self.options["gradient_bits"], self.options["groups"], self.options["rounding"])

    def integer_training_model(self, float_model: keras.Model) -> keras.Model:
        """L1 normalization, ``bits``-bit kernels and inputs, ShiftQuant on every conv / dense output gradient.

        Activation ranges are unset: calibrate them (``_uniform.calibrate_activation_ranges``) before use.
        """
        bits = int(self.options["bits"])
        model = with_l1_normalization(float_model)
        names = quantizable_layer_names(model)
        model = quantize_layers(model, dict.fromkeys(names, (bits, bits)))
        return quantize_outputs(model, {name: self.gradient_quantizer() for name in names})

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        model = self.integer_training_model(float_model)
        samples, calibration = calibration_samples(context)
        calibrate_activation_ranges(model, samples)
        history, seconds = fit(model, context)
        facts = {
            "simulated": True,
            "bit_widths": bit_width_facts(model),
            "gradients": {key: self.options[key] for key in ("gradient_bits", "groups", "rounding")},
            "normalization": "l1",
            "calibration": {**calibration, "use": "activation ranges"},
        }
        return Artifact(model=model, history=history, train_seconds=seconds, facts=facts)
