"""SELU self-normalizing networks, as a drop-in for a backbone's normalization and activations.

Mechanism: every activation is the scaled exponential linear unit

    selu(x) = lambda * x                       for x > 0
    selu(x) = lambda * alpha * (exp(x) - 1)    for x <= 0,   lambda = 1.0507, alpha = 1.6733,

whose mapping of a layer's activation mean and variance has the stable fixed point (0, 1) when the
weights are LeCun-normal, w ~ N(0, 1 / fan_in). The network then keeps its activations normalized
without any normalization layer, so batch normalization is removed, and dropout becomes alpha-dropout:
a dropped unit is set to selu's negative saturation -lambda * alpha instead of 0, and the result is
mapped by the affine a * x + b that restores mean 0 and variance 1.

Applied to the backbone named by ``backbone`` (default ``resnet-cifar``; ``mlp`` is the paper's own
feed-forward setting): each BatchNormalization becomes an identity (a linear activation, which the
TFLite converter drops), each ReLU / ReLU6 (as a layer or a conv / dense ``activation``) becomes selu,
each conv and dense kernel is re-initialised LeCun-normal and gets a bias (the batch norm's shift is
gone), and each Dropout becomes AlphaDropout at the same rate. The logits layer keeps its linear output.

Paper: Klambauer, Unterthiner, Mayr & Hochreiter, "Self-Normalizing Neural Networks", NeurIPS 2017
(https://arxiv.org/abs/1706.02515). Deviation: the paper evaluates fully-connected networks; on a conv
backbone (the default here) the fixed-point argument is applied per layer as it stands, and the backbone's
residual additions, whose variance batch norm used to reset, are kept as they are.
"""

from __future__ import annotations

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from suites.architectures._dropin import RECTIFIERS, DropInArchitecture, is_rectifier

WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


@register_method(
    "selu-snn",
    suite="architectures",
    kind="architecture",
    paper=Paper("Self-Normalizing Neural Networks", 2017, "https://arxiv.org/abs/1706.02515"),
    summary="a backbone without batch norm: SELU activations, LeCun-normal kernels, alpha-dropout",
    taxonomy=Taxonomy(applied="architecture"),
)
class SeluSNN(DropInArchitecture):
    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            return keras.layers.Activation("linear", name=layer.name)
        if is_rectifier(layer):
            return keras.layers.Activation("selu", name=layer.name)
        if isinstance(layer, keras.layers.Dropout) and not isinstance(layer, keras.layers.AlphaDropout):
            return keras.layers.AlphaDropout(config["rate"], name=layer.name)
        if isinstance(layer, WEIGHTED):
            return type(layer).from_config(_self_normalizing(layer, config))
        return None


def _self_normalizing(layer: keras.layers.Layer, config: dict) -> dict:
    """``config`` with LeCun-normal kernels, a bias, and selu in place of a rectifier activation."""
    activation = "selu" if config.get("activation") in RECTIFIERS else config.get("activation")
    fresh = {**config, "use_bias": True, "activation": activation}
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # Keras computes a depthwise kernel's fan-in as kh * kw * channels, but each output reads only
        # kh * kw inputs: scaling by the channel count gives LeCun's variance 1 / (kh * kw).
        scaling = {"scale": float(layer.input_shape[-1]), "mode": "fan_in", "distribution": "truncated_normal"}
        return {**fresh, "depthwise_initializer": {"class_name": "VarianceScaling", "config": scaling}}
    return {**fresh, "kernel_initializer": {"class_name": "LecunNormal", "config": {}}}
