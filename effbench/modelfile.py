"""Loading saved Keras models: those EffBench did not train (``effbench measure``) and its own cached ones.

TFMOT's wrapped models (quantization-aware, pruned, clustered) load only inside TFMOT's scopes, which
register its wrappers, quantizers and configs: :func:`loading_scope` opens all three, and every load of a
model file goes through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from effbench.tf import keras

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq  # noqa: F401  (registers larq's layers and quantizers so their models load)


@contextlib.contextmanager
def loading_scope() -> Iterator[None]:
    """TFMOT's quantize, prune and cluster scopes together: inside it, TFMOT's saved models load."""
    import tensorflow_model_optimization as tfmot

    with (
        tfmot.quantization.keras.quantize_scope(),
        tfmot.sparsity.keras.prune_scope(),
        tfmot.clustering.keras.cluster_scope(),
    ):
        yield


def load_keras_model(path: Path) -> keras.Model:
    """``keras.models.load_model(path, compile=False)`` inside :func:`loading_scope`."""
    with loading_scope():
        return keras.models.load_model(path, compile=False)


class ModelFileError(ValueError):
    """A model file that cannot be loaded or measured; the message names the file."""


def load_model_file(path: Path, input_shape: tuple[int, ...] | None = None) -> keras.Model:
    """Load ``path`` (``.keras``, ``.h5`` or a SavedModel folder) without compiling it.

    With ``input_shape`` the model is rebuilt on a fixed input of that shape (batch excluded) and
    given the same weights, so models saved with free spatial dimensions can be counted.
    """
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    try:
        model = load_keras_model(path)
    except Exception as error:  # noqa: BLE001 - loaders raise many types; the user needs the text
        raise ModelFileError(f"{path}: Keras could not load it: {error}") from error
    if input_shape is not None:
        return with_input_shape(model, input_shape, path)
    if not _has_fixed_input(model):
        raise ModelFileError(f"{path}: the model's input shape {_shape_text(model)} is not fixed; pass --input-shape")
    return model


def with_input_shape(model: keras.Model, input_shape: tuple[int, ...], path: Path) -> keras.Model:
    try:
        rebuilt = keras.models.clone_model(model, input_tensors=keras.Input(shape=input_shape))
    except Exception as error:  # noqa: BLE001
        raise ModelFileError(f"{path}: cannot rebuild the model on input shape {input_shape}: {error}") from error
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _has_fixed_input(model: keras.Model) -> bool:
    try:
        shapes = model.inputs and [tuple(t.shape[1:]) for t in model.inputs]
    except AttributeError:
        return False
    return bool(shapes) and all(d is not None for shape in shapes for d in shape)


def _shape_text(model: keras.Model) -> str:
    try:
        return ", ".join(str(tuple(t.shape)) for t in model.inputs)
    except (AttributeError, TypeError):
        return "(unknown)"
