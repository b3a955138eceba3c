r"""TanhSign: sign binarization trained through the derivative of tanh(beta x).

Forward, for activations and weights alike (``larq.math.sign``, never 0)::

    q(x) = +1 if x >= 0 else -1

Backward, the pseudo-gradient is the derivative of the smooth surrogate tanh(beta x)::

    dq/dx := d/dx tanh(beta x) = beta * (1 - tanh(beta x)^2)

It integrates to 2 over the real line for every beta: the height of the sign's jump, and the area of the
clipped straight-through estimator (1 on [-1, 1]). At the default beta = 1 it peaks at 1 at x = 0, as the
STE does, and falls to 1 - tanh(1)^2 = 0.42 at |x| = 1: inside [-1, 1], where the protocol's hard tanh and
weight clipping keep activations and latent weights, updates of values close to the sign's jump weigh more
than those of values far from it. Larger beta concentrates it towards 2 delta(x), the sign's derivative.

Reference: the tanh surrogate is the Error Decay Estimator (EDE) of IR-Net, Qin et al., "Forward and
Backward Information Retention for Accurate Binary Neural Networks", CVPR 2020
(https://arxiv.org/abs/1909.10788), which uses k tanh(t x) with t annealed from 0.1 to 10 and
k = max(1 / t, 1) during training. This operator keeps t = beta fixed and k = 1, and leaves out IR-Net's
other half (Libra-PB's weight standardization and power-of-two scaling): it is a pure sign operator.
"""

from __future__ import annotations

from typing import Any

from effbench.tf import tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization.operators import OperatorMethod


def tanh_sign(x: tf.Tensor, beta: float) -> tf.Tensor:
    """sign(x) forward; beta * (1 - tanh(beta x)^2) times the incoming gradient backward."""

    @tf.custom_gradient
    def forward_and_backward(x: tf.Tensor) -> tuple[tf.Tensor, Any]:
        def pseudo_gradient(dy: tf.Tensor) -> tf.Tensor:
            return dy * beta * (1.0 - tf.square(tf.tanh(beta * x)))

        return larq.math.sign(x), pseudo_gradient

    return forward_and_backward(x)


# Registered with Keras under its class name, so saved models holding it load again.
@larq.utils.register_keras_custom_object
class TanhSign(larq.quantizers.Quantizer):
    """The larq quantizer of :func:`tanh_sign`: 1-bit output, counted so by the complexity track."""

    precision = 1

    def __init__(self, beta: float = 1.0, **kwargs: Any):
        self.beta = beta
        super().__init__(**kwargs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tanh_sign(inputs, self.beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta}


@register_method(
    "tanh-sign",
    suite="submissions",
    kind="operator",
    paper=Paper(
        "Forward and Backward Information Retention for Accurate Binary Neural Networks",
        2020,
        "https://arxiv.org/abs/1909.10788",
    ),
    summary="sign forward, d/dx tanh(beta x) backward, on weights and activations (IR-Net's EDE, fixed beta)",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training"),
)
class TanhSignOperator(OperatorMethod):
    default_options = {**OperatorMethod.default_options, "beta": 1.0}

    def input_quantizer(self) -> TanhSign:
        return TanhSign(self.options["beta"])

    def kernel_quantizer(self) -> TanhSign:
        return TanhSign(self.options["beta"])
