r"""FDA (BiBench version): sign forward, a truncated Fourier series of the sign backward, noise adaptation.

Forward and pseudo-gradient (sign(0) = +1; :math:`\omega = 0.1`; the same estimator for weights and
activations)::

    x_b = sign(x)          dx_b/dx := (4 omega / pi) * sum_{i=0..n} cos((2i + 1) omega x)   where |x| <= 1
                                   := 0                                                       where |x| > 1

The sum is the derivative of the first :math:`n + 1` terms of the Fourier sine series of a square
wave of period :math:`2\pi/\omega` (the sign on :math:`|x| < \pi/\omega`); its closed form is
:math:`\frac{2\omega}{\pi}\,\sin(2(n+1)\omega x) / \sin(\omega x)` (:math:`\frac{4\omega}{\pi}(n+1)` at 0).
:math:`n` grows with the epoch: :math:`n = 9 + \lfloor 9e/E \rfloor` (9 in the first epoch, up to 17 in
the last; 18 would be epoch :math:`E`). The graph always holds the 19 terms :math:`i = 0..18`, each
masked by :math:`[i \le n]`, so a new :math:`n` needs no retrace.

Noise adaptation (training only, see the deviations): a small MLP learns the residual between the
sign and its Fourier approximation and adds it, weighted by a decaying :math:`\alpha`, to the binary
operands::

    e(v) = fc2(relu(fc1(v))) + 0.1 sin(v)       fc1: d -> max(1, d // 64), fc2: back to d, no biases
    W_b = mean_c|W| * (sign(W) + alpha * e(W_c))        W_c: the d = kh kw C_in weights of output channel c
    a_b = sign(a) + alpha * e(a_{n,h,w,:})              over the C_in channels at each position
    alpha = 0.05 (1 + cos(pi (e + 1) / E))              0.1 -> 0, exactly 0 in the last epoch

and gradients flow through the MLP to the latent tensor and to the MLP's weights. The weight scale
:math:`\operatorname{mean}_c|W|` per output channel is detached (as in XNOR-Net). Both :math:`n` and
:math:`\alpha` follow :class:`~effbench.schedule.EpochScheduled` (each quantizer keeps its own copy).

Deviations from BiBench's code (``bibench/models/layers/fda.py``):

- The noise term is added in training mode only. BiBench adds it at evaluation too, but
  :math:`\alpha = 0` in the last epoch, so a trained model is the same either way; only the
  validation curves of earlier epochs differ. In return the inference graph (and the converted edge
  model) is a plain scaled sign with no MLP, and its convolutions see only :math:`\pm 1`.
- Hidden width ``max(1, d // 64)``: BiBench builds a zero-width MLP when :math:`d < 64` (its output
  is then just the sine term); here it keeps one hidden unit.
- The MLP's weights start as PyTorch's ``nn.Linear`` default (uniform in :math:`\pm 1/\sqrt{\text{fan-in}}`).
- The complexity track counts the MLP's weights as float parameters of the binary layers although
  they are training-only (they are weights of the layer, and the track has no notion of
  training-only weights): FDA's ``size_bytes`` and ``params`` are over-counted by them.

Latent weights are clipped to [-1, 1] (``weight_clip``): the Fourier estimator is zero beyond
:math:`|x| = 1`, the same dead zone as the clipped STE.

Paper: Xu, Han, Xu, Tang, Xu & Wang, "Learning Frequency Domain Approximation for Binary Neural
Networks", NeurIPS 2021 (https://arxiv.org/abs/2103.00841).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.registry import Paper, Taxonomy, register_method
from effbench.schedule import EpochScheduled
from suites.binarization._quantizers import apply_in_training, mean_abs_per_output_channel
from suites.binarization.operators import OperatorMethod

OMEGA = 0.1
TERMS_START, TERMS_GROWTH = 9, 9  # n = 9 + floor(9 e / E)
MAX_TERMS = TERMS_START + TERMS_GROWTH + 1  # i = 0..18
NOISE_WEIGHT_START = 0.1
NOISE_REDUCTION = 64  # the MLP's hidden width is d // 64
NOISE_SINE_WEIGHT = 0.1


def fourier_gradient(x: tf.Tensor, n: tf.Tensor | float) -> tf.Tensor:
    r"""(4 omega / pi) sum_{i=0..n} cos((2i + 1) omega x), zero where |x| > 1; n a scalar (tensor) <= 18."""
    n = tf.cast(n, x.dtype)
    total = tf.zeros_like(x)
    for i in range(MAX_TERMS):
        total += tf.cast(i <= n, x.dtype) * tf.cos((2 * i + 1) * OMEGA * x)
    return tf.where(tf.abs(x) <= 1.0, 4.0 * OMEGA / math.pi * total, tf.zeros_like(x))


def fourier_sign(x: tf.Tensor, n: tf.Tensor | float) -> tf.Tensor:
    """sign(x) forward (0 -> +1), :func:`fourier_gradient` times the incoming gradient backward."""

    @tf.custom_gradient
    def _call(x: tf.Tensor) -> tuple[tf.Tensor, Any]:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            return dy * fourier_gradient(x, n)

        return larq.math.sign(x), grad

    return _call(x)


def fda_terms(epoch: tf.Tensor | float, epochs: tf.Tensor | float) -> tf.Tensor:
    """n = 9 + floor(9 e / E) (e * 9 is exact, so the division lands on integers exactly)."""
    return TERMS_START + tf.floor(epoch * TERMS_GROWTH / epochs)


def fda_noise_weight(epoch: tf.Tensor | float, epochs: tf.Tensor | float) -> tf.Tensor:
    """alpha = 0.05 (1 + cos(pi (e + 1) / E)): cosine decay from ~0.1 to exactly 0 in the last epoch."""
    return NOISE_WEIGHT_START / 2 * (1.0 + tf.cos(math.pi * (epoch + 1.0) / epochs))


class _FourierSign(EpochScheduled, larq.quantizers._BaseQuantizer):
    """Fourier-estimator sign with the epoch schedule of n and alpha, and the noise-adaptation MLP."""

    precision = 1

    def __init__(self, *args: Any, noise_adaptation: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.noise_adaptation = noise_adaptation

    # d, the length of the vectors the noise MLP maps, from the quantizer's input shape.
    noise_width: ClassVar[Callable[[tf.TensorShape], int]]

    def build(self, input_shape: tf.TensorShape) -> None:
        self.build_schedule()
        if self.noise_adaptation:
            width = self.noise_width(tf.TensorShape(input_shape))
            hidden = max(1, width // NOISE_REDUCTION)
            self.noise_in = self.add_weight(name="noise_in", shape=(width, hidden), initializer=_torch_linear_init())
            self.noise_out = self.add_weight(name="noise_out", shape=(hidden, width), initializer=_torch_linear_init())
        super().build(input_shape)

    @property
    def training_only_weights(self) -> list[tf.Variable]:
        """The noise MLP: it adds nothing once alpha is 0, so a deployed model drops it (complexity track)."""
        return [self.noise_in, self.noise_out] if self.noise_adaptation else []

    @property
    def terms(self) -> tf.Tensor:
        """n, the last Fourier term of the gradient."""
        return fda_terms(self.schedule_epoch, self.schedule_epochs)

    @property
    def noise_weight(self) -> tf.Tensor:
        """alpha, the weight of the noise-adaptation term."""
        return fda_noise_weight(self.schedule_epoch, self.schedule_epochs)

    def noise(self, vectors: tf.Tensor) -> tf.Tensor:
        """e(v) = fc2(relu(fc1(v))) + 0.1 sin(v), over the last axis of ``vectors``."""
        hidden = tf.nn.relu(tf.tensordot(vectors, self.noise_in, axes=1))
        return tf.tensordot(hidden, self.noise_out, axes=1) + NOISE_SINE_WEIGHT * tf.sin(vectors)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "noise_adaptation": self.noise_adaptation}


def _torch_linear_init() -> keras.initializers.Initializer:
    # PyTorch's nn.Linear default, kaiming_uniform(a=sqrt(5)): uniform in +-1/sqrt(fan_in).
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@larq.utils.register_keras_custom_object
class FDAActivationSign(_FourierSign):
    """FDA's activation binarizer: Fourier-estimator sign, plus alpha * e(a) over the channels in training."""

    noise_width = staticmethod(lambda input_shape: int(input_shape[-1]))  # per position: the channels

    def call(self, inputs: tf.Tensor, training: bool | tf.Tensor | None = None) -> tf.Tensor:
        binary = fourier_sign(inputs, self.terms)
        if self.noise_adaptation:
            binary = apply_in_training(training, lambda b: b + self.noise_weight * self.noise(inputs), binary)
        return super().call(binary)


