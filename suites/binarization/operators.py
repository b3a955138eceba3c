r"""BiBench's operator protocol in code: binarize a trained float backbone, layer for layer, and fine-tune it.

BiBench (Qin et al., "BiBench: Benchmarking and Analyzing Network Binarization", ICML 2023,
https://arxiv.org/abs/2301.11233) compares binarization *operators*: the function that maps a latent
float tensor to {-1, +1} in the forward pass, and the pseudo-gradient that trains through it. An operator
is scored on fixed backbones with each task's recipe: every convolution and fully connected layer of the
backbone becomes a binary layer, except the first one (it sees the raw input), the last one (the
classifier that produces the logits) and the 1x1 projections of residual shortcuts, which stay full
precision. A binary layer computes

.. math::  y = \operatorname{conv}\big(q_a(x),\; q_w(W)\big) + b

with :math:`q_a` the *input quantizer* and :math:`q_w` the *kernel quantizer* (for example the sign
:math:`q(v) = +1` for :math:`v \ge 0`, :math:`-1` otherwise). Both operands are then :math:`\pm 1`, so a
multiply-accumulate is an XNOR and a popcount: the complexity track counts such a layer at 1 bit for
weights and activations (1 BOP per MAC instead of 1024, 1/64 OP per MAC instead of 1).

**Initialisation: the trained FP32 twin.** BiBench starts every binarized CIFAR-10 network from the trained
float checkpoint of the same backbone (``init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/
res20_cifar10.pth')`` in ``configs/acc_cifar10/resnet20_*``) and trains it with its full schedule. Here
:meth:`OperatorMethod.requires` names the backbone's own training as the upstream of role ``trained``
(the FP32 twin's training: the runner trains it once per task, seed and budget, shared with the twin's
accuracy run), :meth:`OperatorMethod.run` binarizes that trained model (the weights carry over by layer
name, :func:`effbench.graph.transfer_weights`) and trains it with the task's fine-tune recipe
(:meth:`effbench.tasks.base.Task.finetune_recipe`, chosen by the config for any method with a ``trained``
upstream). The option ``init=scratch`` binarizes a freshly initialised backbone instead and trains it with
the task's recipe; it is not BiBench's protocol, so its runs are open (:mod:`suites.binarization.protocol`).

:func:`binarize` applies the protocol to a functional Keras model with the core's graph rewrite
(:func:`effbench.graph.rewrite`), which rebuilds the graph layer by layer from each layer's config; the
rule swaps layer classes and nothing else, so the copy has the same layer names and weight shapes, and it
starts from the float model's weights (a freshly built backbone gives an ordinary initialisation; a
trained one is fine-tuned). Rules, beyond the swap itself:

- ``Conv2D`` -> ``larq.layers.QuantConv2D``, ``DepthwiseConv2D`` -> ``QuantDepthwiseConv2D``, ``Dense`` ->
  ``QuantDense``. Any other layer with a kernel (``Conv2DTranspose``, ``SeparableConv2D``, a nested model,
  an already quantized larq layer) is an error naming it: leaving it float would overstate the savings.
- the first and the last conv / dense layer stay float, and so does every *shortcut projection*
  (:func:`shortcut_projection_names`): BiBench builds a ResNet's downsample branch (1x1 conv + BN) with
  ``downsample_conv_cfg=None``, a float ``nn.Conv2d`` (``bibench/models/backbones/resnet.py``, ``ResLayer``),
  and only the two 3x3 convs of each ``BasicBlock`` with the operator's ``conv_cfg``.
- ``padding="same"`` binary convolutions pad with +1 (``pad_values=1.0``): zero is not a binary value,
  and Larq Compute Engine's converted model reproduces the Keras model only with one-padding.
- every ReLU (a ``ReLU`` layer, ReLU6 included, ``Activation("relu")``, or a layer's ``activation="relu"``)
  becomes hard tanh, :math:`\operatorname{clip}(x, -1, 1)`, as in BiBench's binarized backbones
  (``first_act_cfg`` and ``act_cfg`` = ``dict(type='Hardtanh')``): the sign of a ReLU output is always +1,
  so a binary layer after a ReLU would see a constant input.
- latent kernels are clipped to :math:`[-1, 1]` after every update (larq's ``weight_clip``, the
  constraint of Courbariaux et al.'s BinaryNet, https://arxiv.org/abs/1602.02830): the straight-through
  estimator's gradient is zero beyond :math:`\pm 1`, so an unclipped weight that drifts there never
  comes back. An operator may choose another constraint (:meth:`OperatorMethod.kernel_constraint`).

:class:`OperatorMethod` is the base of every operator method (kind ``operator``): a subclass names its
quantizers; ``run`` binarizes the task's default backbone (or the ``backbone`` option), trained, and
fine-tunes it, advancing the schedules of :mod:`effbench.schedule` every epoch; its FP32 twin is that backbone, so the
accuracy track reports ``top1_relative`` = top-1 / the float backbone's top-1 (BiBench's relative
accuracy). What the closed division fixes (the ``backbone`` option beyond the protocol's backbones,
``init``, ReActNet's ``rprelu``; kinds other than ``operator``), how the twin is chosen and the suite's
summary columns are declared, without TensorFlow, in :mod:`suites.binarization.protocol`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.graph import RELU_NAMES, is_relu_layer, rewrite
from effbench.method import ArchitectureMethod, Artifact, Method, MethodRef
from effbench.registry import TaskSpec
from effbench.schedule import EpochSchedule
from effbench.training import TrainContext, fit

# A larq quantizer: a registered name ("ste_sign"), a quantizer object, or a function of a tensor.
Quantizer = str | keras.layers.Layer | Callable[[tf.Tensor], tf.Tensor]
# Builds a binary layer from its larq class and the config binarize filled in.
BinaryLayerFactory = Callable[[type, dict[str, Any]], keras.layers.Layer]
# A replacement for a non-binarized layer of the float model, or None to apply binarize's rules.
LayerReplacement = Callable[[keras.layers.Layer], "keras.layers.Layer | None"]

HARD_TANH = "hard_tanh"  # larq.activations.hard_tanh, registered with Keras when larq is imported
# The upstream role of a method that starts from trained weights (the config then picks the fine-tune recipe),
# and the values of the operators' ``init`` option: start from it, or from a fresh initialisation.
TRAINED = "trained"
SCRATCH = "scratch"
INITS = (TRAINED, SCRATCH)

# Float layer class -> (larq class, its kernel-quantizer argument, its kernel-constraint argument).
LARQ_COUNTERPARTS: dict[type, tuple[type, str, str]] = {
    keras.layers.Conv2D: (larq.layers.QuantConv2D, "kernel_quantizer", "kernel_constraint"),
    keras.layers.DepthwiseConv2D: (larq.layers.QuantDepthwiseConv2D, "depthwise_quantizer", "depthwise_constraint"),
    keras.layers.Dense: (larq.layers.QuantDense, "kernel_quantizer", "kernel_constraint"),
}


def larq_layer(larq_class: type, config: dict[str, Any]) -> keras.layers.Layer:
    """The default binary layer: the larq counterpart itself."""
    return larq_class(**config)


def binarize(
    model: keras.Model,
    input_quantizer: Quantizer,
    kernel_quantizer: Quantizer,
    kernel_constraint: str | None = "weight_clip",
    binary_layer: BinaryLayerFactory = larq_layer,
    replace_layer: LayerReplacement | None = None,
) -> keras.Model:
    """A copy of the functional ``model`` with every conv / dense layer but the first and last binarized.

    See the module docstring for the rules. ``binary_layer`` builds each binary layer from its larq class
    and config (a method returns a subclass with, say, a learned output scale); ``replace_layer`` may
    return a replacement for any other layer (a method's binary attention, RPReLU), or ``None`` to keep
    the rules. Weights are carried over by name; a replacement's extra weights keep their initial values.
    Raises ``ValueError`` for layers the protocol cannot binarize, and for models in which nothing would be
    binarized (fewer than three conv / dense layers, shortcut projections aside).
    """
    binary = set(binarized_layer_names(model))

    def rule(layer: keras.layers.Layer) -> keras.layers.Layer:
        replacement = replace_layer(layer) if replace_layer and layer.name not in binary else None
        if replacement is not None:
            return replacement
        if is_relu_layer(layer):
            return keras.layers.Activation(HARD_TANH, name=layer.name)
        config = layer.get_config()
        if config.get("activation") in RELU_NAMES:
            config["activation"] = HARD_TANH
        if layer.name not in binary:
            return type(layer).from_config(config)
        larq_class, quantizer_argument, constraint_argument = LARQ_COUNTERPARTS[type(layer)]
        config.update({
            "input_quantizer": _own_copy(input_quantizer),
            quantizer_argument: _own_copy(kernel_quantizer),
            constraint_argument: kernel_constraint,
        })  # fmt: skip
        if config.get("padding") == "same":
            config["pad_values"] = 1.0
        return binary_layer(larq_class, config)

    return rewrite(model, rule)


def binarized_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers :func:`binarize` makes binary: every conv / dense but the first, the last and the
    shortcut projections (:func:`shortcut_projection_names`).

    "First" and "last" follow ``model.layers``, which a functional model lists from its inputs to its
    outputs, so the last is the classifier.
    """
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError("binarize needs a functional Keras model (keras.Model(inputs, outputs))")
    for layer in model.layers:
        _check_supported(layer)
    linear = [layer.name for layer in model.layers if type(layer) in LARQ_COUNTERPARTS]
    shortcuts = shortcut_projection_names(model)
    inner = [name for name in linear[1:-1] if name not in shortcuts]
    if not inner:
        kept = f" and {len(shortcuts)} shortcut projection(s)" if shortcuts else ""
        raise ValueError(
            f"model '{model.name}' has {len(linear)} conv/dense layer(s); the first and the last{kept} stay "
            "float, so nothing would be binarized"
        )
    return inner


def shortcut_projection_names(model: keras.Model) -> set[str]:
    """Names of the conv / dense layers that project a residual shortcut: these stay float.

    A shortcut projection is found from the graph, not from layer names (so a model saved before, or
    built elsewhere, is read the same way): a merge ``Add`` whose input is a conv / dense layer ``P``,
    possibly followed by batch norms, where ``P``'s own input also feeds another input of the same
    ``Add`` (the residual branch) by a path that does not pass through ``P``. That is BiBench's
    ``downsample`` (``ResLayer``: a 1x1 conv + BN on the block input, added to the block's output). A layer
    that ends a residual branch (the second 3x3 conv of a basic block, MobileNetV2's linear bottleneck
    projection) is not one: its input does not reach the other side of the ``Add``; nor is the conv that
    produced an identity shortcut's tensor further up: the other side passes through it.
    """
    in_graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    names = set()
    for layer in model.layers:
        if type(layer) is not keras.layers.Add:
            continue
        for node in (node for node in layer.inbound_nodes if id(node) in in_graph):
            branches = node.parent_nodes
            for index, branch in enumerate(branches):
                projection = _linear_under_batch_norms(branch)
                if projection is None or not projection.parent_nodes:
                    continue
                source = projection.parent_nodes[0]
                others = [_ancestors(other) for other in branches[:index] + branches[index + 1 :]]
                if any(id(source) in nodes and id(projection) not in nodes for nodes in others):
                    names.add(projection.layer.name)
    return names


def _linear_under_batch_norms(node):
    """The conv / dense node that produces ``node``'s output through batch norms only, or None."""
    while type(node.layer) is keras.layers.BatchNormalization:
        node = node.parent_nodes[0]
    return node if type(node.layer) in LARQ_COUNTERPARTS else None


def _ancestors(node) -> set[int]:
    """Ids of ``node`` and every node it depends on."""
    seen, stack = set(), [node]
    while stack:
        current = stack.pop()
        if id(current) not in seen:
            seen.add(id(current))
            stack.extend(current.parent_nodes)
    return seen


def _check_supported(layer: keras.layers.Layer) -> None:
    if isinstance(layer, keras.Model):
        raise ValueError(f"layer '{layer.name}' is a nested model; binarize the model it is built from instead")
    has_kernel = any(hasattr(layer, name) for name in ("kernel", "depthwise_kernel", "pointwise_kernel"))
    if has_kernel and type(layer) not in LARQ_COUNTERPARTS:
        known = ", ".join(cls.__name__ for cls in LARQ_COUNTERPARTS)
        raise ValueError(
            f"layer '{layer.name}' ({type(layer).__name__}) holds a kernel but is not one of {known}; "
            "the operator protocol has no binary counterpart for it"
        )


def _own_copy(quantizer: Quantizer) -> Quantizer:
    """A quantizer object of its own for each layer.

    larq quantizers are Keras layers: one object shared by several layers would be tracked and saved
    as one. Names and functions are stateless and are passed as they are.
    """
    if isinstance(quantizer, keras.layers.Layer):
        return type(quantizer).from_config(quantizer.get_config())
    return quantizer


class OperatorMethod(Method):
    """A binarization operator applied to a trained backbone and fine-tuned (kind ``operator``).

    Subclasses implement :meth:`input_quantizer` and :meth:`kernel_quantizer`. Options:

    - ``backbone``: a method reference (``resnet-cifar:depth=8``) of an architecture to binarize instead
      of the task's default backbone; the FP32 twin is that backbone (the protocol's default
      ``fp32_twin``). The closed division takes the default and the protocol's backbones only
      (:mod:`suites.binarization.protocol`).
    - ``init``: ``trained`` (default, BiBench's protocol) starts from the backbone's trained weights, the
      upstream of role ``trained`` (:meth:`requires`), and trains with the task's fine-tune recipe;
      ``scratch`` starts from a freshly initialised backbone with the task's recipe (open division).

    Subclasses with options of their own extend ``default_options``
    (``{**OperatorMethod.default_options, "beta": 1.0}``). A subclass that transforms the binarized
    model further (rewires its attention, initialises a quantizer from the kernels) overrides
    :meth:`binarize_backbone`, which both starts share; one that initialises from data (a quantizer's step
    from the first training batch) overrides :meth:`initial_model`.
    """

    default_options: ClassVar[dict[str, Any]] = {"backbone": None, "init": TRAINED}
    # Operators are judged by the binarization protocol in whatever suite they register (a submission's).
    protocol: ClassVar[str] = "binarization"
    # A binarized network deploys as a Larq Compute Engine flatbuffer: the edge track repeats that variant as
    # ``deployed``, so the suite's deployment sits in the same scope as a quantizer's int8 file.
    deployment: ClassVar[str | None] = "lce"

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["init"] not in INITS:
            raise ValueError(
                f"option init of '{self.spec.slug}' is '{self.options['init']}'; expected one of {', '.join(INITS)}"
            )

    @abc.abstractmethod
    def input_quantizer(self) -> Quantizer:
        """Quantizer of each binary layer's input activations."""

    @abc.abstractmethod
    def kernel_quantizer(self) -> Quantizer:
        """Quantizer of each binary layer's kernel."""

    def kernel_constraint(self) -> str | None:
        """Constraint on the latent kernels (see the module docstring); ``None`` for none."""
        return "weight_clip"

    def binary_layer(self, larq_class: type, config: dict[str, Any]) -> keras.layers.Layer:
        """Each binary layer, from its larq class and config; override to add, say, a learned scale."""
        return larq_layer(larq_class, config)

    def replace_layer(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        """A replacement for a non-binarized layer of the backbone, or ``None`` (binarize's rules)."""
        return None

    def callbacks(self, model: keras.Model, context: TrainContext) -> list[keras.callbacks.Callback]:
        """Extra training callbacks (logging a method's indicators as curves); the schedule is added anyway."""
        return []

    def backbone(self, task_default_backbone: str) -> str:
        return self.options["backbone"] or task_default_backbone

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        """The backbone's own training (the FP32 twin's, trained once), unless ``init=scratch``."""
        if self.options["init"] == SCRATCH:
            return {}
        return {TRAINED: MethodRef.parse(self.backbone(task.default_backbone))}

    def float_backbone(self, task: TaskSpec) -> keras.Model:
        """The backbone, freshly built for the task (untrained)."""
        backbone = MethodRef.parse(self.backbone(task.default_backbone)).create()
        if not isinstance(backbone, ArchitectureMethod):
            raise ValueError(f"backbone '{backbone.spec.slug}' is a {backbone.spec.kind}, not an architecture")
        return backbone.build(task.input_shape, task.num_classes)

    def binarize_backbone(self, float_model: keras.Model) -> keras.Model:
        """``float_model`` binarized by this operator (its weights carried over)."""
        return binarize(
            float_model, self.input_quantizer(), self.kernel_quantizer(), self.kernel_constraint(),
            binary_layer=self.binary_layer, replace_layer=self.replace_layer,
        )  # fmt: skip

    def build(self, task: TaskSpec) -> keras.Model:
        """The task's backbone, freshly built and binarized by this operator (what ``init=scratch`` trains)."""
        return self.binarize_backbone(self.float_backbone(task))

    def initial_model(self, context: TrainContext) -> keras.Model:
        """The binarized model training starts from: the trained backbone's, or a fresh one (``init=scratch``)."""
        if self.options["init"] == SCRATCH:
            return self.build(context.task.spec)
        return self.binarize_backbone(context.upstream[TRAINED].model)

    def run(self, context: TrainContext) -> Artifact:
        model = self.initial_model(context)
        callbacks = [EpochSchedule(context.recipe.epochs), *self.callbacks(model, context)]
        history, seconds = fit(model, context, callbacks=callbacks)
        return Artifact(model=model, history=history, train_seconds=seconds)
