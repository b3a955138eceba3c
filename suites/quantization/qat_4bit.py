r"""Mostly-4-bit quantization-aware training (Abdolrashidi et al. 2021) with TFMOT's experimental N-bit scheme.

Starting from the trained float backbone, every BatchNormalization is folded into the conv / dense before it
(as ``qat-int8``: :mod:`suites.quantization._folding`), then TFMOT's ``DefaultNBitQuantizeScheme`` at ``b``
bits (option ``bits``, default 4) for weights and activations, with the first conv / dense layer and the last
one (the logits) at ``b_e`` bits (option ``first_last_bits``, default 8: the paper's "mostly 4-bit" ResNets,
``resnet50_w4_a4_init8_dense8`` in its AQT configs, keep the stem conv and the dense layer at 8 bits, weights
and input activations), fine-tuned with the task's fine-tune recipe. Forward and pseudo-gradient::

    weights:      W_q = s_c * clip(round(W' / s_c), -(2^{b-1} - 1), 2^{b-1} - 1),  s_c = max|W'_{.c}| / (2^{b-1} - 1)
                  per output channel for convs (per tensor for dense layers: TFMOT's N-bit default), symmetric
    activations:  a_q = FakeQuant(a; [m, M]) on 2^b levels, [m, M] an exponential moving average (decay 0.999)
                  of the batch's [min(0, min a), max(0, max a)], at the outputs TFLite would quantize
    backward:     straight-through inside the range, 0 outside (TFMOT's fake-quant gradient)

The first layer at ``b_e`` bits: its kernel, and the model input (TFMOT's input quantizer). The last layer at
``b_e``: its kernel and its output, and the output of the layer that feeds it (the global pooling of a ResNet,
the last hidden dense of an MLP), which is the last layer's input activation. The ReLU after the first conv
quantizes at ``b``: the second layer's input is ``b``-bit, as in the paper.

**Deployable**: the Keras fake-quantized model (LiteRT has no 4-bit kernels), facts ``{"simulated": true,
"bit_widths": {layer: [w, a]}}`` as the complexity track reads them from TFMOT's configs
(:func:`effbench.bits.layer_bit_widths`): BOPs = MACs x w x a per layer. TFMOT quantizes a layer's *output*
at the config's activation bits, and the complexity track counts a layer's config bits as its *input*
activation bits; with one width everywhere these agree. With ``first_last_bits``, the layer feeding the last
layer has config bits (``b``, ``b_e``): counted at ``b x b_e`` where its input is ``b``-bit (an over-count for a
hidden dense of an MLP; a ResNet's pooling has no MACs).

**The paper's sweep** (precision x model size; its bfloat16 curve is the FP32 twins here, which the runner
trains once each as the upstreams): every one of

    qat-4bit:bits=B,backbone=resnet-cifar:depth=D       B in 2, 4, 8;  D in 8, 20, 32, 56

(12 references) and the float points ``resnet-cifar:depth=D``; the accuracy track reports top-1 and the
generalization gap (train minus test top-1), the complexity track BOPs and packed size, so the leaderboard
draws the accuracy-BOPs curves per precision and the gap the paper measures. The option parser splits method
options on ``,``, so a backbone reference with two options (``resnet-cifar:depth=20,width=2``) cannot be a
``backbone`` value: widths are swept one option at a time (``backbone=resnet-cifar:width=0.5``, ``...:width=2``,
at the default depth 20). ``bits=8`` with ``first_last_bits=8`` is uniform 8-bit N-bit QAT (simulated), the
8-bit curve.

Deviations (small-faithful): CIFAR ResNets on the embedded / CIFAR tasks, fine-tuned from the float model for
the task's fine-tune epochs, where the paper trains ResNet-50/101/152 on ImageNet for 250 epochs from scratch
with AQT in JAX. AQT quantizes each layer's *inputs*, activations with bounds from running statistics
(per-channel mean of max, from step 7500); TFMOT quantizes layer *outputs* per tensor with moving min/max, and
dense kernels per tensor. Activation ranges start at the float model's min / max on the first 128 training
inputs (TFMOT starts at [-6, 6]). BN is folded once with the moving statistics (AQT folds nothing; its BN
stays float). The paper's compute cost is its own linear model of hardware; here BOPs.

Paper: Abdolrashidi, Wang, Agrawal, Malmaud, Rybakov, Leichner & Lew, "Pareto-Optimal Quantized ResNet Is Mostly
4-bit", CVPR workshops 2021 (https://arxiv.org/abs/2105.03536).
"""

