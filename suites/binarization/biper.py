r"""BiPer: a square wave of the latent weights forward, the sine of the same period backward; two stages.

Weights, with the frequency :math:`\omega` (``freq``, 20 as in the official code) and the identity STE
of the outer sign (sign(0) = +1)::

    stage 1:  W_b = sin(omega W)                 dW_b/dW = omega cos(omega W)      (continuous weights)
    stage 2:  W_b = sign(sin(omega W))           dW_b/dW := omega cos(omega W)     (a square wave, +-1)

Activations (:class:`~suites.binarization._quantizers.StdNormalizedApproxSign`, shared with ReCU): in
training :math:`a_b = \operatorname{sign}(a / \sigma_n)` with :math:`\sigma_n` the per-sample standard
deviation, backward the ApproxSign derivative :math:`\max(0, 2 - 2|u|)` at :math:`u = a/\sigma_n` (through
:math:`\sigma_n` too); at inference :math:`\operatorname{sign}(a)`, the same values. The binary layers
multiply their output by a learned per-output-channel :math:`\alpha` (``ScaledQuantConv2D`` /
``ScaledQuantDense`` of :mod:`suites.binarization._layers`): :math:`y = \alpha \odot
\operatorname{conv}(a_b, W_b) + b`. The frequency sets the quantization error: on fixed weights
:math:`\overline{|\sin(\omega W) - \operatorname{sign}(\sin(\omega W))|}` falls as :math:`\omega` grows
(from 1 for :math:`\omega \to 0` towards :math:`1 - 2/\pi` once the phases spread over whole periods).

Two-stage training in one ``fit``: the paper trains stage 1 to convergence, then a second run binarizes
the weights and warm-starts from it. Here the kernel quantizer (:class:`BiPerSign`, an
:class:`~effbench.schedule.EpochScheduled` quantizer) switches itself at epoch
:math:`e_2 = \min(\lfloor f E \rfloor, E - 1)` of the recipe's :math:`E` epochs (``stage1_fraction``
:math:`f` = 0.5): stage 1 for :math:`e < e_2`, stage 2 from :math:`e_2` on, warm-started from the
stage-1 weights by construction. The last epoch is always stage 2, so the trained and deployed model
(whose saved schedule state is that of its last epoch) has :math:`\pm 1` kernels, which Larq Compute
Engine converts into binary convolutions; a one-epoch recipe (``smoke``) is stage 2 only. Deviation: one
optimizer and learning-rate schedule span both stages (the official stage 2 restarts them).

Indicators logged per epoch (training curves of the accuracy record): ``biper_stage`` (1 or 2) and
``biper_quantization_error``, the mean over binary layers of
:math:`\overline{|\sin(\omega W) - \operatorname{sign}(\sin(\omega W))|}` (the official code's
``compute_QE.py`` measures the quantization error of a trained model; this is its weight-side form).

Other deviations: :math:`\alpha` starts at 1 (the official code draws it from U(0, 1)); no weight clip,
as in the official code (the sine is periodic; ``kernel_constraint`` is None); the paper's
frequency-aware weight initialisation is not applied (the backbone's own initialisation is kept).

Paper: Vargas, Correa, Hinojosa & Arguello, "BiPer: Binary Neural Networks using a Periodic Function",
CVPR 2024 (https://arxiv.org/abs/2404.01278); official code: https://github.com/edmav4/BiPer.

Options: ``freq`` (:math:`\omega`, 20.0), ``stage1_fraction`` (0.5; 0 trains stage 2 only).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.registry import Paper, Taxonomy, register_method
from effbench.schedule import EpochScheduled
from effbench.training import TrainContext
from suites.binarization._layers import output_scaled_layer
from suites.binarization._quantizers import StdNormalizedApproxSign
from suites.binarization.operators import OperatorMethod


@tf.custom_gradient
def identity_ste_sign(x: tf.Tensor) -> tuple[tf.Tensor, Any]:
    """Exactly +-1 forward (sign(0) = +1), the incoming gradient unchanged backward (no clipping)."""
    return larq.math.sign(x), lambda dy: dy


def quantization_error(kernel: np.ndarray | tf.Tensor, freq: float) -> float:
    """mean |sin(omega W) - sign(sin(omega W))| over the kernel (sign(0) = +1)."""
    wave = np.sin(freq * np.asarray(kernel, np.float64))
    return float(np.mean(np.abs(wave - np.where(wave >= 0, 1.0, -1.0))))


@larq.utils.register_keras_custom_object
class BiPerSign(EpochScheduled, larq.quantizers._BaseQuantizer):
    """BiPer's kernel binarizer: sin(omega W) in stage 1, sign(sin(omega W)) in stage 2 (module docstring)."""

    precision = 1

    def __init__(self, freq: float = 20.0, stage1_fraction: float = 0.5, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0.0 <= stage1_fraction < 1.0:
            raise ValueError(f"stage1_fraction is {stage1_fraction}, expected 0 <= fraction < 1")
        self.freq, self.stage1_fraction = float(freq), float(stage1_fraction)

    def build(self, input_shape: tf.TensorShape) -> None:
        self.build_schedule()
        super().build(input_shape)

    @property
    def stage2(self) -> tf.Tensor:
        """True from epoch min(floor(f E), E - 1) on: always in the last epoch (and in a fresh model)."""
        start = tf.minimum(tf.floor(self.stage1_fraction * self.schedule_epochs), self.schedule_epochs - 1.0)
        return self.schedule_epoch >= start

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        wave = tf.sin(self.freq * inputs)
        # Either way the gradient is d wave / dW = omega cos(omega W); stage 2 values are exactly +-1.
        outputs = tf.where(self.stage2, identity_ste_sign(wave), wave)
        return super().call(outputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "freq": self.freq, "stage1_fraction": self.stage1_fraction}


def biper_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(getattr(layer, "kernel_quantizer", None), BiPerSign)]


class BiPerIndicators(keras.callbacks.Callback):
    """Adds ``biper_stage`` and ``biper_quantization_error`` to each epoch's logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        layers = biper_layers(self.model)
        if logs is None or not layers:
            return
        quantizer = layers[0].kernel_quantizer
        logs["biper_stage"] = 2.0 if bool(quantizer.stage2) else 1.0
        errors = [quantization_error(layer.kernel.numpy(), layer.kernel_quantizer.freq) for layer in layers]
        logs["biper_quantization_error"] = float(np.mean(errors))


@register_method(
    "biper",
    suite="binarization",
    kind="operator",
    paper=Paper("BiPer: Binary Neural Networks using a Periodic Function", 2024, "https://arxiv.org/abs/2404.01278"),
    summary="sign(sin(omega W)) weights with omega cos(omega W) backward, two stages; std-normalised ApproxSign "
    "activations; learned per-channel scale",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class BiPer(OperatorMethod):
    default_options: ClassVar[dict[str, Any]] = {**OperatorMethod.default_options, "freq": 20.0, "stage1_fraction": 0.5}

    def input_quantizer(self) -> StdNormalizedApproxSign:
        return StdNormalizedApproxSign()

    def kernel_quantizer(self) -> BiPerSign:
        return BiPerSign(self.options["freq"], self.options["stage1_fraction"])

    def kernel_constraint(self) -> None:
        return None

    def binary_layer(self, larq_class: type, config: dict[str, Any]) -> keras.layers.Layer:
        return output_scaled_layer(larq_class, config, "channel")

    def callbacks(self, model: keras.Model, context: TrainContext) -> list[keras.callbacks.Callback]:
        return [BiPerIndicators()]
