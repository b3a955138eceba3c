r"""Post-training quantization as the whitepaper specifies it, converted by TFLite and by ai-edge-quantizer.

**The main deployable, full int8** (the whitepaper's recommended post-training scheme): TFLite's converter on
the trained float model (:func:`~suites.quantization.base.int8_flatbuffer`), float inputs and outputs::

    weights:      W_q = s_c * clip(round(W / s_c), -127, 127),  s_c = max|W_{.c}| / 127   per output channel c
    activations:  a_q = s * (clip(round(a / s) + z, -128, 127) - z),  s = (max - min) / 255,
                  z = -128 - round(min / s),  [min, max] = the range a tensor takes on the calibration inputs
    biases:       int32 at scale s_in * s_c

with BN folded into the preceding conv by the converter. The ranges are calibrated on the first 128 inputs of
the run's training split (:func:`~suites.quantization.base.calibration_samples`; fact ``calibration``). No
gradient: nothing trains (epochs = 0).

**Further deployables**, each a flatbuffer that LiteRT 2.3.0 runs, float in and out:

- ``float16``: the converter's float16 weights (dequantized when loaded; float32 arithmetic). Data-free.
- ``dynamic``: the converter's dynamic range quantization: int8 per-channel weights, activations quantized per
  inference by the kernels that support it. Data-free.
- ``wi4`` (ai-edge-quantizer ``weight_only_wi4_afp32``): int4 weights, symmetric per channel, min/max
  (``s_c = max|W_{.c}| / 7``), dequantized to float before each op; float activations. Data-free. The
  whitepaper reaches 4-bit weights with QAT (2% to 10% loss); here post-training.
- ``wi8_ai16`` (ai-edge-quantizer ``static_wi8_ai16``): int8 per-channel weights and int16 activations
  (symmetric per tensor, ``s = max|a| / 32767``), calibrated on the same 128 inputs; LiteRT's 16x8 kernels.
  The model's input and output tensors are left float (``NO_QUANTIZE`` on ``INPUT`` / ``OUTPUT``, so the
  quantizer inserts the QUANTIZE / DEQUANTIZE ops), so every deployable takes the same inputs.

Left out: ai-edge-quantizer's ``static_wi8_ai8`` is the main deployable's scheme (the converter's int8 is that
deployable), and its flatbuffer fails ai-edge-quantizer's own ``validate()`` on this stack (``Tensor data is
null`` reading the output on LiteRT 2.3.0), so it would add nothing measured. ``dynamic_wi4_afp32`` is the
dynamic analogue of ``wi4``, left out to keep one int4 point.

The two ai-edge-quantizer deployables carry ``validation``: ai-edge-quantizer's ``validate()`` of the output
tensor against the float32 flatbuffer on the first 64 inputs of the validation split (``snr`` =
mean(signal^2) / mean(noise^2), a power ratio, and ``snr_db``; ``mse``; ``cosine_similarity``).

**Keras models.** Each deployable's ``model`` is the Keras simulation of its flatbuffer, so the tracks that
count or run Keras models (complexity: BOPs and packed size at the deployed bits) see the deployed precision:
every conv / dense layer becomes its larq counterpart with the shared uniform quantizers
(:func:`~suites.quantization._uniform.quantize_layers`: per-channel max-abs weights, per-tensor min/max
activations on the calibration inputs) at (8, 8) for int8, (8, 32) for ``dynamic`` (its on-the-fly activation
quantization is not simulated), (4, 32) for ``wi4`` and (8, 16) for ``wi8_ai16``; ``float16`` keeps the float
model (no float16 quantizer: the complexity track counts its weights at 32 bits, the file holds 16). The
flatbuffers are converted from the float model, not from the simulations; the accuracy and edge tracks
measure the flatbuffers. The simulation differs from the converter in detail: it quantizes each conv /
dense layer's input (the converter quantizes every tensor) and keeps BN unfolded in float.

Paper: Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference: A whitepaper", 2018
(https://arxiv.org/abs/1806.08342). Deviations: the whitepaper's PTQ compares per-layer and per-channel
weights; this is its recommended per-channel scheme only.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import numpy as np

from effbench.console import native_stderr_filtered
from effbench.method import MAIN, Artifact, Deployable
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.tflite import Calibration, convert, exported
from effbench.training import TrainContext
from suites.quantization._uniform import (
    FLOAT_BITS,
    bit_width_facts,
    calibrate_activation_ranges,
    quantizable_layer_names,
    quantize_layers,
)
from suites.quantization.base import QuantizationMethod, calibration_samples, int8_flatbuffer

CONVERTER_VARIANTS = ("float16", "dynamic")
# Deployable -> (ai-edge-quantizer recipe function name, whether it calibrates activations).
AEQ_RECIPES = {"wi4": ("weight_only_wi4_afp32", False), "wi8_ai16": ("static_wi8_ai16", True)}
# The (weight, activation) bits each deployable's Keras simulation runs at (float16: the float model).
SIMULATED_BITS = {MAIN: (8, 8), "dynamic": (8, FLOAT_BITS), "wi4": (4, FLOAT_BITS), "wi8_ai16": (8, 16)}
VALIDATION_SAMPLES = 64
DATA_FREE = {"split": "none"}


def simulated(float_model: keras.Model, bits: tuple[int, int], samples: np.ndarray) -> keras.Model:
    """``float_model`` with each conv / dense layer at ``bits`` (uniform quantizers), calibrated on ``samples``."""
    model = quantize_layers(float_model, dict.fromkeys(quantizable_layer_names(float_model), bits))
    if bits[1] < FLOAT_BITS:
        calibrate_activation_ranges(model, samples)
    return model


def signature(content: bytes) -> tuple[str, str]:
    """(signature key, input name) of a flatbuffer's one signature with one input."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_filtered():
        signatures = Interpreter(model_content=content).get_signature_list()
    (key, entry), *_ = signatures.items()
    return key, entry["inputs"][0]


