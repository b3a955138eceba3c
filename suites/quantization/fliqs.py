r"""FLIQS: one-shot per-layer search over integer and low-precision floating-point formats, with a RL controller.

Every conv / dense layer (first and last included) computes in one format of
:data:`FORMATS`, for its kernel and its input alike: ``int4``, ``int8`` (uniform: ``_uniform``'s
per-channel max-abs kernels and min/max-calibrated inputs) or ``fp4`` (E2M1), ``fp8`` (E4M3). The search
is one-shot: one set of shared weights is fine-tuned (from the trained backbone) while a controller learns
which format each layer should take; no candidate is trained apart.

**Float fake quantization** (:class:`FloatQuantizer`, :func:`float_round`): a format of ``e`` exponent bits
and ``m`` mantissa bits (bias :math:`2^{e-1}-1`) holds :math:`\pm 2^{E}(1 + j 2^{-m})` for normal
exponents :math:`E \ge E_{min} = 2 - 2^{e-1}` and the subnormals :math:`\pm 2^{E_{min}} j 2^{-m}`, up to a
largest value :math:`v_{max}` (E2M1: 6, every code a number; E4M3: 448, the top code being NaN, as in the
OCP formats, ``ml_dtypes.float4_e2m1fn`` / ``float8_e4m3fn``). Forward and pseudo-gradient, with a
per-tensor scale :math:`s`::

    E(x) = max(floor(log2 |x/s|), E_min)        spacing 2^(E - m)
    q(x) = s * sign(x) * min(round(|x/s| / 2^(E-m)) * 2^(E-m), v_max)     (round to nearest, ties to even)
    dq/dx := 1[|x / s| <= v_max]                (STE, clipped; s is held constant)

:math:`s = \max|W| / v_{max}` for a kernel (from the current weights, detached), :math:`s = \max|x| /
v_{max}` calibrated on the first 128 training inputs for an activation.

**Controller** (:class:`FormatPolicy`): per layer a softmax over the formats, logits :math:`\theta_l`
(all 0 at the start: uniform). Interleaved with the weight training, as FLIQS's one-shot search does
(:class:`FormatSearch`, a callback of the fine-tune's ``fit``): before each training step a configuration
:math:`a \sim \pi_\theta` is sampled and the step trains the shared weights under it; after it (once the
first quarter of the steps, a warm-up of the shared weights, is over) another :math:`a' \sim \pi_\theta`
is sampled and scored on a random validation batch of the recipe's batch size::

    R(a') = top1(val batch | a') - lambda * C(a') / C(int8 everywhere)
    theta += Adam step on  (R - b) * grad log pi(a'),   grad_theta_l log pi(a') = onehot(a'_l) - pi_l   (REINFORCE)
    b <- 0.9 b + 0.1 R                                                                   (moving-average baseline)

with the cost :math:`C` (option ``cost``) the model's BOPs (``bops``: :math:`\sum_l \text{MACs}_l b_l^2`,
the default) or its kernels' size in bits (``size``: :math:`\sum_l |W_l| b_l`), :math:`b_l` the layer's
format width (4 or 8; FP4 and INT4 cost the same, so between them accuracy decides). Then the argmax
configuration is fixed and fine-tuned briefly (a quarter of the recipe's epochs, at least one) and deployed.
Option ``lambdas`` (``/``-separated, default ``0.05/0.2/1``) runs one search per :math:`\lambda`, each from
the trained backbone: the main deployable is the first :math:`\lambda`'s, the others are named
``lambda=<value>``, a curve of accuracy against cost. ``train_seconds`` is everything: every search and
every fine-tune (the history concatenates their epochs). ``policy_lr`` (0.05) is the controller's Adam
learning rate.

**Deployment**: each Keras fake-quantized model (``simulated``), its layers' quantizers declaring the
chosen width (``precision``) so the complexity track counts BOPs and size at it; the facts give the
chosen ``formats``, the final policy and the relative cost.

Deviations (small-faithful): the paper searches ImageNet-scale networks (and jointly an architecture
space, not done here); its controller builds on TuNAS, whose reward penalises the distance to a target
cost (:math:`|C/C_T - 1|`), and the paper's text was not available here to check its exact reward: this one
uses a linear penalty :math:`\lambda C` (one :math:`\lambda` per point of the curve); kernels and inputs
of a layer share one format; FP scales are per tensor and max-based (no search of the FP exponent bias);
quality is the top-1 of one validation batch (classification tasks only).

Paper: Dotzel et al., "FLIQS: One-Shot Mixed-Precision Floating-Point
and Integer Quantization Search", 2023 (https://arxiv.org/abs/2308.03290).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from effbench.tf import keras, tf

# isort: split
# larq imports TensorFlow, so effbench.tf goes first: it selects the Keras 2 API (tf_keras) larq needs.
import larq

from effbench.method import MAIN, Artifact, Deployable
from effbench.registry import Paper, Taxonomy, register_method
from effbench.training import TrainContext, fit
from suites.quantization._tensor_quantizers import layer_tensors
from suites.quantization._uniform import (
    ActivationQuantizer,
    WeightQuantizer,
    bit_width_facts,
    quantizable_layer_names,
    quantize_layers,
)
from suites.quantization.base import QuantizationMethod, calibration_samples

_TINY = 1e-30
COSTS = ("bops", "size")
# The fraction of the search's steps that trains the shared weights before the controller learns.
WARMUP_FRACTION = 0.25
# The argmax configuration's fine-tune, as a fraction of the recipe's epochs.
FINETUNE_FRACTION = 0.25
BASELINE_MOMENTUM = 0.9


@dataclass(frozen=True)
class FloatFormat:
    """A sign bit, ``exponent_bits`` and ``mantissa_bits``; ``max_value`` the largest finite value."""

    exponent_bits: int
    mantissa_bits: int
    max_value: float

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def min_exponent(self) -> int:
        """The smallest normal exponent, ``1 - bias``; the subnormals share its spacing."""
        return 2 - 2 ** (self.exponent_bits - 1)


FLOAT_FORMATS = {"fp4": FloatFormat(2, 1, 6.0), "fp8": FloatFormat(4, 3, 448.0)}  # E2M1, E4M3 (OCP)
INTEGER_FORMATS = {"int4": 4, "int8": 8}
FORMATS = ("int4", "int8", "fp4", "fp8")
FORMAT_BITS = {**INTEGER_FORMATS, **{name: f.bits for name, f in FLOAT_FORMATS.items()}}
REFERENCE_FORMAT = "int8"


def float_round(x: tf.Tensor, form: FloatFormat) -> tf.Tensor:
    """The value of ``form`` nearest to ``x`` (ties to even mantissa), clipped to ``±max_value``."""
    magnitude = tf.minimum(tf.abs(x), form.max_value)
    exponent = tf.floor(tf.math.log(tf.maximum(magnitude, _TINY)) / math.log(2.0))
    spacing = tf.pow(2.0, tf.maximum(exponent, float(form.min_exponent)) - form.mantissa_bits)
    return tf.sign(x) * tf.minimum(tf.round(magnitude / spacing) * spacing, form.max_value)


def float_fake_quantize(x: tf.Tensor, scale: tf.Tensor, form: FloatFormat) -> tf.Tensor:
    """``scale * float_round(x / scale)``; backward the incoming gradient where ``|x / scale| <= max_value``."""
    scale = tf.stop_gradient(scale)

    @tf.custom_gradient
    def quantize(x: tf.Tensor) -> tf.Tensor:
        def grad(upstream: tf.Tensor) -> tf.Tensor:
            return upstream * tf.cast(tf.abs(x / scale) <= form.max_value, upstream.dtype)

        return scale * float_round(x / scale, form), grad

    return quantize(x)


@keras.utils.register_keras_serializable(package="effbench.quantization")
class FloatQuantizer(larq.quantizers._BaseQuantizer):
    """Per-tensor scaled ``fp4`` / ``fp8`` fake quantization (module docstring); ``precision`` its width.

    ``calibrated=False`` (kernels): the scale is ``max|x| / max_value`` of the tensor itself. ``calibrated=True``
    (activations): of the non-trainable ``peak``, set by calibration; until then the input passes through.
    """

    precision = None

    def __init__(self, format_name: str = "fp8", calibrated: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        if format_name not in FLOAT_FORMATS:
            raise ValueError(f"float format '{format_name}' is not one of {', '.join(FLOAT_FORMATS)}")
        self.format_name, self.calibrated = format_name, bool(calibrated)
        self.precision = FLOAT_FORMATS[format_name].bits

    def build(self, input_shape: Any) -> None:
        if self.calibrated:
            self.peak = self.add_weight("peak", shape=(), initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        form = FLOAT_FORMATS[self.format_name]
        peak = self.peak if self.calibrated else tf.reduce_max(tf.abs(inputs))
        quantized = float_fake_quantize(inputs, tf.maximum(peak, _TINY) / form.max_value, form)
        return super().call(tf.where(peak > 0, quantized, inputs) if self.calibrated else quantized)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "format_name": self.format_name, "calibrated": self.calibrated}


@keras.utils.register_keras_serializable(package="effbench.quantization")
class FormatQuantizer(larq.quantizers._BaseQuantizer):
    """A searchable quantizer: one candidate per format, the one in use picked by the non-trainable ``choice``.

    ``role`` ``kernel``: :class:`~suites.quantization._uniform.WeightQuantizer` (int) or an uncalibrated
    :class:`FloatQuantizer`; ``input``: :class:`~suites.quantization._uniform.ActivationQuantizer` (int) or a
    calibrated :class:`FloatQuantizer`. ``choice`` indexes ``formats``; ``precision`` is the chosen width.
    """

    def __init__(self, role: str = "kernel", formats: Sequence[str] = FORMATS, **kwargs: Any):
        super().__init__(**kwargs)
        if role not in ("kernel", "input"):
            raise ValueError(f"role '{role}' is not 'kernel' or 'input'")
        unknown = [name for name in formats if name not in FORMAT_BITS]
        if unknown or not formats:
            raise ValueError(f"formats {list(formats)}: each must be one of {', '.join(FORMATS)}")
        self.role, self.formats = role, tuple(formats)
        self.candidates = [self._candidate(name) for name in self.formats]

    def _candidate(self, name: str) -> larq.quantizers.Quantizer:
        if name in INTEGER_FORMATS:
            bits = INTEGER_FORMATS[name]
            return WeightQuantizer(bits, name=name) if self.role == "kernel" else ActivationQuantizer(bits, name=name)
        return FloatQuantizer(name, calibrated=self.role == "input", name=name)

    def build(self, input_shape: Any) -> None:
        self.choice = self.add_weight("choice", shape=(), dtype=tf.int32, initializer="zeros", trainable=False)
        super().build(input_shape)

    @property
    def precision(self) -> int | None:
        """The width of the chosen format; None before the build and inside a traced function (where larq's
        quantized variables read it, as a label: the choice is a variable, known only when run eagerly)."""
        return FORMAT_BITS[self.chosen] if self.built and tf.executing_eagerly() else None

    @property
    def chosen(self) -> str:
        return self.formats[int(self.choice.numpy())]

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        # Every candidate computes and a one-hot mask keeps the chosen one: no control flow in the graph, and
        # the gradient reaches only the chosen candidate (the others are multiplied by 0).
        mask = tf.one_hot(self.choice, len(self.candidates), dtype=inputs.dtype)
        return super().call(tf.add_n([mask[i] * candidate(inputs) for i, candidate in enumerate(self.candidates)]))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "role": self.role, "formats": list(self.formats)}


def searchable_model(float_model: keras.Model, formats: Sequence[str] = FORMATS) -> keras.Model:
    """``float_model`` with a :class:`FormatQuantizer` on every conv / dense kernel and input (ranges unset)."""
    widest = max(FORMAT_BITS[name] for name in formats)
    return quantize_layers(
        float_model,
        dict.fromkeys(quantizable_layer_names(float_model), (widest, widest)),
        weight_quantizer=lambda _: FormatQuantizer("kernel", formats, name="kernel_format"),
        activation_quantizer=lambda _: FormatQuantizer("input", formats, name="input_format"),
    )


def kernel_of(layer: keras.layers.Layer) -> tuple[tf.Variable, Any]:
    """A larq conv / depthwise / dense layer's kernel and its quantizer."""
    if hasattr(layer, "depthwise_kernel"):
        return layer.depthwise_kernel, layer.depthwise_quantizer
    return layer.kernel, layer.kernel_quantizer