from __future__ import annotations

from typing import Any, ClassVar

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext
from suites.quantization._folding import KERNEL_LAYERS, kernel_layer_bits, quantization_aware_training
from suites.quantization.base import QuantizationMethod, calibration_samples

BIT_RANGE = (2, 8)  # what TFMOT's fake-quant ops take


def _registry(weight_bits: int, activation_bits: int) -> Any:
    from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
        default_n_bit_quantize_registry as n_bit,
    )

    return n_bit.DefaultNBitQuantizeRegistry(num_bits_weight=weight_bits, num_bits_activation=activation_bits)


def _quantizes_nothing(config: Any) -> bool:
    settings = config.get_config()
    return not settings.get("weight_attrs") and not settings.get("activation_attrs") and not settings.get(
        "quantize_output"
    )


def feeding_layer(model: keras.Model, layer: keras.layers.Layer, registry: Any) -> keras.layers.Layer | None:
    """The layer whose quantized output is ``layer``'s input: up through layers TFMOT leaves unquantized.

    None when that is the model input (its quantizer is the input's) or a layer TFMOT cannot quantize.
    """
    while True:
        (node,) = layer.inbound_nodes
        inbound = node.inbound_layers
        if isinstance(inbound, (list, tuple)) or isinstance(inbound, keras.layers.InputLayer):
            return None
        if not registry.supports(inbound):
            return None
        if not _quantizes_nothing(registry.get_quantize_config(inbound)):
            return inbound
        layer = inbound


def first_last_configs(model: keras.Model, bits: int, first_last_bits: int) -> dict[str, Any]:
    """Per-layer N-bit configs: first and last conv / dense at ``first_last_bits``, the last one's input too."""
    kernels = [layer for layer in model.layers if type(layer) in KERNEL_LAYERS]
    edges = _registry(first_last_bits, first_last_bits)
    configs = {layer.name: edges.get_quantize_config(layer) for layer in (kernels[0], kernels[-1])}
    feeder = feeding_layer(model, kernels[-1], edges)
    if feeder is not None and feeder.name not in configs:
        configs[feeder.name] = _registry(bits, first_last_bits).get_quantize_config(feeder)
    return configs


@register_method(
    "qat-4bit",
    suite="quantization",
    kind="training",
    paper=Paper("Pareto-Optimal Quantized ResNet Is Mostly 4-bit", 2021, "https://arxiv.org/abs/2105.03536"),
    summary="fold BN, TFMOT N-bit QAT at `bits` (default 4) for weights and activations, first and last "
    "layers at `first_last_bits` (8), fine-tuned from the trained backbone; simulated (Keras fake quantization)",
    taxonomy=Taxonomy(weight_bits=4, activation_bits=4, applied="training", data="labelled"),
    scale="small-faithful",
)
class MostlyFourBit(QuantizationMethod):
    default_options: ClassVar[dict[str, Any]] = {**QuantizationMethod.default_options, "bits": 4,
                                                 "first_last_bits": 8}  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        for option in ("bits", "first_last_bits"):
            value = self.options[option]
            if not isinstance(value, int) or not BIT_RANGE[0] <= value <= BIT_RANGE[1]:
                raise ValueError(f"qat-4bit {option} must be an integer from {BIT_RANGE[0]} to {BIT_RANGE[1]}; "
                                 f"got {value!r}")  # fmt: skip

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
            default_n_bit_quantize_scheme as n_bit,
        )

        bits, first_last = self.options["bits"], self.options["first_last_bits"]
        samples, calibration = calibration_samples(context)
        model, history, seconds = quantization_aware_training(
            float_model, context, n_bit.DefaultNBitQuantizeScheme(num_bits_weight=bits, num_bits_activation=bits),
            samples, layer_configs=lambda folded: first_last_configs(folded, bits, first_last), input_bits=first_last,
        )  # fmt: skip
        facts = {"simulated": True, "bit_widths": kernel_layer_bits(model), "first_last_bits": first_last,
                 "calibration": calibration}  # fmt: skip
        return Artifact(model=model, history=history, train_seconds=seconds, facts=facts)
