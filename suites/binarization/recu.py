r"""ReCU (BiBench version): standardised, clamped weights; per-sample-normalised activations; learned alpha.

Forward and pseudo-gradient (sign(0) = +1; mean and std per output channel c, over its n weights)::

    weights:      w0 = W - mean_c(W)
                  w1 = w0 / (std_c(w0) / (2 sqrt 2)),     std_c = sqrt(var_c + 1e-5), var_c unbiased (n - 1)
                  Q_tau = -mean|w1| * ln(2 - 2 tau)        (over the whole tensor; detached)
                  w2 = clip(w1, -Q_tau, Q_tau)             d/dw1 := 1[|w1| <= Q_tau]
                  W_b = sign(w2)                            dW_b/dw2 := 1 (identity STE)
                  (the mean and std stay in the graph: the gradient flows through the standardisation)
    activations:  a0 = a / sqrt(var_n(a) + 1e-5)  in training, a0 = a at inference (var over H, W, C of
                  sample n, unbiased; not detached)
                  a_b = sign(a0)                            da_b/da0 := max(0, 2 - 2|a0|)  (ApproxSign)
    output:       y = alpha_c * conv(a_b, W_b) + bias,      alpha learned per output channel

The clamp quantile follows the epoch (:class:`~effbench.schedule.EpochScheduled`):
:math:`\tau(e) = A e^{e/E} + B`, :math:`A = 0.14 / (e - 1)`, :math:`B = 0.85 - A`, so
:math:`\tau = 0.85` in the first epoch, rising exponentially toward 0.99 (reached at :math:`e = E`;
the last epoch uses :math:`e = E - 1`). A weight beyond :math:`\pm Q_\tau` is *rectified* to the
clamp, so its gradient is zero until the distribution moves (the paper's "dead weights" revival).

The activation standardisation divides by a positive number, so it never changes the forward sign:
it only rescales where ApproxSign's gradient window sits, and it is absent at inference
(``apply_in_training``), which keeps the converted edge model a plain sign.

Layers: :class:`~suites.binarization._layers.ScaledQuantConv2D` / ``ScaledQuantDense`` with
``output_scale="channel"``; quantizers :class:`ReCUWeightSign` and :class:`ReCUActivationSign`.

Kernel constraint: none. ``weight_clip`` exists because a clipped STE's gradient is zero beyond
:math:`\pm 1`; here the sign sits behind a per-channel standardisation, so the latent weights' scale
is irrelevant to the forward pass, the STE is the identity, and ReCU's own dead zone is the clamp at
:math:`\pm Q_\tau` in standardised units. Clipping the latent weights to [-1, 1] would only distort the
distribution whose quantile :math:`\tau` ReCU reasons about (BiBench and the official code do not clip).

Deviations: BiBench initialises alpha uniformly in [0, 1) (``torch.rand``); the shared scaled layers
start it at 1. sign(0) is +1 rather than PyTorch's 0.

Paper: Xu, Lin, Liu, Chen, Shao, Gao, Tian & Ji, "ReCU: Reviving the Dead Weights in Binary Neural
Networks", ICCV 2021 (https://arxiv.org/abs/2103.12369).
"""

from __future__ import annotations

import math
from typing import Any

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.registry import Paper, Taxonomy, register_method
from effbench.schedule import EpochScheduled
from suites.binarization._layers import output_scaled_layer
from suites.binarization._quantizers import StdNormalizedApproxSign, variance
from suites.binarization.operators import OperatorMethod

TAU_START, TAU_END = 0.85, 0.99
EPSILON = 1e-5  # added to the variances, as in BiBench
STANDARD_DEVIATION = 2.0 * math.sqrt(2.0)  # w1's per-channel standard deviation after the rescaling


def recu_tau(progress: float | tf.Tensor) -> float | tf.Tensor:
    r""":math:`\tau = A e^{p} + B` at progress :math:`p = e / E`: 0.85 at p = 0, 0.99 at p = 1."""
    a = (TAU_END - TAU_START) / (math.e - 1.0)
    exp = math.exp if isinstance(progress, int | float) else tf.exp
    return a * exp(progress) + (TAU_START - a)


@larq.utils.register_keras_custom_object
class ReCUWeightSign(EpochScheduled, larq.quantizers._BaseQuantizer):
    """ReCU's kernel binarizer: per-output-channel standardisation, clamp at the tau quantile, identity-STE sign.

    See the module docstring for the formulas; :attr:`tau` follows the epoch schedule.
    """

    precision = 1

    def build(self, input_shape: tf.TensorShape) -> None:
        self.build_schedule()
        super().build(input_shape)

    @property
    def tau(self) -> tf.Tensor:
        return recu_tau(self.progress)

    def standardise(self, kernel: tf.Tensor) -> tf.Tensor:
        """w1: centred and rescaled to standard deviation 2 sqrt(2) per output channel (last axis)."""
        axes = list(range(len(kernel.shape) - 1))
        centred = kernel - tf.reduce_mean(kernel, axis=axes, keepdims=True)
        return centred / (tf.sqrt(variance(centred, axes, unbiased=True) + EPSILON) / STANDARD_DEVIATION)

    def clamp_value(self, standardised: tf.Tensor) -> tf.Tensor:
        """Q_tau = -mean|w1| ln(2 - 2 tau), detached."""
        return tf.stop_gradient(-tf.reduce_mean(tf.abs(standardised)) * tf.math.log(2.0 - 2.0 * self.tau))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        standardised = self.standardise(inputs)
        bound = self.clamp_value(standardised)
        clamped = tf.clip_by_value(standardised, -bound, bound)
        return super().call(larq.quantizers.ste_sign(clamped, clip_value=None))


@larq.utils.register_keras_custom_object
class ReCUActivationSign(StdNormalizedApproxSign):
    """ReCU's activation binarizer: BiPer's, with the unbiased per-sample variance of BiBench's code."""

    unbiased_variance = True


@register_method(
    "recu",
    suite="binarization",
    kind="operator",
    paper=Paper("ReCU: Reviving the Dead Weights in Binary Neural Networks", 2021, "https://arxiv.org/abs/2103.12369"),
    summary="standardised weights clamped at the annealed tau quantile (0.85 -> 0.99), sign; learned channel alpha",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class ReCU(OperatorMethod):
    def input_quantizer(self) -> ReCUActivationSign:
        return ReCUActivationSign()

    def kernel_quantizer(self) -> ReCUWeightSign:
        return ReCUWeightSign()

    def kernel_constraint(self) -> None:
        return None

    def binary_layer(self, larq_class: type, config: dict[str, Any]) -> keras.layers.Layer:
        return output_scaled_layer(larq_class, config, "channel")
