r"""A per-layer choice among bit widths inside a super-network: the mechanism simq-nas and quantnas share.

Both searches turn the trained backbone into a super-network whose every conv / depthwise / dense layer
``l`` computes with a *mixture* of its candidate bit widths :math:`b \in B` (the same width for its
weights and its input), weighted by :math:`p_l`:

.. math::

    \tilde x = \sum_b p_{l,b}\, Q_b(x),\qquad \tilde W = \sum_b p_{l,b}\, Q_b(W),\qquad
    y = \operatorname{op}(\tilde x, \tilde W)

Two modes (:class:`BitChoiceConv2D` and its siblings, argument ``mode``):

- ``round`` (simq-nas): :math:`p_l` is a non-trainable one-hot vector set from outside (the layer
  computes at one bit width: a sampled sub-network's policy). :math:`Q_b` is the deployed quantizer of
  :mod:`suites.quantization._uniform` (per-output-channel symmetric max-abs steps for weights, a
  calibrated ``[low, high]`` range for inputs). Forward: rounding to the grid; pseudo-gradient: the
  straight-through estimator (1 inside the grid's range, 0 outside), so every sampled policy trains
  quantization-aware.
- ``noise`` (quantnas): :math:`p_l = \operatorname{softmax}(\alpha_l)` with trainable :math:`\alpha_l`
  (DARTS' relaxation), and :math:`Q_b` is *quantization noise* in place of rounding:

  .. math::

      Q_b(t) = t + \operatorname{sg}\big(s_b(t)\,(u - \tfrac12)\big),\quad u \sim U[0, 1),\qquad
      \operatorname{E}[Q_b(t) - t] = 0,\quad \operatorname{Var}[Q_b(t) - t] = s_b^2 / 12

  with the step :math:`s_b` of the deployed quantizer (:func:`kernel_step`: per output channel
  :math:`\max_c |W| / (2^{b-1} - 1)`; :func:`activation_step`: the batch's range including 0 over
  :math:`2^b - 1`). Forward: the input plus uniform noise of one step's width, the error rounding makes on
  average; pseudo-gradient: :math:`\partial Q_b / \partial t = 1` (the noise is a constant of the step,
  ``sg`` stops its gradient), so :math:`\partial L / \partial \alpha_l` flows through the mixture weights.

A layer fed by an elastic-width channel group (simq-nas) also holds an input-channel mask :math:`m`
(``masked=True``): it computes with :math:`x \odot m` and :math:`W \odot m` along its kernel's input axis,
so masked channels contribute nothing and the weight steps are those of the kept channels only.

Also here: :func:`copy_weights` (by layer and weight name, between a super-network and a float model
with the same layer names), :func:`layer_macs`, :func:`training_batches` (the recipe's batches for the
searches' own loops), and :func:`deployable` (a chosen policy, fake-quantized for the tracks; an int8
flatbuffer as well where every layer is at 8 bits, the one case LiteRT runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from effbench.graph import local_name, rewrite
from effbench.method import Deployable
from effbench.tf import keras, tf
from effbench.training import TrainContext, crop_flip
from suites.quantization._uniform import (
    ActivationQuantizer,
    WeightQuantizer,
    bit_width_facts,
    calibrate_activation_ranges,
    integer_range,
    max_abs_step,
    quantizable_layer_names,
    quantize_layers,
)
from suites.quantization.base import int8_flatbuffer

ROUND, NOISE = "round", "noise"
MODES = (ROUND, NOISE)
# The bit width LiteRT runs: a policy with every layer here also deploys as an int8 flatbuffer.
INT8 = 8
# Spread of the initial architecture logits of the noise mode (DARTS initialises them near zero).
ALPHA_INIT_STDDEV = 1e-3


def quantization_noise(x: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """``x + sg(step * (u - 1/2))``, ``u ~ U[0, 1)``: rounding's error as noise, variance ``step**2 / 12``."""
    noise = step * (tf.random.uniform(tf.shape(x), dtype=x.dtype) - 0.5)
    return x + tf.stop_gradient(noise)


def _is_depthwise(kernel: tf.Tensor) -> bool:
    return len(kernel.shape) == 4 and kernel.shape[-1] == 1 and kernel.shape[-2] > 1


def kernel_step(kernel: tf.Tensor, bits: int) -> tf.Tensor:
    """The deployed weight quantizer's per-channel step, shaped to broadcast over ``kernel``.

    As :class:`~suites.quantization._uniform.WeightQuantizer`: max |W| per output channel (the last axis;
    the third of a depthwise kernel ``(kh, kw, c, 1)``) over the signed grid's ``q_max``.
    """
    if _is_depthwise(kernel):
        return tf.reshape(max_abs_step(tf.transpose(kernel, (0, 1, 3, 2)), bits), (1, 1, -1, 1))
    return max_abs_step(kernel, bits)


