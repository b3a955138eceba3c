r"""ZeroQ: data-free post-training quantization with distilled data and a Pareto-frontier bit allocation.

**Distilled data** (no real input is touched). Start from :math:`x \sim \mathcal{N}(0, 1)` (``batch`` inputs of the
task's shape) and minimise, with Adam on :math:`x`, the BatchNorm statistics loss of the trained float model

.. math:: \mathcal{L}_{BN}(x) = \sum_{i \in BN} \lVert \tilde\mu_i(x) - \mu_i \rVert_2^2
          + \lVert \tilde\sigma_i(x) - \sigma_i \rVert_2^2

where :math:`\tilde\mu_i, \tilde\sigma_i` are the per-channel mean and standard deviation, over the batch and the
positions, of BN layer :math:`i`'s input, and :math:`\mu_i, \sigma_i = \sqrt{\text{running var} + 10^{-6}}` its
running statistics (the model in inference mode). The gradient is the ordinary back-propagated one to the
inputs. Adam's learning rate is 0.5, cut by 10 when the loss has not improved for 100 iterations (floor
:math:`10^{-4}`), as in the official code (``distill_data.py``: 500 iterations, batch 32).

**Calibration**: every activation range (min/max, :func:`~suites.quantization._uniform.calibrate_activation_ranges`)
is set on the distilled batch; the 8/8 deployable's int8 flatbuffer is calibrated on it too (TFLite's
``representative_dataset``). Fact ``calibration = {"split": "none", "samples": N, "source": "distilled from BN
statistics"}``.

**Mixed precision**: per-layer sensitivity on the distilled data, one layer's weights quantized at a time
(per-channel max-abs grid, everything else float),

.. math:: \Omega_i(b) = \frac{1}{N} \sum_{x} \mathrm{KL}\big(\mathrm{softmax}(M(x)) \,\Vert\,
          \mathrm{softmax}(M_i^{b}(x))\big),\qquad b \in \{2, 4, 8\},

then the Pareto frontier of (size :math:`\sum_i n_i b_i`, total sensitivity :math:`\sum_i \Omega_i(b_i)`) over all
allocations by dynamic programming (:func:`~suites.quantization._mixed_precision.pareto_frontier`), and for each
size budget (option ``budgets``: average weight bits, ``"4/6/8"`` by default, the paper's MP4 / MP6 / W8 points)
the frontier's least-sensitive allocation that fits. Activations are 8-bit everywhere (W-mixed A8, as the
paper's mixed-precision tables). Each budget is a deployable: the first is the main one, the others
``avg-bits=<b>``; each is the Keras fake-quantized model (``simulated``), and an allocation that is 8 bits
everywhere also ships as the int8 flatbuffer of the float model (not simulated).

**Options.** ``budgets``; ``keep_ends`` (default true): the first and last layers stay at 8 bits, as is usual in
mixed-precision PTQ (AdaQuant keeps "all layers except the smallest two" high); ``keep_ends=false`` allocates
them too.

Deviations (small-faithful): distillation iterations scale with the budget (``smoke`` 20, ``quick`` 100,
``paper`` 500), batch 32 always; the loss uses batch statistics of each BN input, as the paper's equation,
where the official code matches each image's own per-channel statistics and adds an N(0, 1) term on the input
(here inputs keep the task's scale, so no input term). BN is not folded into the convs in the simulation (the
converter folds it in the int8 flatbuffer). Backbones without BatchNormalization (the ``mlp`` of vector tasks)
cannot be distilled: :class:`ValueError`.

Paper: Cai, Yao, Dong, Gholami, Mahoney & Keutzer, "ZeroQ: A Novel Zero Shot Quantization Framework", CVPR 2020
(https://arxiv.org/abs/2001.00281).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.quantization import _mixed_precision as mp
from suites.quantization._uniform import quantizable_layer_names
from suites.quantization.base import QuantizationMethod, int8_flatbuffer

DISTILL_ITERATIONS = {"smoke": 20, "quick": 100, "paper": 500}
DISTILL_BATCH = 32
LEARNING_RATE = 0.5
PLATEAU_PATIENCE = 100
PLATEAU_FACTOR = 0.1
MIN_LEARNING_RATE = 1e-4
STD_EPSILON = 1e-6
CALIBRATION = {"split": "none", "samples": DISTILL_BATCH, "source": "distilled from BN statistics"}


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def bn_statistics_loss(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """The BN-statistics loss of a batch of inputs (module docstring), read at every BN layer's input."""
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(
            f"zeroq distils its calibration data from BatchNormalization statistics, and backbone '{model.name}' "
            "has no BatchNormalization layer (the mlp of vector tasks): choose a backbone with BN"
        )
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    targets = [(layer.moving_mean, tf.sqrt(layer.moving_variance + STD_EPSILON)) for layer in layers]

    def loss(x: tf.Tensor) -> tf.Tensor:
        features = probe(x, training=False)
        features = features if isinstance(features, list) else [features]
        total = 0.0
        for feature, (mean, std) in zip(features, targets, strict=True):
            axes = list(range(len(feature.shape) - 1))
            batch_mean, batch_var = tf.nn.moments(feature, axes)
            total += tf.reduce_sum((batch_mean - mean) ** 2)
            total += tf.reduce_sum((tf.sqrt(batch_var + STD_EPSILON) - std) ** 2)
        return total

    return loss


