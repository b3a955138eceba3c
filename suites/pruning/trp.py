r"""Trained Rank Pruning: low-rank projections and a nuclear-norm penalty while fine-tuning, then factorised layers.

Every conv / dense kernel is seen as a matrix :math:`W \in \mathbb{R}^{K \times C_{out}}`, the kernel
reshaped to :math:`(k_h k_w C_{in}, C_{out})` (:math:`K = C_{in}` for a dense layer), with singular values
:math:`\sigma_1 \ge \sigma_2 \ge \dots` and SVD :math:`W = U \Sigma V^\top`.

- **Rank** (option ``energy`` :math:`e`): the smallest :math:`r` whose singular values hold the share
  :math:`e` of the energy, :math:`\sum_{i \le r} \sigma_i^2 \ge e \sum_i \sigma_i^2` (the official code's
  ``EnergyThreshold`` on :math:`\sigma^2`, 0.99 in its training loop).
- **Low-rank projection**, every ``period`` training steps :math:`m` (before the step):
  :math:`W \leftarrow T_e(W) = U_r \Sigma_r V_r^\top`, so the step's forward pass uses the rank-:math:`r`
  kernel and its gradient updates it (the paper's figure 1(b)).
- **Nuclear-norm regulariser** (option ``nuclear`` :math:`\lambda`): the loss adds
  :math:`\lambda \sum_l \lVert W_l \rVert_* = \lambda \sum_l \sum_i \sigma_i(W_l)`, minimised by stochastic
  sub-gradient descent with the sub-gradient
  :math:`\partial \lVert W \rVert_* \ni U_r V_r^\top` (the official code's ``torch.mm(N, C)`` after truncation:
  a sub-gradient of the nuclear norm of the projected kernel, whose other singular values are zero).
- **Deploy**: after fine-tuning, a last projection fixes each kernel at rank :math:`r`, and the layer is
  replaced by two: :math:`A = U_r \Sigma_r^{1/2}` as a :math:`k_h \times k_w` conv (the layer's strides,
  padding and dilation) to :math:`r` channels, then :math:`B = \Sigma_r^{1/2} V_r^\top` as a 1x1 conv to
  :math:`C_{out}` with the layer's bias and activation (a dense layer: ``Dense(r)`` then ``Dense(C_out)``).
  By linearity :math:`x * A * B = x * (AB) = x * T_e(W)`: the factorised model computes what the projected
  one does. A layer is factorised only where that is smaller, :math:`r (K + C_{out}) < K C_{out}` (its MACs
  fall by the same ratio); otherwise it keeps its rank-:math:`r` kernel in one layer. The pair is a nested
  ``Sequential`` under the layer's name, built by :func:`effbench.graph.rewrite`, so params and MACs fall
  for real. Facts: ``ranks`` (and ``full_ranks``) per layer, which layers were ``factorised``.

Paper: Xu et al., "Trained Rank Pruning for Efficient Deep Neural Networks", 2019 (IJCAI 2020 as "TRP: Trained
Rank Pruning for Efficient Deep Neural Networks"), https://arxiv.org/abs/1812.02402; code:
github.com/yuhuixu1993/Trained-Rank-Pruning (``cifar-TRP.py``, ``decompose.py``). Defaults are that code's:
:math:`e = 0.99`, :math:`\lambda = 3 \cdot 10^{-4}`, a projection before every step (:math:`m = 1`).

Deviations: the brief's channel-wise scheme (the code's ``channel_decompose``, the paper's "TRP1"); the
official CIFAR script trains with the spatial-wise one (``VH_decompose``, :math:`k \times 1` then
:math:`1 \times k`). Every conv / dense kernel is projected and factorised (the script leaves out the first
conv, 1x1 convs and the classifier, and decouples only stride-1 convs). TRP fine-tunes the trained twin
with the task's fine-tune recipe (the paper's ImageNet setting; on CIFAR it trains from scratch), whose
optimizer also takes the penalty's sub-gradient (the code adds it to SGD's gradient). The deployed rank is
the energy rule's (the code's decoupling truncates singular values below 0.01 instead; after the last
projection the kernels are exactly rank :math:`r`, so both give :math:`r` up to that threshold).
Depthwise and grouped convolutions are left as they are. Low rank is not sparsity: the ``sparsity`` option
does not apply (0 only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from effbench.graph import rewrite, transfer_weights
from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.pruning._masks import prunable_layers
from suites.pruning.base import PruningMethod

L = keras.layers
FACTORISABLE = (L.Conv1D, L.Conv2D, L.Dense)


def energy_rank(singular_values: tf.Tensor, energy: float) -> tf.Tensor:
    r"""The smallest :math:`r` with :math:`\sum_{i \le r} \sigma_i^2 \ge e \sum_i \sigma_i^2` (descending values)."""
    squares = tf.square(singular_values)
    total = tf.maximum(tf.reduce_sum(squares), 1e-30)  # an all-zero kernel keeps rank 1
    held = tf.cumsum(squares) / total
    # The last share is 1 up to rounding: never keep more values than there are.
    rank = tf.reduce_sum(tf.cast(held < energy, tf.int32)) + 1
    return tf.minimum(rank, tf.size(singular_values))


def kernel_matrix(kernel: tf.Tensor) -> tf.Tensor:
    """A conv / dense kernel as the matrix :math:`(k_h k_w C_{in}, C_{out})`."""
    return tf.reshape(kernel, (-1, kernel.shape[-1]))


def truncated_svd(matrix: tf.Tensor, energy: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    r""":math:`(U_r, \sigma_{1..r}, V_r)` of ``matrix`` at the energy rank."""
    values, left, right = tf.linalg.svd(matrix)
    rank = energy_rank(values, energy)
    return left[:, :rank], values[:rank], right[:, :rank]


def nuclear_norm(matrix: tf.Tensor, energy: float) -> tf.Tensor:
    r""":math:`\lVert W \rVert_* = \sum_i \sigma_i`, whose gradient is the sub-gradient :math:`U_r V_r^\top`."""

    @tf.custom_gradient
    def norm(w: tf.Tensor) -> tuple[tf.Tensor, Any]:
        values = tf.linalg.svd(w, compute_uv=False)
        left, _, right = truncated_svd(w, energy)

        def subgradient(upstream: tf.Tensor) -> tf.Tensor:
            return upstream * tf.matmul(left, right, transpose_b=True)

        return tf.reduce_sum(values), subgradient

    return norm(matrix)


def factorisable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Conv / dense layers whose kernel is one matrix (no grouped convs), channels-last."""
    return [
        layer for layer in prunable_layers(model)
        if getattr(layer, "groups", 1) == 1 and getattr(layer, "data_format", "channels_last") == "channels_last"
    ]  # fmt: skip


