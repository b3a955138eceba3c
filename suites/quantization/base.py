"""The quantization protocol in code: every method quantizes the same trained FP32 backbone.

:class:`QuantizationMethod` declares the backbone's training as the upstream of role ``trained`` (the FP32
twin is the same training: the planner runs it once), so a subclass's :meth:`QuantizationMethod.quantize`
receives the trained float model and returns the artifact. A post-training subclass returns it without
training (``epochs = 0`` in its cost); a quantization-aware one calls :func:`effbench.training.fit`, and the
runner gives it the task's fine-tune recipe because it starts from a ``trained`` upstream.

Helpers shared by the methods: :func:`calibration_samples` (which inputs calibrate, recorded as the
``calibration`` fact), :func:`int8_flatbuffer` (the core's int8 conversion on those inputs).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from effbench.method import Artifact, Method, MethodRef
from effbench.registry import TaskSpec
from effbench.tf import keras
from effbench.tflite import CALIBRATION_SAMPLES, Calibration, Source, convert
from effbench.training import TrainContext

TRAINED = "trained"


class QuantizationMethod(Method):
    """Quantizes the trained protocol backbone; subclasses implement :meth:`quantize`.

    Options: ``backbone``, a method reference of the architecture to quantize instead of the task's default
    (the closed division takes the default, ``resnet-cifar``, ``mobilenetv2`` and ``mlp``:
    :mod:`suites.quantization.protocol`). Subclasses with options of their own extend ``default_options``
    (``{**QuantizationMethod.default_options, "bits": 4}``).
    """

    default_options: ClassVar[dict[str, Any]] = {"backbone": None}
    protocol: ClassVar[str] = "quantization"

    def backbone(self, task: TaskSpec) -> MethodRef:
        return MethodRef.parse(self.options["backbone"] or task.default_backbone)

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        """The trained backbone (also the FP32 twin, so it trains once)."""
        return {TRAINED: self.backbone(task)}

    def run(self, context: TrainContext) -> Artifact:
        return self.quantize(context.upstream[TRAINED].model, context)

    @abc.abstractmethod
    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        """The deployables of ``float_model`` (trained, a fresh copy this method may change) quantized."""


def calibration_samples(context: TrainContext, samples: int = CALIBRATION_SAMPLES) -> tuple[np.ndarray, dict]:
    """The first ``samples`` inputs of the run's training split, and the ``calibration`` fact that says so."""
    x = context.splits.x_train[:samples].astype(np.float32)
    return x, {"split": "train", "samples": int(len(x)), "selection": "first", "labels": False}


def int8_flatbuffer(model: Source, samples: np.ndarray, source: str) -> bytes:
    """Full-integer TFLite (int8 weights per channel, int8 activations calibrated on ``samples``), float I/O."""
    return convert(model, "int8", Calibration(samples.astype(np.float32), source))
