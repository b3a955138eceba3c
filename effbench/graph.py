"""Graph rewrites of Keras models: copy a model with some of its layers swapped, and carry its weights over.

Binarization (a conv becomes a binary conv), MST-compression (a binary layer becomes one that counts its
cost along a tree), quantization-aware training (a layer becomes its fake-quantized twin), low-rank
factorisation and channel pruning all transform a model the same way: rebuild its graph layer by layer,
replacing the layers a rule picks, and start the copy from the original's weights. :func:`rewrite` is that
step, for functional (and ``Sequential``) tf_keras models; the rule is the only thing a method writes.

Weights are matched by *layer name* (:func:`transfer_weights`), so a replacement keeps the name of the
layer it replaces. A replacement may hold more weights than the original (a learned scale), which keep
their initial values; one whose weights change shape (a pruned conv) passes its own ``transfer``.
"""

from __future__ import annotations

from collections.abc import Callable

from effbench.tf import keras, tf

# A replacement for a layer, or None to keep a fresh copy of it (built from its config).
Rule = Callable[[keras.layers.Layer], "keras.layers.Layer | None"]
# Fills the copy's layer from the original's (same name), once the copy is built.
WeightTransfer = Callable[[keras.layers.Layer, keras.layers.Layer], None]

# Activation names that are a ReLU: what `is_relu_layer` and a layer's `activation` argument are tested for.
RELU_NAMES = ("relu", "relu6")


def rewrite(model: keras.Model, rule: Rule, transfer: WeightTransfer | None = None) -> keras.Model:
    """A copy of ``model`` in which every layer is ``rule(layer)``, or a fresh copy where that is None.

    ``keras.models.clone_model`` rebuilds the graph with each replacement in its layer's place (input
    layers are rebuilt as they are; the rule never sees them). A rule may return a layer of another class,
    or of the same class from a changed config (``type(layer).from_config({...})``), but it keeps the
    layer's name. Then ``transfer`` (:func:`transfer_weights` by default) fills each layer of the copy from
    the layer of the same name in ``model``.
    """
    transfer = transfer or transfer_weights

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        replacement = rule(layer)
        if replacement is None:
            return type(layer).from_config(layer.get_config())
        if replacement.name != layer.name:
            raise ValueError(
                f"the rewrite rule replaced layer '{layer.name}' by a layer named '{replacement.name}'; "
                "a replacement keeps the name of the layer it replaces (weights are carried over by name)"
            )
        return replacement

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        transfer(layer, copy.get_layer(layer.name))
    return copy


def transfer_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Copy each of ``source``'s weights into ``target``'s weight of the same name.

    ``target`` may hold more weights than ``source`` (a learned scale, a quantizer's shift), which keep
    their initial values; a ``source`` weight with no same-named, same-shaped counterpart is an error:
    dropping it silently would start the copy from weights nobody chose.
    """
    targets = {local_name(weight, target): weight for weight in target.weights}
    for weight in source.weights:
        counterpart = targets.get(local_name(weight, source))
        if counterpart is None or counterpart.shape != weight.shape:
            raise ValueError(
                f"weight '{weight.name}' of shape {tuple(weight.shape)} of layer '{source.name}' has no "
                f"counterpart in the rewritten layer '{target.name}', whose weights are "
                f"{[f'{w.name} {tuple(w.shape)}' for w in target.weights]}"
            )
        counterpart.assign(weight)


def local_name(weight: tf.Variable, layer: keras.layers.Layer) -> str:
    """A weight's name within its layer: ``kernel:0`` for ``conv2d_1/kernel:0``.

    A model loaded from a ``.keras`` file names some layers' weights without their layer's prefix, a freshly
    built one with it: names are compared without it.
    """
    prefix = f"{layer.name}/"
    return weight.name[len(prefix):] if weight.name.startswith(prefix) else weight.name


def is_relu_layer(layer: keras.layers.Layer) -> bool:
    """A ``ReLU`` layer (ReLU6 and any other config included) or an ``Activation("relu" / "relu6")``.

    Exact classes, not subclasses: a subclass of ``ReLU`` (ReActNet's RPReLU is not one, but a learned
    variant could be) computes something else. A ReLU passed as a layer's ``activation`` argument is not
    a layer; test ``layer.get_config().get("activation") in RELU_NAMES`` for it.
    """
    if type(layer) is keras.layers.ReLU:
        return True
    return type(layer) is keras.layers.Activation and layer.get_config()["activation"] in RELU_NAMES
