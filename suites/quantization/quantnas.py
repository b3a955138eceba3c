r"""QuantNAS: a differentiable search over per-layer bit widths (and skipping residual blocks) against noise.

Small-faithful: the paper searches super-resolution networks; here the same search runs on the trained
classification backbone (upstream ``trained``). The super-network (the ``noise`` mode of
:mod:`suites.quantization._bit_choice`) gives every conv / depthwise / dense layer :math:`l` architecture
logits :math:`\alpha_l` over :math:`b \in \{2, 4, 8\}` (``BITS``, weights and input at the same width) and
computes with

.. math::

    \tilde W_l = \sum_b p_{l,b}\,\big(W_l + \operatorname{sg}(s_b(W_l)\,(u - \tfrac12))\big),\quad
    \tilde x_l = \sum_b p_{l,b}\,\big(x_l + \operatorname{sg}(s_b(x_l)\,(u - \tfrac12))\big),\quad
    p_l = \operatorname{softmax}(\alpha_l)

*quantization noise* in place of rounding: uniform noise one step :math:`s_b` wide (variance
:math:`s_b^2/12`, the error rounding makes), differentiable in :math:`W`, :math:`x` (identity) and
:math:`\alpha` (through :math:`p`). Each residual block whose shortcut is the identity also chooses
between the trained block and *skip* (``skip_blocks``): :math:`y = x + q_l\, F(x)`, :math:`q =
\operatorname{softmax}(\beta)_{\text{block}}` (:class:`ChoiceAdd`).

The search alternates, per batch (first-order DARTS, as the released code): an architecture step on a
validation batch,

.. math::

    \min_{\alpha, \beta}\ \mathcal{L}_{CE} + \lambda_H(t) \sum_{\text{choices}} H(p)
    + \lambda_{B}\, \frac{\operatorname{E}[\text{BitOps}]}{\operatorname{E}[\text{BitOps}]_{t=0}},\qquad
    \operatorname{E}[\text{BitOps}] = \sum_l q_{\text{block}(l)}\, \text{MACs}_l \sum_b p_{l,b}\, b^2

with the entropy :math:`H(p) = -\sum p \log p` (its weight ramps linearly from 0 to ``entropy_weight``
over the search, so each choice ends one-hot) and the BitOps penalty of weight ``bitops_weight``
normalised by its value at the start (as the code's ``FlopsLoss``); then a weight step on a training batch
(:math:`\mathcal{L}_{CE}` only). Architecture logits start at :math:`\mathcal{N}(0, 10^{-6})` and take Adam
(``alpha_lr``, :math:`\beta_1 = 0.5` as the code); the weights the recipe's optimizer; the search lasts the
fine-tune recipe's epochs.

Then the argmax configuration is made real (:func:`bypass` removes the skipped blocks; every other layer is
fake-quantized at its bits with *rounding*, ranges calibrated) and fine-tuned with the fine-tune recipe
(:func:`effbench.training.fit`). Several values of the penalty give the Pareto set: ``points`` searches,
penalties :math:`0` and ``bitops_weight`` :math:`\cdot 10^{i - (\text{points} - 1)}`, :math:`i = 1 \dots`
``points`` - 1 (0, 0.1, 1 by default): the main deployable is the unpenalised one, the others are named
``bitops-weight=<value>``. Facts per deployable: ``bit_widths``, ``blocks`` (kept or skipped, per residual
block), ``simulated`` (true where a layer is below 8 bits; at 8 bits everywhere it also deploys as an int8
flatbuffer), ``calibration``, and ``search``: the penalty, the exact BitOps of the choice, the expected
BitOps at the end of the search, the noisy super-network's validation top-1 (the search's own estimate)
and the least confident choice's probability.

Deviations: classification instead of super-resolution, on the protocol backbone (the paper's search
spaces of SR operations, repeated cells and its HWGQ activation quantizer are not ported: the operations
are the trained layers and the skip, quantizers those of :mod:`suites.quantization._uniform`). The noise
takes the deployed quantizer's step (per-channel max-abs for weights, the batch's min/max range for
inputs) where the code scales per tensor by max - min, and it keeps the gradient to the weights (the
code detaches the noisy copy). Bit widths and operations have separate softmaxes (the code has one over
op x bits per block). The entropy weight ramps linearly (the code's ramp has a logarithmic factor); no
warm-up epochs (the weights start trained); ``alpha_lr`` is 1e-2 rather than the code's 3e-4, for
searches of a few hundred steps. The ADQ module (Adaptive Deviation for Quantization: the body of an SR
residual block normalised by batch norm, its output rescaled by a learned affine map of the skip input's
per-example standard deviation, :math:`y = x + \phi(\sigma(x))\, F(\operatorname{BN}(x))`, for SR models
trained without batch norm) is left out: the protocol backbones have batch norm in every block and were
trained with it, so there is nothing for it to replace, and inserting it would change the trained function.

Paper: Shvetsov, Osin, Zaytsev et al., "QuantNAS for super resolution: searching for efficient
quantization-friendly architectures against quantization noise", 2022 (https://arxiv.org/abs/2208.14839;
IEEE Access 2024; code: https://github.com/On-Point-RND/QuantNAS).

Options: ``backbone``; ``points`` (3); ``bitops_weight`` (the largest penalty, 1.0); ``entropy_weight``
(0.01); ``alpha_lr`` (0.01); ``skip_blocks`` (true).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from effbench.graph import rewrite
from effbench.method import MAIN, Artifact, Deployable
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.quantization._bit_choice import (
    ALPHA_INIT_STDDEV,
    NOISE,
    bit_choice_layers,
    bit_choice_model,
    copy_weights,
    deployable,
    layer_macs,
    quantized_copy,
    training_batches,
)
from suites.quantization.base import QuantizationMethod, calibration_samples

BITS = (2, 4, 8)
BLOCK, SKIP = "block", "skip"
# Adam's first-moment decay for the architecture logits, as the released code.
ALPHA_BETA_1 = 0.5


# ---------------------------------------------------------------- residual blocks and their skip


@dataclass(frozen=True)
class ResidualBlock:
    """An ``Add`` of an identity shortcut and a residual branch, and the layers only that branch uses."""

    add: str
    shortcut: int  # index of the shortcut among the Add's inputs
    branch: tuple[str, ...]


def _producer(tensor: Any) -> keras.layers.Layer:
    return tensor._keras_history.layer


def residual_blocks(model: keras.Model) -> list[ResidualBlock]:
    """The model's skippable residual blocks: ``Add(x, F(x))`` where ``F``'s layers feed nothing else."""
    memo: dict[str, frozenset[str]] = {}

    def ancestors(layer: keras.layers.Layer) -> frozenset[str]:
        if layer.name not in memo:
            names = {layer.name}
            if not isinstance(layer, keras.layers.InputLayer):
                for tensor in tf.nest.flatten(layer.input):
                    names |= ancestors(_producer(tensor))
            memo[layer.name] = frozenset(names)
        return memo[layer.name]

    blocks = []
    for layer in model.layers:
        if type(layer) is not keras.layers.Add or len(layer.input) != 2:
            continue
        for shortcut, (short, long) in enumerate([layer.input, layer.input[::-1]]):
            source = _producer(short)
            branch = ancestors(_producer(long)) - ancestors(source)
            inside = branch | {layer.name}
            closed = all(node.layer.name in inside for name in branch for node in model.get_layer(name).outbound_nodes)
            if source.name in ancestors(_producer(long)) and branch and closed and short.shape == layer.output.shape:
                order = [other.name for other in model.layers if other.name in branch]
                blocks.append(ResidualBlock(layer.name, shortcut, tuple(order)))
                break
    return blocks


class ChoiceAdd(keras.layers.Layer):
    """``shortcut + q * residual``, ``q = softmax(beta)[0]``: the relaxed choice of a block or its skip."""

    def __init__(self, shortcut: int, choice_seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.shortcut, self.choice_seed = int(shortcut), choice_seed

    def build(self, input_shape: Any) -> None:
        initializer = keras.initializers.RandomNormal(stddev=ALPHA_INIT_STDDEV, seed=self.choice_seed)
        self.choice = self.add_weight("choice", shape=(2,), initializer=initializer, trainable=True)
        super().build(input_shape)

    def probabilities(self) -> tf.Tensor:
        """(keep the block, skip it)."""
        return tf.nn.softmax(self.choice)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        return inputs[self.shortcut] + self.probabilities()[0] * inputs[1 - self.shortcut]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shortcut": self.shortcut, "choice_seed": self.choice_seed}


def bypass(model: keras.Model, skipped: Mapping[str, int]) -> keras.Model:
    """A copy of ``model`` in which each ``Add`` named in ``skipped`` passes on its input ``skipped[name]``.

    The graph is rebuilt from the outputs back, so the layers only a skipped branch used are gone (their
    parameters and MACs with them); every other layer is a fresh copy with the same name and weights.
    """
    inputs = [keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype) for tensor in model.inputs]
    built = {id(old): new for old, new in zip(model.inputs, inputs, strict=True)}
    copies: dict[str, keras.layers.Layer] = {}

    def rebuilt(tensor: Any) -> Any:
        if not hasattr(tensor, "_keras_history"):
            return tensor
        if id(tensor) not in built:
            layer, node_index, tensor_index = tensor._keras_history
            node = layer.inbound_nodes[node_index]
            if layer.name in skipped:
                built[id(tensor)] = rebuilt(node.call_args[0][skipped[layer.name]])
            else:
                args = tf.nest.map_structure(rebuilt, node.call_args)
                copy = copies.setdefault(layer.name, type(layer).from_config(layer.get_config()))
                built[id(tensor)] = tf.nest.flatten(copy(*args, **node.call_kwargs))[tensor_index]
        return built[id(tensor)]

    copy = keras.Model(inputs, [rebuilt(tensor) for tensor in model.outputs], name=model.name)
    for name, layer in copies.items():
        layer.set_weights(model.get_layer(name).get_weights())
    return copy


# ---------------------------------------------------------------- the super-network and its search


class NoiseSupernet:
    """The trained backbone with relaxed bit-width (and block) choices under quantization noise."""

    def __init__(self, float_model: keras.Model, skip_blocks: bool = True, seed: int = 0):
        self.blocks = residual_blocks(float_model) if skip_blocks else []
        adds = {block.add: (index, block) for index, block in enumerate(self.blocks)}

        def choice_add(layer: keras.layers.Layer) -> keras.layers.Layer | None:
            if layer.name not in adds:
                return None
            index, block = adds[layer.name]
            return ChoiceAdd(block.shortcut, choice_seed=seed + 10_000 + index, name=layer.name)

        self.model = bit_choice_model(float_model, BITS, NOISE, replace=choice_add, seed=seed)
        self.layers = bit_choice_layers(self.model)
        self.adds = [self.model.get_layer(block.add) for block in self.blocks]
        self.macs = [float(layer_macs(layer)) for layer in self.layers]
        gate = {name: index for index, block in enumerate(self.blocks) for name in block.branch}
        self.gates = [gate.get(layer.name) for layer in self.layers]
        self.squares = tf.constant([float(bits * bits) for bits in BITS])

    def alphas(self) -> list[tf.Variable]:
        """The architecture logits: one vector per layer, then one per residual block."""
        return [layer.choice for layer in self.layers] + [add.choice for add in self.adds]

    def expected_bitops(self) -> tf.Tensor:
        """:math:`\\sum_l q_{block(l)} \\text{MACs}_l \\sum_b p_{l,b} b^2` at the current logits."""
        keep = [add.probabilities()[0] for add in self.adds]
        terms = []
        for layer, macs, gate in zip(self.layers, self.macs, self.gates, strict=True):
            term = macs * tf.reduce_sum(layer.probabilities() * self.squares)
            terms.append(term if gate is None else keep[gate] * term)
        return tf.add_n(terms)

    def entropy(self) -> tf.Tensor:
        """The summed entropy of every choice's distribution."""
        distributions = [layer.probabilities() for layer in self.layers] + [add.probabilities() for add in self.adds]
        return tf.add_n([-tf.reduce_sum(p * tf.math.log(p + 1e-12)) for p in distributions])

    def choice(self) -> tuple[dict[str, int], dict[str, str]]:
        """The argmax configuration: (bits per kept layer, ``block`` or ``skip`` per residual block)."""
        blocks = {
            block.add: BLOCK if add.probabilities()[0] >= add.probabilities()[1] else SKIP
            for block, add in zip(self.blocks, self.adds, strict=True)
        }
        skipped = {name for block in self.blocks if blocks[block.add] == SKIP for name in block.branch}
        bits = {layer.name: BITS[int(tf.argmax(layer.probabilities()))] for layer in self.layers}
        return {name: width for name, width in bits.items() if name not in skipped}, blocks

    def bitops(self, bits: Mapping[str, int]) -> int:
        """Exact BitOps of a configuration: the MACs of its kept layers times their bits squared."""
        pairs = zip(self.layers, self.macs, strict=True)
        return int(sum(macs * bits[layer.name] ** 2 for layer, macs in pairs if layer.name in bits))

    def confidence(self) -> float:
        """The smallest largest-probability among the choices (1: every choice one-hot)."""
        distributions = [layer.probabilities() for layer in self.layers] + [add.probabilities() for add in self.adds]
        return float(min(tf.reduce_max(p) for p in distributions))


