"""Bit widths of a layer's weights and input activations, as deployed.

The complexity track needs to know how many bits each kernel element and each input activation
of a layer takes once the model ships, and the answer sits in different places depending on
who quantized the layer:

1. ``layer.effbench_bits = (w, a)``: an explicit declaration by a method; it always wins.
2. larq quantized layers carry quantizer objects (``kernel_quantizer``, ``depthwise_quantizer``,
   ``pointwise_quantizer``, ``input_quantizer``). larq quantizers expose ``precision``
   (``SteSign().precision == 1``, ``DoReFa(k_bit=2).precision == 2``); a quantizer given as a
   string is resolved with ``larq.quantizers.get``. No quantizer means a float tensor, 32 bits.
   A quantizer without a known precision also counts as 32 bits, and is reported by
   :func:`unknown_quantizers` so the caller can warn instead of guessing silently.
3. TFMOT ``QuantizeWrapper`` / ``QuantizeWrapperV2`` (``tfmot.quantization.keras.quantize_model``): the bits
   its ``quantize_config`` declares. Weights: the widest ``num_bits`` of the config's weight quantizers.
   Activations: the config's ``_num_bits_activation`` (the experimental N-bit scheme), else the widest
   ``num_bits`` of its activation and output quantizers; TFMOT's default scheme quantizes every input of a
   quantized layer at 8 bits, so a config that names none is (8, 8), as is one that cannot be read.
   TFMOT's ``PruneLowMagnitude`` and clustering (``ClusterWeights``) wrappers are transparent: their wrapped
   layer decides (a clustered kernel ships as float values, k distinct ones; its palette is not counted).
4. Anything else is a float layer: (32, 32).

It is the core's, so the methods that declare bit widths (``effbench_bits``) and the complexity track that
counts them read one definition.
"""

from __future__ import annotations

from typing import Any

FLOAT_BITS = 32
# TFMOT's default scheme: 8-bit weights and 8-bit activations.
TFMOT_BITS = (8, 8)

# Weight variables stored at the layer's weight bit width; every other variable (bias, BN
# statistics, ...) is stored as float32.
KERNEL_KINDS = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")

# larq attribute holding the quantizer of each kernel kind.
_KERNEL_QUANTIZERS = {
    "kernel": "kernel_quantizer",
    "depthwise_kernel": "depthwise_quantizer",
    "pointwise_kernel": "pointwise_quantizer",
}

_TFMOT_QUANTIZE_WRAPPERS = ("QuantizeWrapper", "QuantizeWrapperV2")


def _declared_num_bits(quantizers: list[Any]) -> int | None:
    bits = [int(q.num_bits) for q in quantizers if isinstance(getattr(q, "num_bits", None), int)]
    return max(bits, default=None)


def tfmot_bits(wrapper: Any) -> tuple[int, int]:
    """(weight bits, activation bits) a TFMOT quantize wrapper's ``quantize_config`` declares (docstring, 3)."""
    config, layer = getattr(wrapper, "quantize_config", None), wrapper.layer
    try:
        w_bits = _declared_num_bits([q for _, q in config.get_weights_and_quantizers(layer)])
        a_bits = getattr(config, "_num_bits_activation", None) or _declared_num_bits(
            [q for _, q in config.get_activations_and_quantizers(layer)] + list(config.get_output_quantizers(layer))
        )
    except AttributeError:  # no config, or a user's config without the QuantizeConfig interface
        return TFMOT_BITS
    if w_bits is None:  # a config that leaves the weights alone keeps them float
        w_bits = FLOAT_BITS if any(hasattr(layer, kind) for kind in KERNEL_KINDS) else TFMOT_BITS[0]
    return w_bits, int(a_bits or TFMOT_BITS[1])


def _is_tfmot(layer: Any, class_names: tuple[str, ...]) -> bool:
    # Matched by class name and module so TFMOT stays an optional, lazily imported dependency.
    cls = type(layer)
    return cls.__name__ in class_names and cls.__module__.startswith("tensorflow_model_optimization")


def is_tfmot_quantize_wrapper(layer: Any) -> bool:
    """True for TFMOT's ``QuantizeWrapper``/``QuantizeWrapperV2`` (the wrapped layer is ``.layer``)."""
    return _is_tfmot(layer, _TFMOT_QUANTIZE_WRAPPERS)


def is_tfmot_quantize_layer(layer: Any) -> bool:
    """True for TFMOT's input ``QuantizeLayer``, whose only weights are range bookkeeping."""
    return _is_tfmot(layer, ("QuantizeLayer",))


