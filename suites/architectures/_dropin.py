"""Drop-in layers evaluated across reference backbones (a private module: the registry skips it).

A normalization, an activation or a replacement for a conv or dense layer is not an architecture of
its own: EvoNorm's paper swaps its layers into several backbones and compares each with the original.
:class:`DropInArchitecture` does that for one method: it builds the backbone named by its
``backbone`` option (any registered architecture, with options in parentheses:
``evonorm:backbone=(mobilenetv2:alpha=0.5)``) and rebuilds it with :func:`effbench.graph.rewrite`,
where :meth:`DropInArchitecture.replace` decides each layer's replacement. The model then trains from
scratch with the task's recipe, as every architecture does, so nothing is carried over from the
backbone's untrained weights.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from effbench.graph import rewrite
from effbench.method import ArchitectureMethod, MethodRef
from effbench.registry import TaskSpec
from effbench.tf import keras, tf
from suites.architectures._layers import model_name

DEFAULT_BACKBONE = "resnet-cifar"
DEFAULT_DENSE_BACKBONE = "mlp"
LOGITS = "logits"  # the name every backbone gives its output layer (suites/architectures/_layers.py)
RECTIFIERS = {"relu", "relu6"}


def inbound_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers whose outputs ``layer`` reads in the backbone it belongs to (its first call)."""
    node = layer.inbound_nodes[0]
    inbound = node.inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def outbound_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers that read ``layer``'s output in the backbone it belongs to."""
    return [node.outbound_layer for node in layer.outbound_nodes]


def is_rectifier(layer: keras.layers.Layer) -> bool:
    """A ReLU / ReLU6, as a ``ReLU`` layer or an ``Activation``."""
    if isinstance(layer, keras.layers.ReLU):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.get_config()["activation"] in RECTIFIERS


def is_hidden_dense(layer: keras.layers.Layer) -> bool:
    """A plain ``Dense`` layer other than the backbone's logits."""
    return type(layer) is keras.layers.Dense and layer.name != LOGITS


def channel_groups(channels: int, groups: int) -> int:
    """The largest group count at most ``groups`` that divides ``channels`` (group norms' official rule)."""
    return next(count for count in range(min(groups, channels), 0, -1) if channels % count == 0)


def grouped(inputs: tf.Tensor, groups: int) -> tf.Tensor:
    """(batch, ..., C) -> (batch, ..., ``groups``, C / ``groups``), with static sizes but the batch's.

    Static sizes keep the flatbuffer free of SHAPE / BROADCAST_TO ops.
    """
    channels = inputs.shape[-1]
    return tf.reshape(inputs, [-1, *inputs.shape[1:-1], groups, channels // groups])


def group_axes(inputs: tf.Tensor) -> list[int]:
    """The axes of ``grouped(inputs, ...)`` that one group's statistics run over: positions and its channels."""
    return [*range(1, inputs.shape.rank - 1), inputs.shape.rank]


def _fresh_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Nothing: the rewritten model starts from its own initial weights, not the backbone's."""


class DropInArchitecture(ArchitectureMethod):
    """A backbone (option ``backbone``) with some of its layers replaced by :meth:`replace`."""

    default_options: ClassVar[dict[str, Any]] = {"backbone": DEFAULT_BACKBONE}

    @abc.abstractmethod
    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        """The layer to put in ``layer``'s place, named as it is, or None to keep it as it is.

        ``inbound_layers(layer)`` and ``outbound_layers(layer)`` give the layers it reads and the layers that read
        it, for rules that look at a pair (BN then ReLU).
        """

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        return self.rebuilt(self.backbone().build(input_shape, num_classes))

    def build_for(self, spec: TaskSpec) -> keras.Model:
        """The backbone's own model for ``spec`` (a segmentation head, an embedding), rebuilt."""
        return self.rebuilt(self.backbone().build_for(spec))

    def backbone(self) -> ArchitectureMethod:
        return MethodRef.parse(self.options["backbone"]).create()

    def rebuilt(self, backbone: keras.Model) -> keras.Model:
        model = rewrite(backbone, self.replace, transfer=_fresh_weights)
        return keras.Model(model.inputs, model.outputs, name=model_name(self.spec.slug, self.options))


class DenseDropIn(DropInArchitecture):
    """A replacement for each hidden ``Dense`` of a backbone (default ``mlp``); the logits layer stays."""

    default_options: ClassVar[dict[str, Any]] = {"backbone": DEFAULT_DENSE_BACKBONE}

    @abc.abstractmethod
    def dense_replacement(self, layer: keras.layers.Dense) -> keras.layers.Layer:
        """The layer to put in place of the hidden Dense ``layer`` (its activation included), named as it is."""

    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        return self.dense_replacement(layer) if is_hidden_dense(layer) else None