def format_quantizers(model: keras.Model) -> dict[str, tuple[FormatQuantizer, FormatQuantizer]]:
    """Layer name -> (kernel, input) :class:`FormatQuantizer`, in the model's order."""
    return {
        layer.name: (kernel_of(layer)[1], layer.input_quantizer)
        for layer in model.layers
        if isinstance(getattr(layer, "input_quantizer", None), FormatQuantizer)
    }


def calibrate_inputs(model: keras.Model, float_model: keras.Model, samples: np.ndarray) -> None:
    """Set every input candidate's range from the float model's layer inputs on ``samples``.

    Integer candidates take the min/max (with 0 inside, as ``_uniform.calibrate_activation_ranges``), float
    candidates the max magnitude.
    """
    quantizers = format_quantizers(model)
    tensors = layer_tensors(float_model, samples, inputs_of=list(quantizers))
    for name, (_, inputs) in quantizers.items():
        values = tensors[(name, "input")]
        for candidate in inputs.candidates:
            if isinstance(candidate, ActivationQuantizer):
                candidate.low.assign(min(float(values.min()), 0.0))
                candidate.high.assign(max(float(values.max()), 0.0))
            else:
                candidate.peak.assign(float(np.max(np.abs(values))))


def set_formats(quantizers: Mapping[str, tuple[FormatQuantizer, FormatQuantizer]], choice: Sequence[int]) -> None:
    """Layer ``l`` (in ``quantizers``' order) computes in format index ``choice[l]``, kernel and input."""
    for (kernel, inputs), index in zip(quantizers.values(), choice, strict=True):
        kernel.choice.assign(int(index))
        inputs.choice.assign(int(index))


