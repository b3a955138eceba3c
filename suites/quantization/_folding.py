r"""Batch-norm folding and TFMOT quantization-aware training on the folded graph (qat-int8, qat-4bit).

**Folding.** A BatchNormalization that directly follows a conv / depthwise conv / dense layer (linear
activation, its only consumer) is merged into it, per output channel :math:`c`
(the whitepaper's batch-norm folding, with the moving statistics, as at inference)::

    s_c  = gamma_c / sqrt(var_c + eps)
    W'_c = W_c * s_c                       (the kernel's output channel c)
    b'_c = beta_c + (b_c - mean_c) * s_c   (b = 0 for a conv without bias)

so ``BN(conv(x; W, b)) = conv(x; W', b')`` exactly in inference mode. A depthwise kernel
``(kh, kw, C, m)`` has output channel ``c * m + j`` at ``[..., c, j]``. ``gamma = 1`` without ``scale``,
``beta = 0`` without ``center``. Every other BatchNormalization is kept.

**Why fold before QAT.** The whitepaper's QAT fake-quantizes the *folded* weights, those the integer kernel
runs. TFMOT 0.8.1 keeps a BN apart (``Conv2DBatchNormQuantize``: the conv's raw kernel is quantized, the BN
follows unquantized) and the TFLite converter folds only at export, so the kernel trained under fake
quantization is not the one deployed. Folding first makes them the same. The deviation from the paper:
the paper folds with the *batch* statistics while training (and corrects with the moving ones); here the
moving statistics are folded once and the network trains on without BN (a fixed affine per channel, now
in W' and b'), which is the paper's "freeze BN statistics" phase from the first step.

**TFMOT's conv -> ReLU quirk, fixed.** TFMOT 0.8.1's ``LayerReLUQuantize`` transform (both the default 8-bit
and the experimental N-bit schemes) is meant to keep a fake-quant node out from between an ``Add`` and the
ReLU after it, but its pattern ``ReLU <- Add|Conv2D|DepthwiseConv2D|Dense`` gives the conv (or dense) a
``NoOpQuantizeConfig``, so its *kernel* is not fake-quantized during QAT either. After folding, every
conv -> BN -> ReLU of a backbone is conv -> ReLU, exactly that pattern. :func:`folded_scheme` wraps a
scheme's layout transform: a kernel layer that the transform left with a NoOp config and whose
output feeds a ReLU gets back the config it would have had (the one it was annotated with, else the
scheme registry's) with its output quantization removed (``activation_attrs = []``,
``quantize_output = False``): the kernel is fake-quantized, the ReLU after it quantizes the output, as
TFLite's fused conv + ReLU computes. The configs are TFMOT's own classes, so the model saves (``.h5``) and reloads
inside ``quantize_scope``.

:func:`quantization_aware_training` is the one QAT wiring the two methods share: fold
(:func:`fold_batch_norms`), annotate every layer (some with configs of their own) and ``quantize_apply`` with
the fixed scheme (:func:`quantization_aware`), start the activation ranges at the float model's min / max on
calibration inputs (:func:`initialize_activation_ranges`), fine-tune with :func:`effbench.training.fit`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from effbench.bits import is_tfmot_quantize_wrapper, layer_bit_widths
from effbench.graph import is_relu_layer
from effbench.tf import keras
from effbench.training import TrainContext, fit

# The layers a BatchNormalization folds into (exact classes: a subclass may compute something else).
FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
# What kernel-holding layers TFMOT quantizes (its registry's conv / dense entries).
KERNEL_LAYERS = FOLDABLE


def folding_scale(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` with ``BN(y) = s y + t`` per channel at inference: s = gamma / sqrt(var + eps), t = beta - mean s."""
    mean, variance = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    gamma = bn.gamma.numpy() if bn.scale else np.ones_like(mean)
    beta = bn.beta.numpy() if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return scale, beta - mean * scale