def distill(model: keras.Model, iterations: int, batch: int, seed: int) -> tuple[np.ndarray, list[float]]:
    """ZeroQ's distilled batch and the BN-statistics loss at every iteration (the first is the noise's)."""
    loss = bn_statistics_loss(model)
    rng = np.random.default_rng(seed)
    x = tf.Variable(rng.standard_normal((batch, *model.input_shape[1:])).astype(np.float32))
    optimizer = keras.optimizers.Adam(LEARNING_RATE)

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            value = loss(x)
        optimizer.apply_gradients([(tape.gradient(value, x), x)])
        return value

    losses, best, stale = [], np.inf, 0
    for _ in range(iterations):
        losses.append(float(step()))
        best, stale = (losses[-1], 0) if losses[-1] < best * (1 - 1e-4) else (best, stale + 1)
        if stale > PLATEAU_PATIENCE:  # ReduceLROnPlateau(patience=100, factor=0.1, min_lr=1e-4)
            optimizer.learning_rate.assign(max(float(optimizer.learning_rate) * PLATEAU_FACTOR, MIN_LEARNING_RATE))
            stale = 0
    losses.append(float(loss(x)))
    return x.numpy(), losses


@register_method(
    "zeroq",
    suite="quantization",
    kind="compression",
    paper=Paper("ZeroQ: A Novel Zero Shot Quantization Framework", 2020, "https://arxiv.org/abs/2001.00281"),
    summary="data-free PTQ: inputs distilled from BN statistics calibrate the ranges; per-layer KL sensitivity "
    "on them, Pareto frontier of (size, sensitivity) by dynamic programming, one W{2,4,8}A8 model per size budget",
    taxonomy=Taxonomy(weight_bits=4, activation_bits=8, applied="post-training", data="none"),
    scale="small-faithful",
)
class ZeroQ(QuantizationMethod):
    default_options: ClassVar[dict[str, Any]] = {**QuantizationMethod.default_options, "budgets": "4/6/8",
                                                 "keep_ends": True}  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.budgets = mp.parse_budgets(self.options["budgets"], "budgets")

    def deployable_names(self) -> tuple[str, ...]:
        return mp.budget_names("avg-bits", self.budgets)

    def quantize(self, float_model: keras.Model, context: TrainContext) -> Artifact:
        bn_statistics_loss(float_model)  # a backbone without BN fails here, before any work
        iterations = DISTILL_ITERATIONS[context.budget]
        distilled, losses = distill(float_model, iterations, DISTILL_BATCH, context.seed)
        names = quantizable_layer_names(float_model)
        choices = mp.candidate_bits(names, mp.ends_kept(names, self.options["keep_ends"]))
        reference = mp.predict(float_model, distilled)
        table = mp.single_layer_table(
            float_model, choices, lambda: mp.mean_kl(reference, mp.predict(float_model, distilled))
        )
        sizes = mp.kernel_sizes(float_model, names)
        frontier = mp.pareto_frontier(table, sizes)
        distillation = {"iterations": iterations, "batch": DISTILL_BATCH, "bn_loss_initial": losses[0],
                        "bn_loss_final": losses[-1]}  # fmt: skip
        kept = list(mp.ends_kept(names, self.options["keep_ends"]))
        deployables = {}
        for name, budget in zip(self.deployable_names(), self.budgets, strict=True):
            point = mp.cheapest_within(frontier, mp.budget_bits(budget, sizes))
            model = mp.fake_quantized(float_model, {n: (b, mp.ACTIVATION_BITS) for n, b in point.bits.items()},
                                      distilled)  # fmt: skip
            deployables[name] = mp.budget_deployable(
                model, point.bits, sizes, budget,
                lambda: int8_flatbuffer(float_model, distilled, "ZeroQ's batch distilled from the BN statistics"),
                CALIBRATION, sensitivity=point.cost, kept_at_8_bits=kept,
                distillation=distillation, frontier_points=len(frontier),
            )  # fmt: skip
        return Artifact.of(deployables)
