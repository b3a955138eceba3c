r"""Quantization-aware training at 8 bits (the whitepaper's QAT), with TFMOT on the BN-folded backbone.

Starting from the trained float backbone, every BatchNormalization is folded into the conv / dense before it
(:func:`~suites.quantization._folding.fold_batch_norms`: ``W' = W gamma / sqrt(var + eps)`` and
``b' = beta + (b - mean) gamma / sqrt(var + eps)`` per output channel), then TFMOT's default 8-bit scheme
(``quantize_apply``, with TFMOT's conv -> ReLU quirk fixed so that every kernel is fake-quantized) and
fine-tuning with the task's fine-tune recipe (:func:`effbench.training.fit`), all through
:func:`~suites.quantization._folding.quantization_aware_training`. Forward and pseudo-gradient, as the
whitepaper's QAT simulates quantization::

    weights:      W_q = s_c * clip(round(W' / s_c), -127, 127),  s_c = max|W'_{.c}| / 127   (per output channel
                  for convs; per tensor for dense layers, TFMOT's default), the range taken from the current W'
    activations:  a_q = FakeQuant(a; [m, M]) on 256 levels, [m, M] an exponential moving average (decay 0.999)
                  of the batch's [min(0, min a), max(0, max a)], at the outputs TFLite quantizes (after each
                  conv + ReLU, each Add + ReLU, the pooling, the logits; the model input)
    backward:     dW_q/dW' = 1 inside the range (straight-through), 0 outside; likewise da_q/da

**Deployment**: the int8 TFLite flatbuffer converted from the QAT model (``Optimize.DEFAULT``,
``TFLITE_BUILTINS_INT8``, float in and out; :func:`~suites.quantization.base.int8_flatbuffer`). The converter
takes the trained fake-quant ranges; it needs a representative dataset all the same (the first 128 training
inputs: fact ``calibration``) for any tensor without one. The artifact's ``model`` is the QAT Keras model (its
fake quantizers declare 8 bits, so the complexity track counts BOPs at 8 x 8; fact ``bit_widths``).

Deviations: the whitepaper folds with the batch statistics during training and switches to the moving ones
later; here the moving statistics of the trained model are folded once, which is its "freeze batch norm"
phase from the first step (a backbone without BN, the ``mlp``, has nothing to fold). Activation ranges start at
the float model's min / max on the 128 calibration inputs (TFMOT starts them at [-6, 6], which its 0.999
moving average leaves nearly untouched over a fine-tune of a few hundred steps) and move by TFMOT's moving
average from there. Dense kernels are quantized per tensor (TFMOT's default scheme); the converter then stores
them per tensor too.

Paper: Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference: A whitepaper", 2018
(https://arxiv.org/abs/1806.08342).
"""

from __future__ import annotations

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext
from suites.quantization._folding import kernel_layer_bits, quantization_aware_training
from suites.quantization.base import QuantizationMethod, calibration_samples, int8_flatbuffer


@register_method(
    "qat-int8",
    suite="quantization",
    kind="training",
    paper=Paper(
        "Quantizing deep convolutional networks for efficient inference: A whitepaper",
        2018,
        "https://arxiv.org/abs/1806.08342",
    ),
    summary="fold BN into the convs, TFMOT 8-bit QAT (per-channel conv weights, EMA activation ranges) "
    "fine-tuned from the trained backbone; deployed as the int8 TFLite flatbuffer",
    taxonomy=Taxonomy(weight_bits=8, activation_bits=8, applied="training", data="labelled"),
)
class QuantizationAwareInt8(QuantizationMethod):
    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        import tensorflow_model_optimization as tfmot

        samples, calibration = calibration_samples(context)
        scheme = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
        model, history, seconds = quantization_aware_training(float_model, context, scheme, samples)
        tflite = int8_flatbuffer(model, samples, f"first {len(samples)} examples of the run's training split")
        facts = {"calibration": calibration, "simulated": False, "bit_widths": kernel_layer_bits(model)}
        return Artifact(model=model, history=history, train_seconds=seconds, tflite=tflite, facts=facts)
