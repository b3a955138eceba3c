"""What the tests of the dense-prediction architectures share: tiny task specs and data, a short training run
through the method's own ``run``, and the operators of a converted flatbuffer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from effbench.method import Artifact, Method
from effbench.recipe import Recipe
from effbench.registry import TaskSpec
from effbench.tasks.base import Splits
from effbench.tf import keras, tf
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
    """``method.run`` on (x, y) for ``epochs`` epochs of batches of 8 at learning rate 0.01 (validated on the same
    data), from weights drawn with seed 0."""
    keras.utils.set_random_seed(0)
    recipe = Recipe(learning_rate=0.01, epochs=epochs, batch_size=8, schedule="constant")
    context = TrainContext(SimpleNamespace(spec=spec), Splits(x, y, x, y, x, y), recipe, 0, "smoke")
    return method.run(context)


def eager_training_losses(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int) -> list[float]:
    """The per-pixel cross-entropy of each of ``steps`` Adam steps (learning rate 0.01) on the batch (x, y),
    run eagerly: for a deep model, tracing a training function costs more than a few steps."""
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss, run_eagerly=True)
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


def float_ops(content: bytes) -> list[str]:
    """The operators of a flatbuffer that read or write a float32 tensor, except the quantization of the model's
    input and the dequantization of its output: for a full-int8 model, the float fallbacks."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    dtypes = {tensor["index"]: tensor["dtype"] for tensor in interpreter.get_tensor_details()}
    model_input = interpreter.get_input_details()[0]["index"]
    model_output = interpreter.get_output_details()[0]["index"]
    fallbacks = []
    for op in interpreter._get_ops_details():
        inputs, outputs = [i for i in op["inputs"] if i >= 0], list(op["outputs"])
        if op["op_name"] == "QUANTIZE" and inputs == [model_input]:
            continue
        if op["op_name"] == "DEQUANTIZE" and outputs == [model_output]:
            continue
        if any(dtypes[index] == np.float32 for index in (*inputs, *outputs)):
            fallbacks.append(op["op_name"])
    return fallbacks


def converted_ops(model: keras.Model, variant: str = "float32") -> tuple[bytes, list[str]]:
    """``model`` converted to a float32 or full-int8 flatbuffer with the edge track's settings, and its operators.

    Converted from the model's inference function (batch axis free, as in the track's export): the track
    exports a SavedModel first, which traces every layer's own functions and takes seconds per dozen
    layers, and lowers to the same operators.
    """
    from ai_edge_litert.interpreter import Interpreter

    signature = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    if variant == "int8":
        samples = np.random.default_rng(0).random((8, 1, *model.input_shape[1:])).astype(np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.float32
    elif variant != "float32":
        raise ValueError(f"variant {variant!r}: float32 or int8")
    content = converter.convert()
    return content, [op["op_name"] for op in Interpreter(model_content=content)._get_ops_details()]
