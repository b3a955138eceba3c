r"""Binary layers with a learned output scale, shared by the operators that learn one.

XNOR-Net++, ReCU and BiPer replace XNOR-Net's *computed* scale by a *learned* one that multiplies the
binary convolution's output, before the activation:

.. math::  y = \phi\big(\Gamma \odot (\operatorname{conv}(q_a(x), q_w(W)) + b)\big)

(the bias inside the scale is a reparametrisation of :math:`\Gamma \odot \operatorname{conv} + b'`; the
backbones' binary convolutions have no bias, a batch norm follows them).

* ``output_scale="channel"``: :math:`\Gamma = \alpha`, one learned factor per output channel
  (ReCU, BiPer; initialised to 1).
* ``output_scale="rank1"``: XNOR-Net++'s factorised scale, :math:`\Gamma = o \otimes h \otimes w` with
  :math:`o \in \mathbb{R}^{C_{out}}, h \in \mathbb{R}^{H_{out}}, w \in \mathbb{R}^{W_{out}}` (all
  initialised to 1), learned by back-propagation; a dense layer has only :math:`o`.

The multiply-accumulates stay XNOR-popcount on :math:`\pm 1` operands and the scale is one float
multiply per output value, so the complexity track counts these layers at the quantizers' bit widths,
like larq's own layers. Private module (the registry skips names starting with ``_``).
"""

from __future__ import annotations

from typing import Any

from effbench.tf import keras, tf

# isort: split
import larq

OUTPUT_SCALES = ("channel", "rank1")


class _OutputScaled:
    """Mixin for a larq layer: its pre-activation output times a learned scale (module docstring)."""

    def __init__(self, *args: Any, output_scale: str = "channel", **kwargs: Any):
        if output_scale not in OUTPUT_SCALES:
            raise ValueError(f"output_scale is '{output_scale}', expected one of {', '.join(OUTPUT_SCALES)}")
        activation = kwargs.pop("activation", None)
        super().__init__(*args, **kwargs)
        self.output_scale = output_scale
        # The scale goes before the activation, so the base layer runs without one.
        self.post_activation = keras.activations.get(activation)
        self.activation_config = activation if isinstance(activation, str) or activation is None else None

    def build(self, input_shape: tf.TensorShape) -> None:
        super().build(input_shape)
        output_shape = tf.TensorShape(self.compute_output_shape(input_shape))
        channels = output_shape[-1]
        self.scale_factors = [self.add_weight(name="output_scale_channel", shape=(channels,), initializer="ones")]
        if self.output_scale == "rank1" and output_shape.rank == 4:
            height, width = output_shape[1], output_shape[2]
            self.scale_factors += [
                self.add_weight(name="output_scale_height", shape=(height, 1, 1), initializer="ones"),
                self.add_weight(name="output_scale_width", shape=(1, width, 1), initializer="ones"),
            ]

    def output_scale_tensor(self) -> tf.Tensor:
        """:math:`\\Gamma`: the product of the factors, broadcast against the layer's output."""
        scale = self.scale_factors[0]
        for factor in self.scale_factors[1:]:
            scale = scale * factor
        return scale

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.post_activation(super().call(inputs) * self.output_scale_tensor())

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        activation = self.activation_config or keras.activations.serialize(self.post_activation)
        config.update(output_scale=self.output_scale, activation=activation)
        return config


@larq.utils.register_keras_custom_object
class ScaledQuantConv2D(_OutputScaled, larq.layers.QuantConv2D):
    """``larq.layers.QuantConv2D`` with a learned output scale (see the module docstring)."""


@larq.utils.register_keras_custom_object
class ScaledQuantDense(_OutputScaled, larq.layers.QuantDense):
    """``larq.layers.QuantDense`` with a learned output scale (see the module docstring)."""


SCALED_COUNTERPARTS: dict[type, type] = {
    larq.layers.QuantConv2D: ScaledQuantConv2D,
    larq.layers.QuantDense: ScaledQuantDense,
}


def output_scaled_layer(larq_class: type, config: dict[str, Any], output_scale: str) -> keras.layers.Layer:
    """The scaled counterpart of ``larq_class`` built from ``config``, for ``OperatorMethod.binary_layer``."""
    scaled = SCALED_COUNTERPARTS.get(larq_class)
    if scaled is None:
        known = ", ".join(cls.__name__ for cls in SCALED_COUNTERPARTS)
        raise ValueError(f"a learned output scale is defined for {known}, not {larq_class.__name__}")
    return scaled(**config, output_scale=output_scale)
