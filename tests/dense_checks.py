"""What the tests of the dense-prediction architectures share: tiny task specs and data, a short training run
through the method's own ``run``, and the operators of a converted flatbuffer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from effbench.method import Artifact, Method
from effbench.recipe import Recipe
from effbench.registry import TaskSpec
from effbench.tasks.base import Splits
from effbench.tf import keras
from effbench.tflite import Calibration, convert
from effbench.training import TrainContext


def segmentation_spec(side: int, classes: int) -> TaskSpec:
    return TaskSpec(f"toy-seg{side}", "toy", (side, side, 3), classes, "fcn-small", "image", True, 0.5,
                    kind="segmentation", output_shape=(side, side))  # fmt: skip


def super_resolution_spec(side: int, scale: int) -> TaskSpec:
    return TaskSpec(f"toy-sr{side}x{scale}", "toy", (side, side, 3), 0, "fcn-small", "image", True, 0.0,
                    kind="super-resolution", output_shape=(side * scale, side * scale, 3))  # fmt: skip


def segmentation_data(count: int, side: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scenes of 4x4-pixel tiles, each of a random class painted in that class's colour, plus noise."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, classes, (count, side // 4, side // 4))
    labels = np.repeat(np.repeat(tiles, 4, axis=1), 4, axis=2).astype(np.int32)
    colours = rng.random((classes, 3))
    images = colours[labels] + rng.normal(0.0, 0.05, (*labels.shape, 3))
    return images.astype(np.float32), labels


def super_resolution_data(count: int, side: int, scale: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): smooth random images and their box-filter reductions by ``scale``."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, side // 2 + 1, side // 2 + 1, 3))
    high = keras.layers.Resizing(side * scale, side * scale)(coarse).numpy().astype(np.float32)
    low = high.reshape(count, side, scale, side, scale, 3).mean(axis=(2, 4))
    return low.astype(np.float32), high


def train(method: Method, spec: TaskSpec, x: np.ndarray, y: np.ndarray, epochs: int = 4) -> Artifact:
    """``method.run`` on (x, y) for ``epochs`` epochs of batches of 8 (validated on the same data)."""
    recipe = Recipe(epochs=epochs, batch_size=8, schedule="constant")
    context = TrainContext(SimpleNamespace(spec=spec), Splits(x, y, x, y, x, y), recipe, 0, "smoke")
    return method.run(context)


def converted_ops(model: keras.Model, variant: str = "float32") -> tuple[bytes, list[str]]:
    """The flatbuffer of ``model`` converted as the edge track does, and its operators in graph order."""
    from ai_edge_litert.interpreter import Interpreter

    samples = np.random.default_rng(0).random((8, *model.input_shape[1:])).astype(np.float32)
    content = convert(model, variant, Calibration(samples, "uniform noise"))
    return content, [op["op_name"] for op in Interpreter(model_content=content)._get_ops_details()]