class DifferentiableSearch:
    """The alternating search of the module docstring on one super-network, as often as asked.

    Each :meth:`run` starts afresh from the super-network's weights and logits as they were when this
    object was made, with the optimizers' state cleared; the traced step is shared by every run.
    """

    def __init__(
        self, supernet: NoiseSupernet, weight_optimizer: keras.optimizers.Optimizer,
        alpha_optimizer: keras.optimizers.Optimizer,
    ):  # fmt: skip
        self.supernet, self.optimizers = supernet, (weight_optimizer, alpha_optimizer)
        self.alphas = supernet.alphas()
        architecture = {variable.ref() for variable in self.alphas}
        self.weights = [v for v in supernet.model.trainable_variables if v.ref() not in architecture]
        self.initial = supernet.model.get_weights()
        weight_optimizer.build(self.weights)  # slots made here, so the step is traced once
        alpha_optimizer.build(self.alphas)
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._step = tf.function(self._train_step)

    def _train_step(
        self, x: tf.Tensor, y: tf.Tensor, x_val: tf.Tensor, y_val: tf.Tensor, entropy_coefficient: tf.Tensor,
        bitops_coefficient: tf.Tensor,
    ) -> tf.Tensor:  # fmt: skip
        model, (weight_optimizer, alpha_optimizer) = self.supernet.model, self.optimizers
        with tf.GradientTape() as tape:
            loss = self.loss(y_val, model(x_val, training=True)) + entropy_coefficient * self.supernet.entropy()
            loss += bitops_coefficient * self.supernet.expected_bitops()
        alpha_optimizer.apply_gradients(zip(tape.gradient(loss, self.alphas), self.alphas, strict=True))
        with tf.GradientTape() as tape:
            loss = self.loss(y, model(x, training=True))
        weight_optimizer.apply_gradients(zip(tape.gradient(loss, self.weights), self.weights, strict=True))
        return loss

    def run(
        self, train: tf.data.Dataset, validation: tf.data.Dataset, epochs: int, bitops_weight: float,
        entropy_weight: float,
    ) -> dict[str, list[float]]:  # fmt: skip
        """``epochs`` passes over ``train``, each batch paired with the next of ``validation`` (repeated)."""
        self.supernet.model.set_weights(self.initial)
        for optimizer in self.optimizers:
            for variable in optimizer.variables:
                variable.assign(tf.zeros_like(variable))
        bitops_coefficient = tf.constant(bitops_weight / float(self.supernet.expected_bitops()))
        total = max(1, epochs * int(train.cardinality()))
        history: dict[str, list[float]] = {"search_loss": [], "epoch_seconds": []}
        validation_batches, done = iter(validation.repeat()), 0
        for _ in range(epochs):
            started, losses = time.perf_counter(), []
            for x, y in train:
                x_val, y_val = next(validation_batches)
                done += 1
                entropy = tf.constant(entropy_weight * done / total)
                losses.append(float(self._step(x, y, x_val, y_val, entropy, bitops_coefficient)))
            history["search_loss"].append(float(np.mean(losses)))
            history["epoch_seconds"].append(time.perf_counter() - started)
        return history


