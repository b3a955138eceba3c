r"""PB-LLM's partial binarization, on the BiBench backbones: salient weights at 8 bits, the rest binary.

Forward and pseudo-gradient, side by side, per binarized layer with kernel W (n elements) and salient
fraction r (option ``salient``, default 0.1)::

    mask:         S = the round(r n) weights of largest |W| in the layer (ties at the threshold included),
                  recomputed from the latent kernel at every forward pass
    salient:      W_q = s * round(W / s),  s = max|W| / 127      (symmetric 8-bit, per layer)
                  dW_q/dW := 0                                   (frozen: PB-LLM's QAT freezes them)
    binarized:    W_q = alpha_c * sign(W),  alpha_c = mean of |W| over the binarized entries of output
                  channel c (the L2-optimal scale of a sign over a given support; XNOR-Net's result)
                  dW_q/dW := alpha_c * 1[|W| <= 1]               (clipped STE, alpha detached)

sign(0) = +1. The mask is a pure function of the latent kernel, so the deployed model's mask is the one
its final weights give; nothing extra is stored or trained.

**Compression, not a drop-in operator** (kind ``compression``): PB-LLM partially binarizes a *trained*
network, weights only. Like every operator (:class:`~suites.binarization.operators.OperatorMethod`), its
upstream of role ``trained`` is the float backbone's training (the FP32 twin's own, trained once by the
runner); ``run`` partially binarizes that model (:meth:`PartialBinarization.binarize_backbone`, the float
weights carry over) and fine-tunes it with the task's fine-tune recipe, the salient weights frozen. The
history and ``train_seconds`` are the fine-tuning's; the training-cost track reports the float training as
``upstream_train_seconds``. Activations stay float, as in PB-LLM, so it is not a W1A1 operator and its
runs are open. ``init=scratch`` partially binarizes a fresh backbone instead.

**Bits.** A weight costs on average (1 - r) x 1 + r x 8 bits, plus 1 bit of mask (a bitmap over the
layer) when 0 < r < 1: 2.7 bits at r = 0.1. The complexity track takes integer widths, so the kernel
quantizer reports ``precision = ceil(average)`` (3 at r = 0.1) and keeps the exact figure in
``average_bits``: the packed size is an upper bound by under 0.3 bit a weight, and BOPs = MACs x 3 x 32
bound the product of a dense binary and a sparse 8-bit matrix (1 + 8r = 1.8 weight bits of compute).

Deviations (small-faithful): PB-LLM works on OPT / LLaMA linear layers and also has a PTQ branch with
GPTQ-style Hessian reconstruction; here the QAT branch with magnitude saliency runs on the conv / MLP
backbones under the operator protocol (first and last layers float), without a latent-weight clip
(a clip would also cut the frozen salient weights). The activations being float, the protocol's rules
for binary inputs (ReLU -> hard tanh, one-padding) are not applied: the fine-tuned model keeps the
pretrained backbone's ReLUs and zero padding.

Paper: Shang, Yuan, Wu & Dong, "PB-LLM: Partially Binarized Large Language Models", ICLR 2024
(https://arxiv.org/abs/2310.00034).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.tf import keras, tf

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization._quantizers import clipped_ste_sign
from suites.binarization.operators import OperatorMethod, binarize

SALIENT_BITS = 8


def mixed_bits(salient: float) -> float:
    """Average stored bits a weight: (1 - r) sign bits + r 8-bit values + a 1-bit mask when 0 < r < 1."""
    mask = 1.0 if 0.0 < salient < 1.0 else 0.0
    return (1.0 - salient) * 1.0 + salient * SALIENT_BITS + mask


def salient_mask(kernel: tf.Tensor, salient: float) -> tf.Tensor:
    """1.0 on the round(r n) largest-magnitude weights of the kernel (ties at the threshold too), else 0."""
    magnitude = tf.reshape(tf.abs(kernel), [-1])
    count = round(salient * int(magnitude.shape[0]))
    if count == 0:
        return tf.zeros_like(kernel)
    threshold = tf.math.top_k(magnitude, k=count).values[-1]
    return tf.cast(tf.abs(kernel) >= threshold, kernel.dtype)


@larq.utils.register_keras_custom_object
class PartialBinarizer(larq.quantizers._BaseQuantizer):
    r"""PB-LLM kernel quantizer: 8-bit salient weights (frozen), alpha_c sign(W) elsewhere (module docstring)."""

    def __init__(self, salient: float = 0.1, **kwargs: Any):
        if not 0.0 <= salient <= 1.0:
            raise ValueError(f"salient is {salient}, expected a fraction in [0, 1]")
        super().__init__(**kwargs)
        self.salient = float(salient)
        self.average_bits = mixed_bits(self.salient)
        self.precision = math.ceil(self.average_bits)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        mask = tf.stop_gradient(salient_mask(inputs, self.salient))
        step = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(inputs)), 1e-8) / (2 ** (SALIENT_BITS - 1) - 1))
        salient_values = tf.stop_gradient(step * tf.round(inputs / step))
        binary = 1.0 - mask
        axes = list(range(len(inputs.shape) - 1))
        alpha = tf.reduce_sum(binary * tf.abs(inputs), axis=axes, keepdims=True) / tf.maximum(
            tf.reduce_sum(binary, axis=axes, keepdims=True), 1.0
        )
        binarized = tf.stop_gradient(alpha) * clipped_ste_sign(inputs)
        return super().call(mask * salient_values + binary * binarized)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "salient": self.salient}


@register_method(
    "pb-partial",
    suite="binarization",
    kind="compression",
    paper=Paper("PB-LLM: Partially Binarized Large Language Models", 2023, "https://arxiv.org/abs/2310.00034"),
    summary="train float, then keep the top-r |W| per layer at 8 bits (frozen) and fine-tune the rest as "
    "alpha_c*sign(W) with alpha_c = mean|W| over binarized entries; float activations",
    taxonomy=Taxonomy(weight_bits=3, activation_bits=32, applied="post-training", data="labelled"),
    scale="small-faithful",
)
class PartialBinarization(OperatorMethod):
    default_options: ClassVar[dict[str, Any]] = {**OperatorMethod.default_options, "salient": 0.1}

    def input_quantizer(self) -> None:
        return None

    def kernel_quantizer(self) -> PartialBinarizer:
        return PartialBinarizer(salient=self.options["salient"])

    def kernel_constraint(self) -> None:
        return None

    def binarize_backbone(self, float_model: keras.Model) -> keras.Model:
        """``binarize`` with the float model's activations and zero padding kept (activations stay float)."""
        activations = {layer.name: layer.get_config().get("activation") for layer in float_model.layers}

        def binary_layer(larq_class: type, config: dict[str, Any]) -> keras.layers.Layer:
            config = {**config, "activation": activations[config["name"]]}
            if "pad_values" in config:
                config["pad_values"] = 0.0
            return larq_class(**config)

        def keep_float_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
            return type(layer).from_config(layer.get_config())  # ReLUs included: no hard tanh

        return binarize(
            float_model, self.input_quantizer(), self.kernel_quantizer(), self.kernel_constraint(),
            binary_layer=binary_layer, replace_layer=keep_float_layer,
        )  # fmt: skip
