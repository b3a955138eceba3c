r"""Quantizers on the tensors *between* layers: output-quantized layer classes, and those tensors read on data.

Private (the leading underscore keeps the registry from importing it as a method module); shared by the
hand-written quantization-aware methods (``qfx``, ``shiftquant``, ``fliqs``).

**Output quantizers.** :func:`suites.quantization._uniform.quantize_layers` puts quantizers on a conv / dense layer's
kernel and *input*. Two mechanisms need one on a layer's *output*:

* QFX's fixed-point arithmetic quantizes the outputs of BatchNorm, residual adds and the other element-wise
  layers (their results are fixed-point numbers on the FPGA, not only the matmul operands);
* ShiftQuant quantizes the gradient that reaches a conv / dense layer's output (forward: the identity), so
  both backward matmuls (:math:`dX = dY W^T`, :math:`dW = X^T dY`) take an integer :math:`dY`.

For each layer class in :data:`OUTPUT_QUANTIZED` there is a registered subclass,
``OutputQuantized<Class>``, whose ``call`` is the class's own followed by its ``output_quantizer`` (any
larq-style quantizer layer, serialized in the layer's config so the model saves and reloads). Being a
subclass, the complexity track counts it as its base class (``isinstance``); its weights are its base's, in
the same order, then the quantizer's. :func:`quantize_outputs` is that rewrite (:func:`effbench.graph.rewrite`
with :func:`transfer_in_order`).

**Tensors on data.** :func:`layer_tensors` runs a (float) model on calibration samples and returns the
inputs or outputs of named layers, for methods that initialise their quantizers from the values a tensor
takes (QFX's binary points, FLIQS's ranges).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from effbench.tf import keras

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.graph import rewrite


class OutputQuantized:
    """Mixin of the ``OutputQuantized<Class>`` layers: the base class's output, then ``output_quantizer``.

    The ``call`` is added per class by :func:`_output_quantized_class` with the base's signature, so Keras
    passes ``training`` (BatchNorm) or nothing (Add, larq layers) exactly as it does to the base class.
    """

    def __init__(self, *args: Any, output_quantizer: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if output_quantizer is None:
            raise ValueError(f"{type(self).__name__} needs an output_quantizer")
        self.output_quantizer = larq.quantizers.get(output_quantizer)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_quantizer": larq.quantizers.serialize(self.output_quantizer)}


def _output_quantized_class(base: type) -> type:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self.output_quantizer(base.call(self, *args, **kwargs))

    # Keras reads call's signature to decide which of training / mask to pass: the base's, not *args.
    call.__signature__ = inspect.signature(base.call)
    name = f"OutputQuantized{base.__name__}"
    namespace = {"call": call, "__module__": __name__, "__doc__": f"``{base.__name__}`` then its output_quantizer."}
    cls = type(name, (OutputQuantized, base), namespace)
    return keras.utils.register_keras_serializable(package="effbench.quantization")(cls)


_L = keras.layers
# The element-wise layers whose output a fixed-point model quantizes (QFX), and the larq layers whose output
# gradient ShiftQuant quantizes.
ELEMENTWISE_LAYERS: tuple[type, ...] = (
    _L.BatchNormalization, _L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Rescaling,
    _L.AveragePooling1D, _L.AveragePooling2D, _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D,
)  # fmt: skip
LARQ_LAYERS: tuple[type, ...] = (larq.layers.QuantConv2D, larq.layers.QuantDepthwiseConv2D, larq.layers.QuantDense)
OUTPUT_QUANTIZED: dict[type, type] = {base: _output_quantized_class(base) for base in ELEMENTWISE_LAYERS + LARQ_LAYERS}


def quantize_outputs(model: keras.Model, quantizers: Mapping[str, Any]) -> keras.Model:
    """A copy of ``model`` in which each layer named in ``quantizers`` passes its output through that quantizer.

    The layers must be of a class in :data:`OUTPUT_QUANTIZED` (exactly: a subclass may compute something
    else); they keep their names, config and weights. Every other layer is kept as it is.
    """
    for name in quantizers:
        layer = model.get_layer(name)
        if type(layer) not in OUTPUT_QUANTIZED:
            raise ValueError(
                f"layer '{name}' ({type(layer).__name__}) cannot take an output quantizer; the classes that can are "
                f"{', '.join(sorted(base.__name__ for base in OUTPUT_QUANTIZED))}"
            )

    def rule(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name not in quantizers:
            return None
        return OUTPUT_QUANTIZED[type(layer)](**layer.get_config(), output_quantizer=quantizers[layer.name])

    return rewrite(model, rule, transfer=transfer_in_order)


def transfer_in_order(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Copy ``source``'s trainable (then non-trainable) weights into the first ones of ``target``'s, in order.

    A layer and its ``OutputQuantized`` subclass list the same weights in the same order, the output
    quantizer's after them (it is set last). Keras names a quantizer's weights differently from one build
    to the next (``conv/QuantConv2D/q/delta`` or ``delta``), so they are matched by position, and each
    pair is checked for the same shape and the same last name component. Quantizer weights that Keras
    hides (larq quantizers list no non-trainable ones: calibrated ranges) are not copied: calibrate after
    the rewrite.
    """
    for weights, counterparts in (
        (source.trainable_weights, target.trainable_weights),
        (source.non_trainable_weights, target.non_trainable_weights),
    ):
        if len(counterparts) < len(weights):
            raise ValueError(f"layer '{target.name}' has fewer weights than the layer '{source.name}' it replaces")
        for weight, counterpart in zip(weights, counterparts, strict=False):
            if counterpart.shape != weight.shape or _last_name(counterpart) != _last_name(weight):
                raise ValueError(
                    f"weight '{weight.name}' {tuple(weight.shape)} of layer '{source.name}' does not match "
                    f"'{counterpart.name}' {tuple(counterpart.shape)}, in its place in the rewritten layer"
                )
            counterpart.assign(weight)


def _last_name(weight: Any) -> str:
    return weight.name.rsplit("/", 1)[-1]


def layer_tensors(
    model: keras.Model,
    samples: np.ndarray,
    inputs_of: Sequence[str] = (),
    outputs_of: Sequence[str] = (),
    batch_size: int = 128,
) -> dict[tuple[str, str], np.ndarray]:
    """``(name, "input")`` / ``(name, "output")`` -> the values that layer's input / output takes on ``samples``.

    One inference pass of ``model`` (``training=False``: BatchNorm on its moving statistics). A layer with
    several inputs (an Add) is read at its output only.
    """
    keys = [(name, "input") for name in inputs_of] + [(name, "output") for name in outputs_of]
    if not keys:
        return {}
    tensors = [getattr(model.get_layer(name), side) for name, side in keys]
    probe = keras.Model(model.inputs, tensors)
    values = probe.predict(samples, batch_size=batch_size, verbose=0)
    values = values if len(keys) > 1 else [values]
    return {key: np.asarray(value) for key, value in zip(keys, values, strict=True)}