# ---------------------------------------------------------------- the method


@register_method(
    "quantnas",
    suite="quantization",
    kind="elastic",
    paper=Paper(
        "QuantNAS for super resolution: searching for efficient quantization-friendly architectures against "
        "quantization noise",
        2022,
        "https://arxiv.org/abs/2208.14839",
    ),
    summary="DARTS-style search on the trained backbone over per-layer {2, 4, 8} bits and skipping residual "
    "blocks, with quantization noise, entropy regularisation and a BitOps penalty (one search per penalty); "
    "the argmax quantized and fine-tuned",
    taxonomy=Taxonomy(weight_bits=2, activation_bits=2, applied="training", data="labelled"),
    scale="small-faithful",
)
class QuantNAS(QuantizationMethod):
    default_options: ClassVar[dict[str, Any]] = {
        **QuantizationMethod.default_options, "points": 3, "bitops_weight": 1.0, "entropy_weight": 0.01,
        "alpha_lr": 0.01, "skip_blocks": True,
    }  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        if int(self.options["points"]) < 1 or float(self.options["bitops_weight"]) <= 0:
            raise ValueError("quantnas needs points >= 1 and a positive bitops_weight")

    def penalties(self) -> list[float]:
        """The BitOps weights of the searches: 0, then ``bitops_weight`` times 10^(i - points + 1)."""
        points, largest = int(self.options["points"]), float(self.options["bitops_weight"])
        return [0.0] + [largest * 10.0 ** (index - points + 1) for index in range(1, points)]

    def deployable_names(self) -> tuple[str, ...]:
        """The main deployable (no penalty), then ``bitops-weight=<value>`` for the others."""
        return (MAIN, *(f"bitops-weight={weight:g}" for weight in self.penalties()[1:]))

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        started = time.perf_counter()
        samples, calibration = calibration_samples(context)
        splits, recipe = context.splits, context.recipe
        supernet = NoiseSupernet(float_model, bool(self.options["skip_blocks"]), seed=context.seed)
        search = DifferentiableSearch(
            supernet, recipe.make_optimizer(math.ceil(len(splits.x_train) / recipe.batch_size)),
            keras.optimizers.Adam(float(self.options["alpha_lr"]), beta_1=ALPHA_BETA_1),
        )  # fmt: skip
        validation = tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val))
        validation = validation.shuffle(len(splits.x_val), seed=context.seed).batch(recipe.batch_size)
        history: dict[str, list[float]] = {"search_loss": [], "finetune_loss": [], "epoch_seconds": []}
        deployables: dict[str, Deployable] = {}
        for name, weight in zip(self.deployable_names(), self.penalties(), strict=True):
            entropy = float(self.options["entropy_weight"])
            runs = search.run(training_batches(context), validation, recipe.epochs, weight, entropy)
            deployables[name], tuned = self.deploy(supernet, float_model, context, weight, samples, calibration)
            history["search_loss"] += runs["search_loss"]
            history["finetune_loss"] += tuned.get("loss", [])
            history["epoch_seconds"] += runs["epoch_seconds"] + tuned.get("epoch_seconds", [])
        return Artifact.of(deployables, history=history, train_seconds=time.perf_counter() - started)

    @staticmethod
    def deploy(
        supernet: NoiseSupernet, float_model: keras.Model, context: TrainContext, bitops_weight: float,
        samples: np.ndarray, calibration: dict,
    ) -> tuple[Deployable, dict[str, list[float]]]:  # fmt: skip
        """The searched argmax made real: skipped blocks removed, rounded at its bits, fine-tuned; its history."""
        x_val, y_val = context.splits.x_val, context.splits.y_val
        logits = supernet.model.predict(x_val, batch_size=context.recipe.batch_size, verbose=0)
        bits, blocks = supernet.choice()
        trained = rewrite(float_model, lambda layer: None)
        copy_weights(supernet.model, trained)
        chosen = bypass(trained, {b.add: b.shortcut for b in supernet.blocks if blocks[b.add] == SKIP})
        quantized = quantized_copy(chosen, bits, samples)
        tuned, _ = fit(quantized, context)
        facts = {
            "calibration": calibration,
            "search": {
                "bitops_weight": bitops_weight, "bitops": supernet.bitops(bits),
                "expected_bitops": float(supernet.expected_bitops()),
                "val_top1_noisy": float(np.mean(logits.argmax(axis=-1) == y_val)), "confidence": supernet.confidence(),
            },
        }  # fmt: skip
        if blocks:
            facts["blocks"] = blocks
        return deployable(quantized, chosen, samples, facts), tuned