def activation_step(x: tf.Tensor, bits: int) -> tf.Tensor:
    """The step of min/max quantization of ``x`` at ``bits``: its range, 0 included, over ``2^b - 1``."""
    span = tf.maximum(tf.reduce_max(x), 0.0) - tf.minimum(tf.reduce_min(x), 0.0)
    return tf.maximum(span, 1e-8) / integer_range(bits, False)[1]


class _BitChoice:
    """The mixture over bit widths of the module docstring, for a conv / depthwise / dense layer.

    ``choice`` holds :math:`p_l` (``round``) or :math:`\\alpha_l` (``noise``); ``in_mask`` (``masked``) the
    input-channel mask. The mixed kernel replaces the layer's kernel for the duration of one call.
    """

    kernel_attribute = "kernel"
    # Axis of the kernel that indexes the layer's input channels (None: a depthwise kernel is never masked).
    input_axis: int | None = -2

    def __init__(
        self, *args: Any, bit_options: Sequence[int] = (8, 4), mode: str = ROUND, masked: bool = False,
        choice_seed: int | None = None, **kwargs: Any,
    ):  # fmt: skip
        super().__init__(*args, **kwargs)
        if mode not in MODES:
            raise ValueError(f"bit-choice mode must be one of {', '.join(MODES)}, not '{mode}'")
        if masked and self.input_axis is None:
            raise ValueError(f"layer '{self.name}': a depthwise layer takes no input-channel mask")
        self.bit_options, self.mode, self.masked = tuple(int(b) for b in bit_options), mode, bool(masked)
        self.choice_seed = choice_seed
        for bits in self.bit_options:
            integer_range(bits, True)
        if mode == ROUND:
            self.weight_quantizers = [WeightQuantizer(bits) for bits in self.bit_options]
            self.activation_quantizers = [ActivationQuantizer(bits) for bits in self.bit_options]

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        relaxed = self.mode == NOISE
        initializer = keras.initializers.RandomNormal(stddev=ALPHA_INIT_STDDEV, seed=self.choice_seed)
        self.choice = self.add_weight(
            "choice", shape=(len(self.bit_options),), initializer=initializer if relaxed else "zeros",
            trainable=relaxed,
        )  # fmt: skip
        if self.masked:
            self.in_mask = self.add_weight("in_mask", shape=(input_shape[-1],), initializer="ones", trainable=False)

    def probabilities(self) -> tf.Tensor:
        """:math:`p_l`: ``softmax(alpha)`` in ``noise`` mode, the vector as set in ``round`` mode."""
        return tf.nn.softmax(self.choice) if self.mode == NOISE else tf.convert_to_tensor(self.choice)

    def _candidates(self, tensor: tf.Tensor, kernel: bool) -> list[tf.Tensor]:
        if self.mode == ROUND:
            quantizers = self.weight_quantizers if kernel else self.activation_quantizers
            return [quantizer(tensor) for quantizer in quantizers]
        step = kernel_step if kernel else activation_step
        return [quantization_noise(tensor, step(tensor, bits)) for bits in self.bit_options]

    def _mixed(self, tensor: tf.Tensor, probabilities: tf.Tensor, kernel: bool) -> tf.Tensor:
        candidates = self._candidates(tensor, kernel)
        return tf.add_n([probabilities[index] * candidate for index, candidate in enumerate(candidates)])

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        probabilities = self.probabilities()
        kernel = getattr(self, self.kernel_attribute)
        masked_kernel = kernel
        if self.masked:
            inputs = inputs * self.in_mask
            shape = [1] * len(kernel.shape)
            shape[self.input_axis] = -1
            masked_kernel = kernel * tf.reshape(self.in_mask, shape)
        mixed_inputs = self._mixed(inputs, probabilities, kernel=False)
        # The layer's own call reads the kernel attribute: it sees the mixed kernel for this call only
        # (object.__setattr__ keeps Keras from tracking the tensor as a weight).
        object.__setattr__(self, self.kernel_attribute, self._mixed(masked_kernel, probabilities, kernel=True))
        try:
            return super().call(mixed_inputs)
        finally:
            object.__setattr__(self, self.kernel_attribute, kernel)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(), "bit_options": list(self.bit_options), "mode": self.mode, "masked": self.masked,
            "choice_seed": self.choice_seed,
        }  # fmt: skip


class BitChoiceConv2D(_BitChoice, keras.layers.Conv2D):
    """A Conv2D computing with a mixture of bit widths (:class:`_BitChoice`)."""


class BitChoiceDepthwiseConv2D(_BitChoice, keras.layers.DepthwiseConv2D):
    """A DepthwiseConv2D computing with a mixture of bit widths (:class:`_BitChoice`); never masked."""

    kernel_attribute = "depthwise_kernel"
    input_axis = None


