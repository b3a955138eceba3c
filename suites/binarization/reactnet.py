r"""ReActNet's operator (BiBench version): RSign activations and Bi-Real weights; RPReLU layers as an option.

Forward and pseudo-gradient (scale detached; sign(0) = +1; :math:`b_c` a learned shift per input
channel c, initialised to 0)::

    activations (RSign):  a_b = sign(a + b_c)        da_b/da := max(0, 2 - 2|a + b_c|)  (ApproxSign)
                                                      da_b/db_c := sum over batch and positions of the same
    weights:              W_b = alpha_c * sign(W)     alpha_c = mean|W| over output channel c
                          dW_b/dW := 1[|W| <= 1]      (BiBench's detach trick: the scale is not in it)

RSign is the paper's :math:`\operatorname{sign}(x - \alpha_c)` written with :math:`b = -\alpha`, as
BiBench's code writes it (``x + channel_threshold``). Quantizers: :class:`RSign` (larq's ``approx_sign``
after the shift) and :class:`~suites.binarization._quantizers.ChannelScaledSign` (the Bi-Real kernels).

This is BiBench's ``react`` operator (``bibench/models/layers/react.py``, ``ReActConv2d``) on the
protocol's hard-tanh backbone (``configs/acc_cifar10/resnet20_react_*``: ``act_cfg=dict(type='Hardtanh')``
like every other operator), and it is what the closed division compares.

**Option** ``rprelu=true`` (open division: an architecture change, not an operator). RPReLU, the paper's
other "generalised" function, replaces the backbone's activation layers (``replace_layer``)::

    y = x - gamma_c + zeta_c               where x - gamma_c >= 0
    y = beta_c * (x - gamma_c) + zeta_c    elsewhere

with learned per-channel :math:`\gamma, \zeta` (initialised 0) and slope :math:`\beta` (initialised
0.25, PyTorch's ``PReLU`` default that ReActNet uses). It takes the place of every ReLU *layer*
(``ReLU``, ReLU6, ``Activation("relu")``), where binarize's rule would put hard tanh. A ReLU embedded
in a conv / dense layer's ``activation`` argument (the ``mlp`` backbone's ``Dense(activation="relu")``)
is not a layer and cannot be swapped by ``replace_layer``: binarize's rule turns it into hard tanh, so
on ``mlp`` (mnist1d's default backbone) ``rprelu=true`` changes nothing. RPReLU's
weights are float (3 per channel) and are counted as float parameters.

BiBench's operator layer does not include RPReLU (its ReActNet *backbone*, ``backbones/reactnet.py``,
does), hence the option rather than the default. Deviations: BiBench's ``ReActLinear`` takes the forward
sign of the unshifted input (a slip: the shift then acts only on the gradient); here the shift acts on the
forward sign of dense layers as of convolutions.
The paper's two-step training and distributional distillation loss are recipe-level and not used
(the task's recipe trains every operator). Latent weights are clipped to [-1, 1] (``weight_clip``).

Paper: Liu, Shen, Savvides & Cheng, "ReActNet: Towards Precise Binary Neural Network with Generalized
Activation Functions", ECCV 2020 (https://arxiv.org/abs/2003.03488).
"""

from __future__ import annotations

from typing import Any, ClassVar

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.graph import is_relu_layer
from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization._quantizers import ChannelScaledSign
from suites.binarization.operators import OperatorMethod

PRELU_INITIAL_SLOPE = 0.25  # torch.nn.PReLU's default, used by ReActNet's RPReLU


@larq.utils.register_keras_custom_object
class RSign(larq.quantizers._BaseQuantizer):
    r"""ReActNet's RSign: sign(a + b_c) with a learned shift per input channel (last axis), ApproxSign backward.

    Forward ``sign(a + b)`` (sign(0) = +1); backward ``max(0, 2 - 2|a + b|)`` to both ``a`` and ``b``
    (larq's ``approx_sign``), so ``b``'s gradient sums over every other axis. ``b`` starts at 0.
    """

    precision = 1

    def build(self, input_shape: tf.TensorShape) -> None:
        self.shift = self.add_weight(name="shift", shape=(input_shape[-1],), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return super().call(larq.quantizers.approx_sign(inputs + self.shift))


@larq.utils.register_keras_custom_object
class RPReLU(keras.layers.Layer):
    r"""ReActNet's RPReLU: :math:`\operatorname{PReLU}_\beta(x - \gamma) + \zeta`, per channel (last axis).

    Forward as in the module docstring; the gradient is the ordinary one (it is a float layer).
    ``effbench_cost`` counts 4 element-wise operations per output (shift, compare, slope, shift).
    """

    def __init__(self, initial_slope: float = PRELU_INITIAL_SLOPE, **kwargs: Any):
        super().__init__(**kwargs)
        self.initial_slope = initial_slope

    def build(self, input_shape: tf.TensorShape) -> None:
        channels = (input_shape[-1],)
        self.shift_in = self.add_weight(name="shift_in", shape=channels, initializer="zeros")
        self.slope = self.add_weight(
            name="slope", shape=channels, initializer=keras.initializers.Constant(self.initial_slope)
        )
        self.shift_out = self.add_weight(name="shift_out", shape=channels, initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = inputs - self.shift_in
        return tf.maximum(x, 0.0) + self.slope * tf.minimum(x, 0.0) + self.shift_out

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return input_shape

    def effbench_cost(self, input_shapes: list[tuple[int, ...]], output_shapes: list[tuple[int, ...]]):
        elements = 1
        for size in output_shapes[0][1:]:
            elements *= size
        return 0, 4 * elements

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "initial_slope": self.initial_slope}


@register_method(
    "reactnet",
    suite="binarization",
    kind="operator",
    paper=Paper(
        "ReActNet: Towards Precise Binary Neural Network with Generalized Activation Functions",
        2020,
        "https://arxiv.org/abs/2003.03488",
    ),
    summary="RSign (learned per-channel shift, ApproxSign backward) and Bi-Real scaled-sign weights on the "
    "hard-tanh backbone; rprelu=true adds RPReLU layers (open)",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class ReActNet(OperatorMethod):
    """Options: ``rprelu`` (false; true puts RPReLU in place of every ReLU layer, an open-division run),
    ``backbone``, ``init``."""

    default_options: ClassVar[dict[str, Any]] = {**OperatorMethod.default_options, "rprelu": False}

    def input_quantizer(self) -> RSign:
        return RSign()

    def kernel_quantizer(self) -> ChannelScaledSign:
        return ChannelScaledSign()

    def replace_layer(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        return RPReLU(name=layer.name) if self.options["rprelu"] and is_relu_layer(layer) else None