def post_conversion(
    float32: bytes, recipe_name: str, calibration: np.ndarray | None, validation: np.ndarray
) -> tuple[bytes, dict[str, Any]]:
    """The flatbuffer of ai-edge-quantizer's ``recipe_name`` on ``float32``, and the ``validation`` fact.

    ``calibration`` (inputs) calibrates a static recipe; the model's input and output stay float. The fact is
    ``validate()``'s comparison of the output tensor with ``float32`` on ``validation``.
    """
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.utils.validation_utils import ValidationErrorMetric

    key, name = signature(float32)
    engine = quantizer.Quantizer(float32, getattr(recipe, recipe_name)())
    for io_op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        engine.update_quantization_recipe(".*", io_op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    ranges = None
    if calibration is not None:
        # Its progress bar writes to Python's stderr; nothing else is printed there.
        with contextlib.redirect_stderr(io.StringIO()), native_stderr_filtered():
            ranges = engine.calibrate({key: [{name: x[None]} for x in calibration.astype(np.float32)]})
    with native_stderr_filtered():
        content = bytes(engine.quantize(ranges, enable_progress_report=False).quantized_model)
        metrics = [ValidationErrorMetric.SNR, ValidationErrorMetric.MSE, ValidationErrorMetric.COSINE_SIMILARITY]
        comparison = engine.validate(
            {key: [{name: x[None]} for x in validation.astype(np.float32)]},
            error_metrics=metrics, validate_output_tensors_only=True,
        )  # fmt: skip
    (tensor, values), *_ = comparison.get_signature_comparison_result(key).output_tensors.items()
    snr = float(values["snr"])
    fact = {
        "tensor": tensor, "snr": snr, "snr_db": 10 * math.log10(snr) if snr > 0 else float("-inf"),
        "mse": float(values["mse"]), "cosine_similarity": float(values["cosine_similarity"]),
        "data": {"split": "val", "samples": int(len(validation)), "selection": "first"},
    }  # fmt: skip
    return content, fact


@register_method(
    "ptq-int8",
    suite="quantization",
    kind="compression",
    paper=Paper(
        "Quantizing deep convolutional networks for efficient inference: A whitepaper",
        2018,
        "https://arxiv.org/abs/1806.08342",
    ),
    summary="TFLite full-int8 PTQ (per-channel int8 weights, per-tensor int8 activations calibrated on 128 "
    "training inputs); also float16, dynamic-range, and ai-edge-quantizer int4 weight-only and int8/int16 "
    "flatbuffers",
    taxonomy=Taxonomy(weight_bits=8, activation_bits=8, applied="post-training", data="calibration"),
)
class PostTrainingInt8(QuantizationMethod):
    def deployable_names(self) -> tuple[str, ...]:
        return (MAIN, *CONVERTER_VARIANTS, *AEQ_RECIPES)

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        samples, calibration = calibration_samples(context)
        source = f"first {len(samples)} examples of the run's training split"
        data = Calibration(samples, source)
        validation = context.splits.x_val[:VALIDATION_SAMPLES]

        def deployable(name: str, tflite: bytes, facts: dict[str, Any]) -> Deployable:
            model = simulated(float_model, SIMULATED_BITS[name], samples) if name in SIMULATED_BITS else float_model
            return Deployable(model, tflite, {**facts, "simulated": False, "bit_widths": bit_width_facts(model)})

        with exported(float_model) as saved:  # one export for the four conversions
            main = deployable(MAIN, int8_flatbuffer(saved, samples, source), {"calibration": calibration})
            deployables = {
                variant: deployable(variant, convert(saved, variant, data), {"calibration": DATA_FREE})
                for variant in CONVERTER_VARIANTS
            }
            float32 = convert(saved, "float32", data)
        for name, (recipe_name, calibrates) in AEQ_RECIPES.items():
            tflite, fact = post_conversion(float32, recipe_name, samples if calibrates else None, validation)
            facts = {"calibration": calibration if calibrates else DATA_FREE, "validation": fact}
            deployables[name] = deployable(name, tflite, facts)
        return Artifact(model=main.model, tflite=main.tflite, facts=main.facts, deployables=deployables)