def project(layers: Sequence[keras.layers.Layer], energy: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Set each kernel to its rank-:math:`r` projection; name -> the factors :math:`(A, B)`, :math:`AB = T_e(W)`."""
    factors = {}
    for layer in layers:
        left, values, right = truncated_svd(kernel_matrix(layer.kernel), energy)
        root = tf.sqrt(values)
        first, second = left * root, tf.transpose(right * root)
        layer.kernel.assign(tf.reshape(tf.matmul(first, second), layer.kernel.shape))
        factors[layer.name] = (first.numpy(), second.numpy())
    return factors


class RankProjection(keras.callbacks.Callback):
    """Projects the kernels of ``layers`` (by name) to their energy rank before every ``period``-th step."""

    def __init__(self, layers: Sequence[str], energy: float, period: int):
        super().__init__()
        self.names, self.energy, self.period = list(layers), energy, period
        self.step = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.step % self.period == 0:
            project([self.model.get_layer(name) for name in self.names], self.energy)
        self.step += 1


def smaller_when_factorised(rows: int, columns: int, rank: int) -> bool:
    """Whether :math:`r (K + C_{out}) < K C_{out}`: two thin layers hold (and compute) less than one."""
    return rank * (rows + columns) < rows * columns


def _pair(layer: keras.layers.Layer, rank: int) -> keras.Sequential:
    """The layer as (k x k conv / dense to ``rank``) then (1x1 conv / dense to its outputs), under its name."""
    config = layer.get_config()
    head = {"use_bias": False, "name": f"{layer.name}_basis"}
    tail = {"activation": config["activation"], "use_bias": config["use_bias"], "name": f"{layer.name}_mix"}
    if isinstance(layer, L.Dense):
        first, second = L.Dense(rank, **head), L.Dense(config["units"], **tail)
    else:
        shape = {key: config[key] for key in ("kernel_size", "strides", "padding", "dilation_rate")}
        first, second = type(layer)(rank, **shape, **head), type(layer)(config["filters"], 1, **tail)
    return keras.Sequential([first, second], name=layer.name)


def factorise(model: keras.Model, factors: dict[str, tuple[np.ndarray, np.ndarray]]) -> keras.Model:
    """A copy of ``model`` whose layers in ``factors`` are each two layers holding :math:`A` and :math:`B`."""

    def rule(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        return _pair(layer, factors[layer.name][0].shape[1]) if layer.name in factors else None

    def transfer(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
        if source.name not in factors:
            transfer_weights(source, target)
            return
        first, second = target.layers
        basis, mix = factors[source.name]
        first.kernel.assign(basis.reshape(first.kernel.shape))
        second.kernel.assign(mix.reshape(second.kernel.shape))
        if source.use_bias:
            second.bias.assign(source.bias)

    return rewrite(model, rule, transfer)


@register_method(
    "trp",
    suite="pruning",
    kind="training",
    paper=Paper("Trained Rank Pruning for Efficient Deep Neural Networks", 2019, "https://arxiv.org/abs/1812.02402"),
    summary="low-rank projections + nuclear-norm sub-gradient while fine-tuning; deploys factorised conv/dense pairs",
    taxonomy=Taxonomy(structured=None, applied="training"),
)
class TrainedRankPruning(PruningMethod):
    """Options: ``energy`` (rank rule), ``nuclear`` (the penalty's weight), ``period`` (steps between projections)."""

    default_options = {**PruningMethod.default_options, "sparsity": 0.0, "energy": 0.99, "nuclear": 3e-4, "period": 1}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["sparsity"] != 0:
            raise ValueError("trp prunes ranks, not weights: its option sparsity does not apply (leave it at 0); "
                             "set energy for the rank")  # fmt: skip
        if not 0 < self.options["energy"] <= 1:
            raise ValueError(f"trp energy must be in (0, 1]; got {self.options['energy']!r}")
        if not isinstance(self.options["period"], int) or self.options["period"] < 1:
            raise ValueError(f"trp period must be a whole number of steps >= 1; got {self.options['period']!r}")
        if self.options["nuclear"] < 0:
            raise ValueError(f"trp nuclear must be >= 0; got {self.options['nuclear']!r}")

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        energy, weight = self.options["energy"], self.options["nuclear"]
        layers = factorisable_layers(model)
        if weight:
            model.add_loss(lambda: weight * tf.add_n([nuclear_norm(kernel_matrix(lr.kernel), energy) for lr in layers]))
        projection = RankProjection([layer.name for layer in layers], energy, self.options["period"])
        history, seconds = fit(model, context, callbacks=[projection])
        factors = project(layers, energy)
        ranks = {name: int(basis.shape[1]) for name, (basis, _) in factors.items()}
        full = {layer.name: int(min(kernel_matrix(layer.kernel).shape)) for layer in layers}
        thinner = {
            name: pair for name, pair in factors.items()
            if smaller_when_factorised(pair[0].shape[0], pair[1].shape[1], ranks[name])
        }  # fmt: skip
        facts = {"energy": energy, "ranks": ranks, "full_ranks": full, "factorised": sorted(thinner)}
        return Artifact(factorise(model, thinner), history, seconds, facts=facts)
