r"""AdaQuant: layer-wise calibration, integer-programming bit allocation and BN re-estimation, post-training.

**(a) AdaQuant layer-wise calibration.** On a small unlabelled calibration set (the first ``samples`` training
inputs), for each conv / dense layer :math:`l` with float weights :math:`W, b`, float input :math:`X` (the float
model's) and quantized input :math:`X^q` (the input it receives in the quantized model), optimise the
continuous variables :math:`W', b'`, the per-output-channel weight step :math:`s_w` and the input range
:math:`[\ell, h]` (activation step :math:`s_a = (h - \ell)/(2^{b_a} - 1)`):

.. math:: \min_{W', b', s_w, \ell, h} \lVert f(W X + b) - f(Q_{s_w}(W')\, Q_{\ell,h}(X^q) + b') \rVert_2^2

(mean squared error; :math:`f` the layer's own activation, the identity for the backbones' convs, ReLU for the
``mlp``'s hidden layers, as the official code's ReLU variant). Forward: the uniform fake quantizers of
:mod:`suites.quantization._uniform`; backward: the straight-through estimator through rounding, so
:math:`\partial Q/\partial W' = 1` inside the grid and the steps get LSQ's gradient
(:math:`\lfloor x/s \rceil - x/s` inside, :math:`q_{min}` or :math:`q_{max}` outside). Adam, one optimiser
per variable group, ``iterations`` steps on random batches of 50; learning rates relative to each variable's
scale, :math:`10^{-2} \times` (std of :math:`b`, mean of :math:`s_w`, :math:`h - \ell`), the
official code's (commented-out) relative rule, with :math:`10^{-3}` for :math:`W` (its final constants move the
weights ten times slower than the other groups). *Parallel* mode (every layer alone, :math:`X^q = X`) fills
the integer program's table; *sequential* mode (layers in order, :math:`X^q` from the already calibrated
quantized model) calibrates each deployable. The learned step is stored with the kernel
(:class:`LearnedStepWeightQuantizer`), so the deployed model computes with exactly what was calibrated.

**(b) Integer programming.** :math:`\Delta L_{l,b}` = the mean KL divergence, on the calibration set, from the float
model's outputs to the outputs of the float model whose layer :math:`l` alone takes its parallel-AdaQuant
weights :math:`Q_{s_w}(W'), b'` at :math:`b \in \{2, 4, 8\}` bits; then
:func:`~suites.quantization._mixed_precision.integer_program` (``scipy.optimize.milp``) chooses one width per
layer minimising :math:`\sum_l \Delta L_{l, b_l}` under the size budget :math:`\sum_l n_l b_l \le B`.
Budgets (option ``budgets``, average weight bits, ``"4/6/8"`` by default): one deployable each, the first the
main one, the others ``avg-bits=<b>``. Activations are 8-bit everywhere.

**(c) Global statistics tuning.** After the sequential pass every BatchNormalization layer's running mean and
variance are re-estimated, in model order, from its input in the quantized model on the calibration set
(the backbones' convs have no bias, so this is where their bias is corrected; the ``mlp`` has no BN and its
biases are AdaQuant variables). The re-estimated statistics are kept only if they lower the KL to the float
model's outputs on the calibration set (fact ``bn_reestimated``): on a 15-epoch ResNet-20 on digits at W4A8 they
raised the test KL after AdaQuant (0.004 -> 0.009) while they helped without it.

Each deployable is the Keras fake-quantized model (``simulated``); one that is 8 bits everywhere also ships as
the int8 flatbuffer of the float model holding the calibrated quantized weights, biases and BN statistics
(the converter's own per-channel max-abs steps and activation ranges apply there). ``keep_ends`` (default
true) keeps the first and last layers at 8 bits, as the paper keeps "all layers except the smallest two".

Deviations (small-faithful): iterations per layer scale with the budget (``smoke`` 10, ``quick`` 50,
``paper`` 100, the official code's) and calibration inputs (``smoke`` 32, else 128); the paper's integer
program measures the task loss on labelled calibration data and allocates activation widths too, here the
label-free KL to the float model and weights only (A8); the table's :math:`\Delta L` is the weight effect
only (activations float); the paper's bias tuning with labels is replaced by AdaQuant's bias variable and the
BN re-estimation; BN is not folded into the convs in the simulation.

Paper: Hubara, Nahshan, Hanani, Banner & Soudry, "Improving Post Training Neural Quantization: Layer-wise
Calibration and Integer Programming", 2020 (https://arxiv.org/abs/2006.10518).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.quantization import _mixed_precision as mp
from suites.quantization._uniform import WeightQuantizer, fake_quantize, max_abs_step, quantizable_layer_names
from suites.quantization.base import QuantizationMethod, calibration_samples, int8_flatbuffer

ITERATIONS = {"smoke": 10, "quick": 50, "paper": 100}
SAMPLES = {"smoke": 32, "quick": 128, "paper": 128}
BATCH = 50
# Adam learning rates relative to each variable's scale (module docstring).
WEIGHT_RATE, BIAS_RATE, STEP_RATE, RANGE_RATE = 1e-3, 1e-2, 1e-2, 1e-2
FALLBACK_BIAS_LEARNING_RATE = 1e-3  # the official code's bias rate, for an all-zero bias
MIN_STEP = 1e-8


def _depthwise(kernel_shape: Any) -> bool:
    return len(kernel_shape) == 4 and kernel_shape[-1] == 1 and kernel_shape[-2] > 1


@keras.utils.register_keras_serializable(package="effbench.quantization")
class LearnedStepWeightQuantizer(WeightQuantizer):
    """:class:`~suites.quantization._uniform.WeightQuantizer` with a stored per-channel ``step`` (AdaQuant's).

    ``step`` is a non-trainable weight of the layer; while it is 0 (unset) a channel takes the max-abs step.
    """

    def build(self, input_shape: Any) -> None:
        channels = input_shape[-2] if _depthwise(input_shape) else input_shape[-1]
        self.step = self.add_weight("step", shape=(channels,), initializer="zeros", trainable=False)
        super().build(input_shape)

    def initial_step(self, kernel: tf.Tensor) -> tf.Tensor:
        moved = tf.transpose(kernel, (0, 1, 3, 2)) if _depthwise(kernel.shape) else kernel
        return max_abs_step(moved, self.bits)

    def call(self, kernel: tf.Tensor) -> tf.Tensor:
        depthwise = _depthwise(kernel.shape)
        moved = tf.transpose(kernel, (0, 1, 3, 2)) if depthwise else kernel
        step = tf.where(self.step > 0, self.step, max_abs_step(moved, self.bits))
        quantized = fake_quantize(moved, step, self.bits)
        return tf.transpose(quantized, (0, 1, 3, 2)) if depthwise else quantized


def weight_quantizer_of(layer: keras.layers.Layer) -> LearnedStepWeightQuantizer:
    return getattr(layer, "depthwise_quantizer", None) or layer.kernel_quantizer


class GroupAdam:
    """Adam (Kingma & Ba, betas 0.9 / 0.999, eps 1e-8) with a learning rate per variable: one fused op each.

    One per layer and bit width: Keras optimizers would trace their update function every time.
    """

    def __init__(self, rates: list[float], variables: list[tf.Variable]):
        self.rates, self.variables, self.count = rates, variables, 0
        self.moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]

    def step(self, gradients: list[tf.Tensor]) -> None:
        self.count += 1
        for gradient, variable, rate, (first, second) in zip(
            gradients, self.variables, self.rates, self.moments, strict=True
        ):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=first.handle, v=second.handle, beta1_power=0.9**self.count,
                beta2_power=0.999**self.count, lr=rate, beta1=0.9, beta2=0.999, epsilon=1e-8, grad=gradient,
            )  # fmt: skip


def _learning_rate(values: np.ndarray, relative: float, fallback: float) -> float:
    scale = float(np.std(values))
    return relative * scale if scale > 0 else fallback


def adaquant_layer(
    layer: keras.layers.Layer, x: np.ndarray, target: np.ndarray, iterations: int, seed: int
) -> tuple[float, float]:
    """AdaQuant on one larq layer in place (module docstring, (a)); the MSE on all of ``x`` before and after."""
    kernel, quantizer = mp.kernel_variable(layer), weight_quantizer_of(layer)
    quantizer.step.assign(quantizer.initial_step(kernel))
    groups = [([kernel], _learning_rate(kernel.numpy(), WEIGHT_RATE, FALLBACK_BIAS_LEARNING_RATE))]
    if layer.use_bias:
        groups.append(([layer.bias], _learning_rate(layer.bias.numpy(), BIAS_RATE, FALLBACK_BIAS_LEARNING_RATE)))
    groups.append(([quantizer.step], STEP_RATE * float(np.mean(quantizer.step.numpy()))))
    ranges = layer.input_quantizer
    if ranges is not None:
        ranges.low.assign(min(float(x.min()), 0.0))
        ranges.high.assign(max(float(x.max()), 0.0))
        groups.append(([ranges.low, ranges.high], RANGE_RATE * float(ranges.high - ranges.low)))
    variables = [variable for group, _ in groups for variable in group]
    optimizer = GroupAdam([rate for group, rate in groups for _ in group], variables)

    def error(inputs: np.ndarray, outputs: np.ndarray) -> tf.Tensor:
        return tf.reduce_mean((layer(inputs) - outputs) ** 2)

    before = float(error(x, target))
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        batch = rng.choice(len(x), size=min(BATCH, len(x)), replace=False)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = error(x[batch], target[batch])
        optimizer.step(tape.gradient(loss, variables))
        quantizer.step.assign(tf.maximum(quantizer.step, MIN_STEP))
        if ranges is not None:
            ranges.high.assign(tf.maximum(ranges.high, ranges.low + MIN_STEP))
    return before, float(error(x, target))


def layer_io(model: keras.Model, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input and output of layer ``name`` of ``model`` on ``x``."""
    layer = model.get_layer(name)
    inputs, outputs = keras.Model(model.inputs, [layer.input, layer.output])(x, training=False)
    return inputs.numpy(), outputs.numpy()


def layer_input(model: keras.Model, name: str, x: np.ndarray) -> np.ndarray:
    return keras.Model(model.inputs, model.get_layer(name).input)(x, training=False).numpy()


def batch_norm_statistics(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {
        layer.name: layer.get_weights() for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    }


def reestimate_batch_norm(model: keras.Model, x: np.ndarray) -> list[str]:
    """Set every BN layer's running mean and variance to its input's statistics on ``x``, in model order."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            inputs = layer_input(model, layer.name, x)
            mean, variance = tf.nn.moments(tf.constant(inputs), list(range(inputs.ndim - 1)))
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
            names.append(layer.name)
    return names


def tune_statistics(model: keras.Model, x: np.ndarray, reference: np.ndarray) -> bool:
    """BN re-estimation, kept only if it lowers the KL to the float outputs on ``x``; whether it was kept."""
    before, statistics = mp.mean_kl(reference, mp.predict(model, x)), batch_norm_statistics(model)
    if not reestimate_batch_norm(model, x):
        return False
    if mp.mean_kl(reference, mp.predict(model, x)) < before:
        return True
    for name, weights in statistics.items():
        model.get_layer(name).set_weights(weights)
    return False


def float_twin(float_model: keras.Model, quantized: keras.Model) -> keras.Model:
    """The float model holding the quantized model's (quantized) kernels, biases and BN statistics."""
    twin = keras.models.clone_model(float_model)
    twin.set_weights(float_model.get_weights())
    linear = set(quantizable_layer_names(twin))
    for layer in quantized.layers:
        target = twin.get_layer(layer.name)
        if layer.name in linear:
            mp.kernel_variable(target).assign(weight_quantizer_of(layer)(mp.kernel_variable(layer)))
            if layer.use_bias:
                target.bias.assign(layer.bias)
        elif isinstance(layer, keras.layers.BatchNormalization):
            target.set_weights(layer.get_weights())
    return twin


@register_method(
    "adaquant",
    suite="quantization",
    kind="compression",
    paper=Paper(
        "Improving Post Training Neural Quantization: Layer-wise Calibration and Integer Programming",
        2020,
        "https://arxiv.org/abs/2006.10518",
    ),
    summary="PTQ: per-layer AdaQuant (weights, bias and steps fitted to the float layer's output, STE), an "
    "integer program picking W{2,4,8} per layer under a size budget, BN re-estimation; A8",
    taxonomy=Taxonomy(weight_bits=4, activation_bits=8, applied="post-training", data="calibration"),
    scale="small-faithful",
)
class AdaQuant(QuantizationMethod):
    default_options: ClassVar[dict[str, Any]] = {**QuantizationMethod.default_options, "budgets": "4/6/8",
                                                 "keep_ends": True}  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.budgets = mp.parse_budgets(self.options["budgets"], "budgets")

    def deployable_names(self) -> tuple[str, ...]:
        return mp.budget_names("avg-bits", self.budgets)

    def loss_table(
        self, float_model: keras.Model, choices: dict[str, tuple[int, ...]], x: np.ndarray, iterations: int, seed: int
    ) -> dict[str, dict[int, float]]:
        """The integer program's table: KL to the float model with one layer at its parallel-AdaQuant weights."""
        reference = mp.predict(float_model, x)
        table: dict[str, dict[int, float]] = {name: {} for name in choices}
        for bits in mp.CANDIDATE_BITS:
            names = [name for name, widths in choices.items() if bits in widths]
            if not names:
                continue
            quantized = mp.fake_quantized(float_model, {name: (bits, mp.ACTIVATION_BITS) for name in names}, x,
                                          LearnedStepWeightQuantizer)  # fmt: skip
            for name in names:
                layer = quantized.get_layer(name)
                adaquant_layer(layer, *layer_io(float_model, name, x), iterations, seed)
                kernel = weight_quantizer_of(layer)(mp.kernel_variable(layer))
                with mp.weights_replaced(float_model.get_layer(name), kernel, layer.bias if layer.use_bias else None):
                    table[name][bits] = mp.mean_kl(reference, mp.predict(float_model, x))
        return table

    def calibrated(
        self, float_model: keras.Model, bits: dict[str, int], x: np.ndarray, iterations: int, seed: int
    ) -> tuple[keras.Model, bool]:
        """Sequential AdaQuant of the allocation, then BN re-estimation; the model, and whether BN was kept."""
        model = mp.fake_quantized(float_model, {name: (b, mp.ACTIVATION_BITS) for name, b in bits.items()}, x,
                                  LearnedStepWeightQuantizer)  # fmt: skip
        for name in bits:
            _, target = layer_io(float_model, name, x)
            adaquant_layer(model.get_layer(name), layer_input(model, name, x), target, iterations, seed)
        return model, tune_statistics(model, x, mp.predict(float_model, x))

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        x, calibration = calibration_samples(context, SAMPLES[context.budget])
        iterations = ITERATIONS[context.budget]
        names = quantizable_layer_names(float_model)
        kept = mp.ends_kept(names, self.options["keep_ends"])
        table = self.loss_table(float_model, mp.candidate_bits(names, kept), x, iterations, context.seed)
        sizes = mp.kernel_sizes(float_model, names)
        source = f"first {len(x)} training inputs"
        deployables = {}
        for name, budget in zip(self.deployable_names(), self.budgets, strict=True):
            allocation = mp.integer_program(table, sizes, mp.budget_bits(budget, sizes))
            model, bn_tuned = self.calibrated(float_model, allocation.bits, x, iterations, context.seed)
            deployables[name] = mp.budget_deployable(
                model, allocation.bits, sizes, budget,
                lambda model=model: int8_flatbuffer(float_twin(float_model, model), x, source),
                calibration, loss_delta=allocation.cost, kept_at_8_bits=list(kept), adaquant_iterations=iterations,
                bn_reestimated=bn_tuned,
            )  # fmt: skip
        return Artifact.of(deployables)