def is_tfmot_prune_wrapper(layer: Any) -> bool:
    """True for TFMOT's ``PruneLowMagnitude`` wrapper (mask and threshold are bookkeeping)."""
    return _is_tfmot(layer, ("PruneLowMagnitude",))


def is_tfmot_cluster_wrapper(layer: Any) -> bool:
    """True for TFMOT's clustering wrappers (centroids and pulling indices are bookkeeping)."""
    return _is_tfmot(layer, ("ClusterWeights", "ClusterWeightsMHA", "ClusterWeightsRNN"))


def is_transparent_wrapper(layer: Any) -> bool:
    """A TFMOT wrapper whose wrapped layer decides the bits: pruning and clustering keep float weights."""
    return is_tfmot_prune_wrapper(layer) or is_tfmot_cluster_wrapper(layer)


def _resolve(quantizer: Any) -> Any:
    if isinstance(quantizer, str):
        import larq

        return larq.quantizers.get(quantizer)
    return quantizer


def quantizer_bits(quantizer: Any) -> int | None:
    """Bits a quantizer's output takes: 32 for no quantizer, None when it cannot be told."""
    quantizer = _resolve(quantizer)
    if quantizer is None:
        return FLOAT_BITS
    precision = getattr(quantizer, "precision", None)
    return int(precision) if isinstance(precision, int) and precision > 0 else None


def _explicit_bits(layer: Any) -> tuple[int, int] | None:
    for candidate in (layer, getattr(layer, "layer", None)):
        bits = getattr(candidate, "effbench_bits", None)
        if bits is not None:
            w_bits, a_bits = bits
            return int(w_bits), int(a_bits)
    return None


def kernel_bit_widths(layer: Any) -> dict[str, int]:
    """Bits per kernel kind (``kernel``, ``depthwise_kernel``, ...) for the layer's kernels.

    Kinds a layer does not have still get an entry (the layer's weight bit width), so the caller
    can look any kernel variable up. Only larq layers can give different kinds different widths
    (a separable layer with distinct depthwise and pointwise quantizers).
    """
    explicit = _explicit_bits(layer)
    if explicit is not None:
        return dict.fromkeys(KERNEL_KINDS, explicit[0])
    if is_tfmot_quantize_wrapper(layer):
        return dict.fromkeys(KERNEL_KINDS, tfmot_bits(layer)[0])
    if is_transparent_wrapper(layer):
        return kernel_bit_widths(layer.layer)
    bits = dict.fromkeys(KERNEL_KINDS, FLOAT_BITS)
    for kind, attribute in _KERNEL_QUANTIZERS.items():
        if hasattr(layer, attribute):
            bits[kind] = quantizer_bits(getattr(layer, attribute)) or FLOAT_BITS
    return bits


def _present_kernel_kinds(layer: Any) -> list[str]:
    return [kind for kind, attribute in _KERNEL_QUANTIZERS.items() if hasattr(layer, attribute)]


def layer_bit_widths(layer: Any) -> tuple[int, int]:
    """(weight bits, activation bits) of a layer; see the module docstring for the precedence.

    A larq layer with several quantized kernels reports the widest of them as its weight width,
    so BOPs are never under-counted.
    """
    explicit = _explicit_bits(layer)
    if explicit is not None:
        return explicit
    if is_tfmot_quantize_wrapper(layer):
        return tfmot_bits(layer)
    if is_transparent_wrapper(layer):
        return layer_bit_widths(layer.layer)
    kinds = _present_kernel_kinds(layer)
    per_kind = kernel_bit_widths(layer)
    w_bits = max((per_kind[kind] for kind in kinds), default=FLOAT_BITS)
    a_bits = FLOAT_BITS
    if hasattr(layer, "input_quantizer"):
        a_bits = quantizer_bits(layer.input_quantizer) or FLOAT_BITS
    return w_bits, a_bits


def unknown_quantizers(layer: Any) -> list[str]:
    """Names of the layer's quantizer attributes whose precision cannot be told (counted as 32)."""
    if _explicit_bits(layer) is not None or is_tfmot_quantize_wrapper(layer):
        return []
    if is_transparent_wrapper(layer):
        return unknown_quantizers(layer.layer)
    attributes = [*_KERNEL_QUANTIZERS.values(), "input_quantizer"]
    return [
        attribute
        for attribute in attributes
        if hasattr(layer, attribute) and quantizer_bits(getattr(layer, attribute)) is None
    ]
