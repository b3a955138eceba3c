"""Checks the specifications of several architectures share: a few training steps, TFLite conversion."""

from __future__ import annotations

import numpy as np

from effbench.tf import keras
from effbench.tflite import calibration, convert, litert_predict


def losses_over_steps(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int = 8) -> list[float]:
    """The training loss of each of ``steps`` Adam steps on one fixed batch (eagerly: tracing costs more)."""
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


def tflite_outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """``model``'s outputs for ``x`` from its float32 flatbuffer, converted as the edge track converts it.

    The converter's default op set is TFLite's builtins: a model that needed a TensorFlow (Flex) op or a custom
    op would fail to convert here.
    """
    flatbuffer = convert(model, "float32", calibration(model, None))
    return litert_predict(flatbuffer, x, 1)