class BitChoiceDense(_BitChoice, keras.layers.Dense):
    """A Dense layer computing with a mixture of bit widths (:class:`_BitChoice`)."""


BIT_CHOICE_CLASSES: dict[type, type] = {
    keras.layers.Conv2D: BitChoiceConv2D,
    keras.layers.DepthwiseConv2D: BitChoiceDepthwiseConv2D,
    keras.layers.Dense: BitChoiceDense,
}


def bit_choice_model(
    model: keras.Model,
    bit_options: Sequence[int],
    mode: str,
    masked: Collection[str] = (),
    replace: Callable[[keras.layers.Layer], keras.layers.Layer | None] = lambda layer: None,
    seed: int = 0,
) -> keras.Model:
    """A copy of ``model`` whose conv / depthwise / dense layers choose among ``bit_options`` (same weights).

    ``masked`` names the layers that take an input-channel mask; ``replace`` may swap other layers (a
    residual ``Add`` for a choice of its own); layer ``i``'s architecture logits are seeded ``seed + i``.
    """
    names = quantizable_layer_names(model)

    def rule(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name not in names:
            return replace(layer)
        choice_class = BIT_CHOICE_CLASSES[type(layer)]
        return choice_class(
            **layer.get_config(), bit_options=bit_options, mode=mode, masked=layer.name in masked,
            choice_seed=seed + names.index(layer.name),
        )  # fmt: skip

    return rewrite(model, rule)


def bit_choice_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's bit-choice layers, in its order."""
    return [layer for layer in model.layers if isinstance(layer, _BitChoice)]


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Set every weight of ``target`` to the same-named weight of ``source``'s same-named layer.

    Between a super-network and the float model it came from (or a fake-quantized copy of one): the
    super-network's extra weights (choices, masks, ranges) are left behind.
    """
    for layer in target.layers:
        if not layer.weights:
            continue
        origin = source.get_layer(layer.name)
        weights = {local_name(weight, origin): weight for weight in origin.weights}
        for weight in layer.weights:
            weight.assign(weights[local_name(weight, layer)])


def output_positions(layer: keras.layers.Layer) -> int:
    """Positions a layer's output has per example: the product of its shape's axes but batch and channels."""
    return math.prod(int(size) for size in layer.output_shape[1:-1])


def layer_macs(layer: keras.layers.Layer) -> int:
    """Multiply-accumulates of a conv / depthwise / dense layer per example: kernel elements x positions.

    The complexity track's count (a kernel element is used once per output position), for groups=1 convs,
    depthwise convs (kernel ``(kh, kw, c, m)``) and dense layers on inputs of any rank.
    """
    kernel = getattr(layer, "depthwise_kernel", None)
    kernel = layer.kernel if kernel is None else kernel
    return math.prod(int(size) for size in kernel.shape) * output_positions(layer)


def training_batches(context: TrainContext) -> tf.data.Dataset:
    """One epoch of the run's training split as the recipe feeds it: shuffled (seeded), batched, augmented."""
    splits, recipe = context.splits, context.recipe
    dataset = tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train)).shuffle(
        len(splits.x_train), seed=context.seed, reshuffle_each_iteration=True
    )
    dataset = dataset.batch(recipe.batch_size)
    if recipe.augmentation == "crop-flip":
        dataset = dataset.map(crop_flip, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def quantized_copy(float_model: keras.Model, bits: Mapping[str, int], samples: np.ndarray) -> keras.Model:
    """``float_model`` with layer ``l`` at ``bits[l]`` bits (weights and input), ranges calibrated on ``samples``."""
    quantized = quantize_layers(float_model, {name: (width, width) for name, width in bits.items()})
    calibrate_activation_ranges(quantized, samples)
    return quantized


def deployable(
    quantized: keras.Model, float_model: keras.Model, samples: np.ndarray, facts: Mapping[str, Any]
) -> Deployable:
    """The deployable of a fake-quantized model and the float model of the same layers it was made from.

    Its facts: ``bit_widths``, ``simulated`` (true where some layer is below 8 bits: LiteRT cannot run it,
    the tracks measure the Keras model) and ``facts``. Where every layer is at 8 bits the deployment is
    also the int8 flatbuffer of ``float_model`` holding ``quantized``'s weights, calibrated on ``samples``
    (TFLite's per-channel int8 weights and min/max activation ranges: the fake quantizer's own scheme).
    """
    widths = bit_width_facts(quantized)
    simulated = any(min(pair) < INT8 for pair in widths.values())
    flatbuffer = None
    if not simulated:
        copy_weights(quantized, float_model)
        flatbuffer = int8_flatbuffer(float_model, samples, f"first {len(samples)} examples of the run's training split")
    return Deployable(quantized, flatbuffer, {**facts, "bit_widths": widths, "simulated": simulated})