def folded_weights(layer: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """``(W', b')`` of ``layer`` followed by ``bn`` (module docstring); ``layer``'s bias is 0 without one."""
    scale, shift = folding_scale(bn)
    kernel = (layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel).numpy()
    bias = layer.bias.numpy() if layer.use_bias else np.zeros_like(scale)
    channel_scale = scale.reshape(kernel.shape[-2:]) if isinstance(layer, keras.layers.DepthwiseConv2D) else scale
    return kernel * channel_scale, bias * scale + shift


def _producer(entry: dict) -> str | None:
    """The one layer feeding ``entry`` (a layer of a functional config), if it has one input from one call."""
    nodes = entry["inbound_nodes"]
    if len(nodes) != 1 or len(nodes[0]) != 1:
        return None
    name, node_index, tensor_index = nodes[0][0][:3]
    return name if node_index == 0 and tensor_index == 0 else None


def _references(structure: Any, name: str) -> int:
    """How many ``[name, node, tensor, ...]`` references to layer ``name`` a config structure holds."""
    if isinstance(structure, (list, tuple)):
        if len(structure) >= 3 and structure[0] == name and isinstance(structure[1], int):
            return 1
        return sum(_references(item, name) for item in structure)
    if isinstance(structure, dict):
        return sum(_references(value, name) for value in structure.values())
    return 0


def _rewire(structure: Any, old: str, new: str) -> Any:
    """``structure`` with every reference to layer ``old`` pointing at layer ``new`` (node 0, tensor 0)."""
    if isinstance(structure, list):
        if len(structure) >= 3 and structure[0] == old and isinstance(structure[1], int):
            return [new, 0, 0, *structure[3:]]
        return [_rewire(item, old, new) for item in structure]
    if isinstance(structure, dict):
        return {key: _rewire(value, old, new) for key, value in structure.items()}
    return structure


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """BN layer name -> the conv / dense layer it folds into, for every foldable pair (module docstring)."""
    config = model.get_config()
    pairs = {}
    for entry in config["layers"]:
        bn = model.get_layer(entry["config"]["name"])
        if type(bn) is not keras.layers.BatchNormalization:
            continue
        producer_name = _producer(entry)
        producer = model.get_layer(producer_name) if producer_name else None
        if type(producer) not in FOLDABLE or producer.get_config()["activation"] != "linear":
            continue
        rank = len(producer.output_shape)
        uses = _references([e["inbound_nodes"] for e in config["layers"]], producer_name)
        uses += _references(config["output_layers"], producer_name)
        if len(producer.inbound_nodes) == 1 and uses == 1 and list(bn.axis) == [rank - 1]:
            pairs[bn.name] = producer_name
    return pairs


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """A copy of the functional ``model`` with every foldable BatchNormalization merged into its conv / dense.

    The folded layers gain a bias; every layer keeps its name and (where not folded) its weights. In
    inference mode the copy computes what ``model`` does, to float rounding.
    """
    if not getattr(model, "_is_graph_network", False) or isinstance(model, keras.Sequential):
        raise ValueError(f"BN folding rewrites functional models; '{model.name}' is a {type(model).__name__}")
    pairs = foldable_pairs(model)
    config = copy.deepcopy(model.get_config())
    folded = set(pairs.values())
    layers = []
    for entry in config["layers"]:
        if entry["config"]["name"] in pairs:
            continue
        if entry["config"]["name"] in folded:
            entry["config"]["use_bias"] = True
        layers.append(entry)
    for bn_name, producer in pairs.items():
        layers = [{**e, "inbound_nodes": _rewire(e["inbound_nodes"], bn_name, producer)} for e in layers]
        config["output_layers"] = _rewire(config["output_layers"], bn_name, producer)
    config["layers"] = layers
    copy_model = keras.Model.from_config(config)
    by_producer = {producer: bn for bn, producer in pairs.items()}
    for layer in copy_model.layers:
        original = model.get_layer(layer.name)
        if layer.name in by_producer:
            layer.set_weights(list(folded_weights(original, model.get_layer(by_producer[layer.name]))))
        else:
            layer.set_weights(original.get_weights())
    return copy_model


# ----------------------------------------------------------------------------------------------- TFMOT QAT


def _is_noop(config: Any) -> bool:
    return type(config).__name__ == "NoOpQuantizeConfig"


def kernel_only(config: Any) -> Any:
    """A copy of a TFMOT registry config (8-bit or N-bit) that quantizes the kernel and leaves the output alone."""
    return type(config).from_config({**config.get_config(), "activation_attrs": [], "quantize_output": False})


def _feeds_relu(layer: keras.layers.Layer) -> bool:
    consumers = [node.outbound_layer for node in layer.outbound_nodes]
    return len(consumers) == 1 and is_relu_layer(consumers[0])


class _FoldedLayout:
    """A scheme's layout transform, then the conv -> ReLU fix (module docstring) and the input quantizer's bits."""

    def __init__(self, transform: Any, registry: Any, input_bits: int | None):
        self.transform, self.registry, self.input_bits = transform, registry, input_bits

    def apply(self, model: keras.Model, layer_quantize_map: dict) -> tuple[keras.Model, dict]:
        requested = {name: meta.get("quantize_config") for name, meta in layer_quantize_map.items()}
        transformed, quantize_map = self.transform.apply(model, layer_quantize_map)
        for layer in transformed.layers:
            config = quantize_map.get(layer.name, {}).get("quantize_config")
            if type(layer) in KERNEL_LAYERS and _is_noop(config) and _feeds_relu(layer):
                original = requested.get(layer.name) or self.registry.get_quantize_config(layer)
                quantize_map[layer.name]["quantize_config"] = kernel_only(original)
            if self.input_bits is not None and type(layer).__name__ == "QuantizeLayer":
                quantizer = {**layer.get_config()["quantizer"]}
                quantizer["config"] = {**quantizer["config"], "num_bits": self.input_bits}
                quantize_map.setdefault(layer.name, {})["quantizer"] = quantizer
        return transformed, quantize_map


def folded_scheme(base: Any, input_bits: int | None = None) -> Any:
    """``base`` (a TFMOT ``QuantizeScheme``) whose layout keeps kernels before a ReLU quantized.

    ``input_bits`` sets the bits of the quantizer TFMOT puts on the model input (the scheme's activation
    bits otherwise).
    """
    import tensorflow_model_optimization as tfmot

    class FoldedQuantizeScheme(tfmot.quantization.keras.QuantizeScheme):
        def get_layout_transformer(self) -> _FoldedLayout:
            return _FoldedLayout(base.get_layout_transformer(), base.get_quantize_registry(), input_bits)

        def get_quantize_registry(self) -> Any:
            return base.get_quantize_registry()

    return FoldedQuantizeScheme()


def quantization_aware(
    model: keras.Model,
    scheme: Any,
    layer_configs: Mapping[str, Any] | None = None,
    input_bits: int | None = None,
) -> keras.Model:
    """TFMOT's QAT model of ``model`` (fold its BNs first: :func:`fold_batch_norms`), every layer annotated.

    ``scheme`` is a TFMOT ``QuantizeScheme`` (``Default8BitQuantizeScheme()``, ``DefaultNBitQuantizeScheme(4, 4)``),
    wrapped by :func:`folded_scheme` so every conv / dense kernel is fake-quantized; ``layer_configs`` gives
    some layers (by name) a ``QuantizeConfig`` of their own, ``input_bits`` the model input's bits.
    """
    import tensorflow_model_optimization as tfmot

    quantization = tfmot.quantization.keras
    configs = dict(layer_configs or {})
    unknown = sorted(set(configs) - {layer.name for layer in model.layers})
    if unknown:
        raise ValueError(f"layer_configs names layers that model '{model.name}' lacks: {', '.join(unknown)}")

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = configs.get(layer.name)
        return quantization.quantize_annotate_layer(layer, config) if config is not None else layer

    annotated = quantization.quantize_annotate_model(keras.models.clone_model(model, clone_function=annotate))
    with quantization.quantize_scope():
        return quantization.quantize_apply(annotated, folded_scheme(scheme, input_bits))


def kernel_layer_bits(model: keras.Model) -> dict[str, list[int]]:
    """Wrapped layer name -> ``[w, a]`` bits, as the complexity track reads them, of each TFMOT-wrapped conv / dense."""
    return {
        layer.layer.name: list(layer_bit_widths(layer))
        for layer in model.layers
        if is_tfmot_quantize_wrapper(layer) and type(layer.layer) in KERNEL_LAYERS
    }


def activation_ranges(model: keras.Model) -> dict[str | None, list[dict[str, Any]]]:
    """The ``{"min_var", "max_var"}`` of every activation quantizer of a TFMOT QAT model, by what each observes.

    Key: the name of the wrapped layer whose output it quantizes (an output quantizer, or the post-activation
    quantizer of a conv / dense activation); ``None`` for the model input's ``QuantizeLayer``.
    """
    ranges: dict[str | None, list[dict[str, Any]]] = {}
    for layer in model.layers:
        if type(layer).__name__ == "QuantizeLayer" and layer.quantizer is not None:
            ranges.setdefault(None, []).append(layer.quantizer_vars)
        if not is_tfmot_quantize_wrapper(layer):
            continue
        observed = [getattr(layer, "_output_quantizer_vars", None)]
        observed += [getattr(a, "_post_activation_vars", None) for a in layer._quantize_activations]
        ranges.setdefault(layer.layer.name, []).extend(v for v in observed if v)
    return {key: values for key, values in ranges.items() if values}


def initialize_activation_ranges(qat_model: keras.Model, float_model: keras.Model, samples: np.ndarray) -> None:
    """Start every activation range of ``qat_model`` at ``[min(0, lo), max(0, hi)]`` of ``float_model`` on ``samples``.

    ``lo, hi`` are the least and greatest value the tensor the quantizer observes takes in ``float_model`` (the
    model ``qat_model`` was built from, same layer names) on ``samples``, zero included as TFMOT's ranges do:
    the int8 converter's min/max calibration, where TFMOT starts every range at [-6, 6].
    """
    ranges = activation_ranges(qat_model)
    names = [name for name in ranges if name is not None]
    probe = keras.Model(float_model.inputs, [float_model.get_layer(name).output for name in names])
    outputs = probe.predict(samples, batch_size=len(samples), verbose=0) if names else []
    outputs = outputs if len(names) != 1 else [outputs]
    observed = {None: samples, **dict(zip(names, outputs, strict=True))}
    for name, variables in ranges.items():
        low, high = min(float(np.min(observed[name])), 0.0), max(float(np.max(observed[name])), 0.0)
        for pair in variables:
            pair["min_var"].assign(low)
            pair["max_var"].assign(high)


def quantization_aware_training(
    float_model: keras.Model,
    context: TrainContext,
    scheme: Any,
    samples: np.ndarray,
    layer_configs: Callable[[keras.Model], Mapping[str, Any]] | None = None,
    input_bits: int | None = None,
) -> tuple[keras.Model, dict[str, list[float]], float]:
    """Fold, quantize with ``scheme``, start the ranges on ``samples``, fine-tune: (QAT model, history, seconds).

    ``layer_configs`` maps the folded model to the per-layer configs of :func:`quantization_aware`.
    """
    folded = fold_batch_norms(float_model)
    model = quantization_aware(folded, scheme, layer_configs(folded) if layer_configs else None, input_bits)
    initialize_activation_ranges(model, folded, samples)
    history, seconds = fit(model, context)
    return model, history, seconds
