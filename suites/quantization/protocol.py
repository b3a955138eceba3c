"""The quantization suite's protocol: one trained FP32 backbone, quantized by each method (applied by ``base.py``).

The closed division compares methods of :class:`suites.quantization.base.QuantizationMethod` on a protocol
backbone: the task's default backbone (``mlp`` on vector tasks, ``resnet-cifar`` on images) or
``mobilenetv2`` on image tasks, by name with their default options. Each starts from that backbone's trained
weights (the FP32 twin's training, once per task, seed and budget). Post-training methods (ptq-int8, zeroq,
adaquant, hessian-mp) never train it again; quantization-aware ones (qat-int8, qat-4bit, qfx, fliqs,
shiftquant) and the searches (simq-nas, quantnas) fine-tune it with the task's fine-tune recipe. So
``top1_relative`` is the deployed model's accuracy over the twin's. Where the deployment is a converted
flatbuffer (int8), the records measure that file on LiteRT; sub-8-bit deployments are simulated (Keras fake
quantization) and say so in their facts. The summary is what a quantization paper reports: deployed accuracy
and its ratio to the twin, agreement with the twin, BOPs, OPs, packed size, and the deployed file on LiteRT.

This module imports no TensorFlow: the leaderboard reads it.
"""

from effbench.protocol import SuiteProtocol

PROTOCOL = SuiteProtocol(
    suite="quantization",
    description="one trained FP32 protocol backbone (the task's default, or mobilenetv2 on images), quantized "
    "by each method from those weights: post-training methods without retraining, quantization-aware ones "
    "fine-tuned once with the task's fine-tune recipe",
    closed_kinds=("compression", "training", "elastic"),
    closed_base="suites.quantization.base:QuantizationMethod",
    options={
        "backbone": "the architecture to quantize (a method reference) instead of the task's default; the "
        "closed division also takes mobilenetv2",
    },
    fixed_options=("backbone",),
    closed_values={"backbone": ("resnet-cifar", "mobilenetv2", "mlp")},
    twin="backbone",
    summary_columns={
        "top1": ("", "top1"),
        "fp32_top1": ("", "fp32_top1"),
        "top1_relative": ("", "top1_relative"),
        "bops": ("", "bops"),
        "ops": ("", "ops"),
        "packed_bytes": ("", "size_bytes"),
        "deployed_bytes": ("deployed", "size_bytes"),
        "deployed_agreement": ("deployed", "agreement"),
        "deployed_t1_ms": ("deployed", "litert_t1_median_ms"),
        "float32_t1_ms": ("float32", "litert_t1_median_ms"),
        "train_seconds": ("", "train_seconds"),
    },
    summary_outcomes=("deployed",),
    summary_sort="top1_relative",
)