@larq.utils.register_keras_custom_object
class FDAKernelSign(_FourierSign):
    """FDA's kernel binarizer: mean|W| per output channel * (Fourier-estimator sign + alpha * e(W_c) in training)."""

    noise_width = staticmethod(lambda input_shape: int(input_shape[:-1].num_elements()))  # per output channel

    def kernel_noise(self, kernel: tf.Tensor) -> tf.Tensor:
        """e applied to each output channel's flattened weights, reshaped back to the kernel."""
        per_channel = tf.transpose(tf.reshape(kernel, (-1, kernel.shape[-1])))
        return tf.reshape(tf.transpose(self.noise(per_channel)), tf.shape(kernel))

    def call(self, inputs: tf.Tensor, training: bool | tf.Tensor | None = None) -> tf.Tensor:
        binary = fourier_sign(inputs, self.terms)
        if self.noise_adaptation:
            binary = apply_in_training(training, lambda b: b + self.noise_weight * self.kernel_noise(inputs), binary)
        return super().call(mean_abs_per_output_channel(inputs) * binary)


@register_method(
    "fda",
    suite="binarization",
    kind="operator",
    paper=Paper(
        "Learning Frequency Domain Approximation for Binary Neural Networks", 2021, "https://arxiv.org/abs/2103.00841"
    ),
    summary="sign with a Fourier-series gradient (9 -> 18 terms), decaying noise-adaptation MLP, mean|W| scale",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class FDA(OperatorMethod):
    default_options = {**OperatorMethod.default_options, "noise_adaptation": True}

    def input_quantizer(self) -> FDAActivationSign:
        return FDAActivationSign(noise_adaptation=self.options["noise_adaptation"])

    def kernel_quantizer(self) -> FDAKernelSign:
        return FDAKernelSign(noise_adaptation=self.options["noise_adaptation"])