def relative_costs(model: keras.Model, names: Sequence[str], cost: str, formats: Sequence[str] = FORMATS) -> np.ndarray:
    """``(layers, formats)``: each layer's cost in each format over the whole model's cost in ``int8``.

    ``bops``: MACs x b^2 (MACs = kernel elements x output positions, for conv, depthwise and dense layers);
    ``size``: kernel elements x b.
    """
    if cost not in COSTS:
        raise ValueError(f"cost '{cost}' is not one of {', '.join(COSTS)}")
    widths = np.array([FORMAT_BITS[name] for name in formats], np.float64)
    rows = []
    for name in names:
        layer = model.get_layer(name)
        elements = float(np.prod(kernel_of(layer)[0].shape))
        if cost == "bops":
            rows.append(elements * float(np.prod(layer.output_shape[1:-1])) * widths**2)
        else:
            rows.append(elements * widths)
    table = np.array(rows)
    return table / table[:, list(formats).index(REFERENCE_FORMAT)].sum()


class FormatPolicy:
    """The controller: per-layer softmax over formats, REINFORCE with a moving-average baseline, Adam on logits."""

    def __init__(self, layers: int, formats: int, learning_rate: float = 0.05):
        self.logits = np.zeros((layers, formats))
        self.learning_rate = learning_rate
        self.baseline: float | None = None
        self._m, self._v, self._t = np.zeros_like(self.logits), np.zeros_like(self.logits), 0

    def probabilities(self) -> np.ndarray:
        shifted = np.exp(self.logits - self.logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        cumulative = np.cumsum(self.probabilities(), axis=1)
        draws = rng.random((len(self.logits), 1))
        return np.minimum((draws > cumulative).sum(axis=1), self.logits.shape[1] - 1)

    def argmax(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def update(self, choice: np.ndarray, reward: float) -> None:
        """One REINFORCE step for the sampled ``choice`` and its ``reward`` (module docstring)."""
        baseline = reward if self.baseline is None else self.baseline
        gradient = (reward - baseline) * (np.eye(self.logits.shape[1])[choice] - self.probabilities())
        self.baseline = BASELINE_MOMENTUM * baseline + (1.0 - BASELINE_MOMENTUM) * reward
        self._t += 1
        self._m = 0.9 * self._m + 0.1 * gradient
        self._v = 0.999 * self._v + 0.001 * gradient**2
        step = self._m / (1 - 0.9**self._t) / (np.sqrt(self._v / (1 - 0.999**self._t)) + 1e-8)
        self.logits += self.learning_rate * step


class FormatSearch(keras.callbacks.Callback):
    """FLIQS's interleaving, as a callback of the search's ``fit`` (module docstring, "Controller")."""

    def __init__(
        self,
        model: keras.Model,
        policy: FormatPolicy,
        costs: np.ndarray,
        penalty: float,
        validation: tuple[np.ndarray, np.ndarray],
        batch_size: int,
        steps: int,
        seed: int,
    ):
        super().__init__()
        self.searched, self.policy, self.costs, self.penalty = model, policy, costs, penalty
        self.quantizers = format_quantizers(model)
        self.x_val, self.y_val = validation
        self.batch_size = min(batch_size, len(self.x_val))
        self.warmup = int(WARMUP_FRACTION * steps)
        self.rng = np.random.default_rng(seed)
        self.step, self.rewards = 0, []
        self._logits = tf.function(lambda x: self.searched(x, training=False))

    def reward(self, choice: np.ndarray) -> float:
        """Top-1 on a random validation batch under ``choice``, minus the penalty times its relative cost."""
        set_formats(self.quantizers, choice)
        rows = self.rng.choice(len(self.x_val), self.batch_size, replace=False)
        predicted = np.argmax(self._logits(tf.constant(self.x_val[rows])).numpy(), axis=-1)
        accuracy = float(np.mean(predicted == self.y_val[rows]))
        return accuracy - self.penalty * float(self.costs[np.arange(len(choice)), choice].sum())

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        set_formats(self.quantizers, self.policy.sample(self.rng))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        if self.step <= self.warmup:
            return
        choice = self.policy.sample(self.rng)
        reward = self.reward(choice)
        self.policy.update(choice, reward)
        self.rewards.append(reward)

    def on_train_end(self, logs: dict | None = None) -> None:
        set_formats(self.quantizers, self.policy.argmax())


def concatenated(histories: Sequence[Mapping[str, list[float]]]) -> dict[str, list[float]]:
    """The histories of successive trainings end to end, per curve."""
    keys = dict.fromkeys(key for history in histories for key in history)
    return {key: [value for history in histories for value in history.get(key, [])] for key in keys}


def parse_lambdas(text: Any) -> tuple[float, ...]:
    """``0.05/0.2/1`` (or one number) -> the penalties, each >= 0."""
    values = tuple(float(item) for item in str(text).split("/") if item.strip())
    if not values or any(value < 0 or not math.isfinite(value) for value in values):
        raise ValueError(f"lambdas '{text}': expected non-negative numbers separated by '/', such as 0.05/0.2/1")
    return values


@register_method(
    "fliqs",
    suite="quantization",
    kind="training",
    paper=Paper(
        "FLIQS: One-Shot Mixed-Precision Floating-Point and Integer Quantization Search",
        2023,
        "https://arxiv.org/abs/2308.03290",
    ),
    summary="one-shot per-layer search over INT4/INT8/FP4(E2M1)/FP8(E4M3) with shared weights and a REINFORCE "
    "controller (reward: validation top-1 - lambda x relative BOPs); argmax fine-tuned; one model per lambda",
    taxonomy=Taxonomy(weight_bits=4, activation_bits=4, applied="training", data="labelled"),
    scale="small-faithful",
)
class FLIQS(QuantizationMethod):
    """Options: ``lambdas`` (``/``-separated cost penalties, ``0.05/0.2/1``), ``cost`` (``bops`` or ``size``),
    ``policy_lr`` (the controller's Adam learning rate, 0.05), ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {
        **QuantizationMethod.default_options, "lambdas": "0.05/0.2/1", "cost": "bops", "policy_lr": 0.05,
    }  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.lambdas = parse_lambdas(self.options["lambdas"])
        if self.options["cost"] not in COSTS:
            raise ValueError(f"fliqs cost '{self.options['cost']}' is not one of {', '.join(COSTS)}")

    @staticmethod
    def deployable_name(penalty: float) -> str:
        return f"lambda={penalty:g}"

    def deployable_names(self) -> tuple[str, ...]:
        return (MAIN, *(self.deployable_name(penalty) for penalty in self.lambdas[1:]))

    def search(
        self, float_model: keras.Model, penalty: float, samples: np.ndarray, context: TrainContext
    ) -> tuple[keras.Model, dict[str, Any], list[dict[str, list[float]]], float]:
        """One search at ``penalty`` and its argmax's fine-tune: the model, its facts, histories, seconds."""
        model = searchable_model(float_model)
        calibrate_inputs(model, float_model, samples)
        names = list(format_quantizers(model))
        costs = relative_costs(model, names, self.options["cost"])
        recipe = context.recipe
        steps = recipe.epochs * -(-len(context.splits.x_train) // recipe.batch_size)
        policy = FormatPolicy(len(names), len(FORMATS), float(self.options["policy_lr"]))
        validation = (context.splits.x_val.astype(np.float32), context.splits.y_val)
        controller = FormatSearch(model, policy, costs, penalty, validation, recipe.batch_size, steps, context.seed)
        search_history, search_seconds = fit(model, context, callbacks=[controller])
        finetune = replace(context, recipe=replace(recipe, epochs=max(1, round(FINETUNE_FRACTION * recipe.epochs))))
        finetune_history, finetune_seconds = fit(model, finetune)
        choice = policy.argmax()
        probabilities = policy.probabilities()
        facts = {
            "simulated": True,
            "bit_widths": bit_width_facts(model),
            "formats": {name: FORMATS[index] for name, index in zip(names, choice, strict=True)},
            "lambda": penalty,
            "cost": self.options["cost"],
            "relative_cost": float(costs[np.arange(len(names)), choice].sum()),
            "policy": {name: dict(zip(FORMATS, map(float, row), strict=True))
                       for name, row in zip(names, probabilities, strict=True)},  # fmt: skip
            "search": {
                "steps": steps, "policy_updates": len(controller.rewards),
                "search_seconds": search_seconds, "finetune_seconds": finetune_seconds,
            },
        }
        return model, facts, [search_history, finetune_history], search_seconds + finetune_seconds

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        if context.task.spec.kind != "classification":
            raise ValueError(f"fliqs scores formats by validation top-1: task '{context.task.spec.slug}' is not "
                             "a classification task")  # fmt: skip
        samples, calibration = calibration_samples(context)
        results, histories, seconds = [], [], 0.0
        for penalty in self.lambdas:
            model, facts, history, spent = self.search(float_model, penalty, samples, context)
            facts["calibration"] = {**calibration, "use": "input ranges"}
            results.append((model, facts))
            histories += history
            seconds += spent
        (main, main_facts), *others = results
        deployables = {
            self.deployable_name(penalty): Deployable(model, facts=facts)
            for penalty, (model, facts) in zip(self.lambdas[1:], others, strict=True)
        }
        return Artifact(main, concatenated(histories), seconds, deployables=deployables, facts=main_facts)
