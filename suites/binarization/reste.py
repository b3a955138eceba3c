r"""ReSTE: sign forward, the derivative of a power function backward, its exponent annealed over training.

Forward and pseudo-gradient, for activations and latent weights alike (sign(0) = +1), with the interval
:math:`m = 0.1`, the threshold :math:`t = 1.5` and the exponent :math:`o \ge 1`::

    q(x) = sign(x)        dq/dx := (1/o) * |x|^((1 - o)/o)     for m < |x| <= t
                                   m^(1/o) / m                  for |x| <= m   (the secant slope of |x|^(1/o)
                                                                                on [0, m]: finite at 0)
                                   0                            for |x| > t

The backward is the derivative of the *rectified estimator* :math:`\operatorname{sign}(x)|x|^{1/o}`,
which tends to sign(x) as o grows: o = 1 is the clipped STE with window t (gradient 1 on |x| <= t), a
larger o lowers the estimating error at the price of a less stable gradient. The exponent is annealed
with the training progress :math:`e/E` (an :class:`~effbench.schedule.EpochScheduled` quantizer, so it is
saved with the model and set each epoch by the operator's schedule callback)::

    o(e) = 1 + (o_end - 1) * (1 - cos(pi/2 * e/E)),      o_end = 3

for the weights and the activations alike, as in the official code. Weights are scaled by the layer-wise
scalar :math:`\overline{|W|}` (one number per layer), *not* detached, as in the official code::

    W_b = mean|W| * sign(W)        dW_b/dW_i := mean|W| * dq/dW_i + sign(W_i)/n * sum_j(upstream_j * sign(W_j))

The binary layers are larq ``QuantConv2D`` / ``QuantDense`` with :class:`ReSTESign` quantizers (1 bit
each: a per-layer scale multiplies the XNOR-popcount result once per output value).

Indicators (the paper's two, logged per epoch as training curves by :class:`ReSTEIndicators`; the
accuracy record's ``curves`` carry them): ``reste_o`` (the exponent of the epoch),
``reste_estimating_error`` :math:`= \sum_{layers} \lVert \operatorname{sign}(w)|w|^{1/o} - \operatorname{sign}(w)
\rVert_2` over the latent kernels of the binary layers at the epoch's o, and ``reste_gradient_stability``
:math:`= \sum_{layers} \operatorname{Var}(|\partial L / \partial w|)` (unbiased variance, as PyTorch's ``var``),
from the gradients of one fixed batch (the first 128 training examples, training mode; the model's
non-trainable state, BN statistics included, is restored afterwards).

Deviations: the official code evaluates the estimating error at ``o_end`` (the indicator of a run's final
estimator); here it is at the epoch's o, so the curve shows the annealing. Its gradient stability uses the
last training batch of each epoch; here a fixed batch, so epochs compare on the same data. The official
code trains without a weight clip (gradients vanish beyond t = 1.5 anyway), and so does this operator
(``kernel_constraint`` is None): the protocol's clip to [-1, 1] would cut the window [1, 1.5] off.

Paper: Wu, Huang, Wang, Yin & Wang, "Estimator Meets Equilibrium Perspective: A Rectified Straight
Through Estimator for Binary Neural Networks Training", ICCV 2023 (https://arxiv.org/abs/2308.06689);
official code: https://github.com/DravenALG/ReSTE.

Options: ``o_end`` (3.0), ``threshold`` (t, 1.5), ``interval`` (m, 0.1).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.registry import Paper, Taxonomy, register_method
from effbench.schedule import EpochScheduled
from effbench.training import TrainContext, classification_loss
from suites.binarization.operators import OperatorMethod

INDICATOR_BATCH = 128


def annealed_exponent(progress: tf.Tensor | float, o_end: float) -> tf.Tensor:
    """o(e) = 1 + (o_end - 1)(1 - cos(pi/2 * e/E)): 1 in the first epoch, close to o_end in the last."""
    progress = tf.cast(progress, tf.float32)
    return 1.0 + (o_end - 1.0) * (1.0 - tf.cos(0.5 * math.pi * progress))


def reste_gradient(x: tf.Tensor, o: tf.Tensor | float, threshold: float, interval: float) -> tf.Tensor:
    """The ReSTE pseudo-gradient dq/dx at x (see the module docstring)."""
    o = tf.cast(o, x.dtype)
    magnitude = tf.abs(x)
    # |x| is floored at m before the power, so the unselected branch never computes 0^(negative) = inf.
    power = (1.0 / o) * tf.pow(tf.maximum(magnitude, interval), (1.0 - o) / o)
    secant = tf.pow(tf.constant(interval, x.dtype), 1.0 / o) / interval
    inner = tf.where(magnitude <= interval, secant, power)
    return tf.where(magnitude <= threshold, inner, tf.zeros_like(x))


def reste_sign(x: tf.Tensor, o: tf.Tensor | float, threshold: float = 1.5, interval: float = 0.1) -> tf.Tensor:
    """sign(x) forward (0 -> +1), :func:`reste_gradient` times the incoming gradient backward."""

    @tf.custom_gradient
    def _sign(x: tf.Tensor) -> tuple[tf.Tensor, Any]:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            return dy * reste_gradient(x, o, threshold, interval)

        return larq.math.sign(x), grad

    return _sign(x)


def rectified_estimate(w: np.ndarray, o: float) -> np.ndarray:
    """sign(w)|w|^(1/o), the estimator whose derivative ReSTE back-propagates (sign(0) = +1)."""
    return np.where(w >= 0, 1.0, -1.0) * np.abs(w) ** (1.0 / o)


@larq.utils.register_keras_custom_object
class ReSTESign(EpochScheduled, larq.quantizers._BaseQuantizer):
    """ReSTE's binarizer (module docstring); ``scaled=True`` multiplies by the layer-wise mean|x| (kernels)."""

    precision = 1

    def __init__(
        self, o_end: float = 3.0, threshold: float = 1.5, interval: float = 0.1, scaled: bool = False, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.o_end, self.threshold, self.interval, self.scaled = float(o_end), float(threshold), float(interval), scaled

    def build(self, input_shape: tf.TensorShape) -> None:
        self.build_schedule()
        super().build(input_shape)

    @property
    def exponent(self) -> tf.Tensor:
        """The epoch's o, from the schedule state."""
        return annealed_exponent(self.progress, self.o_end)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = reste_sign(inputs, self.exponent, self.threshold, self.interval)
        if self.scaled:
            outputs = tf.reduce_mean(tf.abs(inputs)) * outputs  # not detached, as the official code
        return super().call(outputs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(o_end=self.o_end, threshold=self.threshold, interval=self.interval, scaled=self.scaled)
        return config


def reste_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's binary layers whose kernels ReSTE binarizes."""
    return [layer for layer in model.layers if isinstance(getattr(layer, "kernel_quantizer", None), ReSTESign)]


def estimating_error(model: keras.Model, o: float) -> float:
    """sum over binary layers of ||sign(w)|w|^(1/o) - sign(w)||_2 over the latent kernel w."""
    total = 0.0
    for layer in reste_layers(model):
        w = layer.kernel.numpy().astype(np.float64).ravel()
        total += float(np.linalg.norm(rectified_estimate(w, o) - np.where(w >= 0, 1.0, -1.0)))
    return total


def gradient_stability(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """sum over binary layers of Var(|dL/dw|) on the batch (x, y), training mode; model state restored."""
    layers = reste_layers(model)
    state = [weight.numpy() for weight in model.non_trainable_weights]
    with tf.GradientTape() as tape:
        loss = classification_loss()(y, model(x, training=True))
    gradients = tape.gradient(loss, [layer.kernel for layer in layers])
    for weight, value in zip(model.non_trainable_weights, state, strict=True):
        weight.assign(value)
    return float(sum(np.var(np.abs(g.numpy()).ravel(), ddof=1) for g in gradients if g is not None))


class ReSTEIndicators(keras.callbacks.Callback):
    """Adds ``reste_o``, ``reste_estimating_error`` and ``reste_gradient_stability`` to each epoch's logs."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        super().__init__()
        self.x, self.y = x, y

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        layers = reste_layers(self.model)
        o = float(layers[0].kernel_quantizer.exponent) if layers else 1.0
        logs["reste_o"] = o
        logs["reste_estimating_error"] = estimating_error(self.model, o)
        logs["reste_gradient_stability"] = gradient_stability(self.model, self.x, self.y)


@register_method(
    "reste",
    suite="binarization",
    kind="operator",
    paper=Paper(
        "Estimator Meets Equilibrium Perspective: A Rectified Straight Through Estimator for Binary Neural "
        "Networks Training",
        2023,
        "https://arxiv.org/abs/2308.06689",
    ),
    summary="sign forward, power-function derivative (1/o)|x|^((1-o)/o) backward on |x| <= 1.5, o annealed 1 -> 3",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class ReSTE(OperatorMethod):
    default_options: ClassVar[dict[str, Any]] = {
        **OperatorMethod.default_options, "o_end": 3.0, "threshold": 1.5, "interval": 0.1,
    }  # fmt: skip

    def _quantizer(self, scaled: bool) -> ReSTESign:
        options = self.options
        return ReSTESign(options["o_end"], options["threshold"], options["interval"], scaled=scaled)

    def input_quantizer(self) -> ReSTESign:
        return self._quantizer(scaled=False)

    def kernel_quantizer(self) -> ReSTESign:
        return self._quantizer(scaled=True)

    def kernel_constraint(self) -> None:
        return None

    def callbacks(self, model: keras.Model, context: TrainContext) -> list[keras.callbacks.Callback]:
        count = min(INDICATOR_BATCH, len(context.splits.x_train))
        return [ReSTEIndicators(context.splits.x_train[:count], context.splits.y_train[:count])]
