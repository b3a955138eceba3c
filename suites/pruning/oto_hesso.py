r"""OTO / HESSO: zero-invariant channel groups from the graph, progressively driven to exactly zero while training.

**Zero-invariant groups** (OTOv2/v3's search space). Every channel ``c`` of a
:func:`effbench.channels.channel_groups` group is one group of variables :math:`x_c`: the output filter and bias
of each producer, the scale and shift of each batch norm reader, the filter and bias of each depthwise reader,
each PReLU slope (:func:`channel_variables`). When they are all zero the channel is exactly zero wherever it is
read (a batch norm with :math:`\gamma = \beta = 0` outputs 0 whatever its statistics), so removing it changes
nothing: the physically smaller model of :func:`effbench.channels.remove_channels` computes what the trained
one does, with no fine-tune (the run records the largest difference, ``removal_max_abs_error``).

**HESSO** (the repository's ``only_train_once/optimizer/hesso.py``), over the recipe's :math:`S` steps, with
the recipe's optimizer as the baseline step:

1. warm-up: the first ``warmup`` :math:`\cdot S` steps train as they are;
2. ``periods`` :math:`P` pruning periods of :math:`T` steps each (``pruning`` :math:`\cdot S` in all). At the
   start of period :math:`p` the saliency of every live channel is computed and the
   :math:`K_p` lowest (over all groups, none emptied) become *redundant*, :math:`\sum_p K_p = K` =
   ``round(sparsity`` :math:`\cdot \sum_g C_g)`, :math:`K_p = \lfloor K / P \rfloor` (the last takes the rest);
3. at local step :math:`t = 0 .. T-1` of the period, after the baseline step, the redundant channels are scaled
   :math:`x_c \leftarrow \frac{T - t - 1}{T - t} x_c` (after :math:`t + 1` steps they are at
   :math:`\frac{T - t - 1}{T}` of the baseline's trajectory, exactly 0 at :math:`t = T - 1`), then committed:
   every pruned channel is set back to 0 after every later step;
4. the rest of the run trains the survivors.

**Saliency** (the repository's default ``importance_score_criteria``, weights 0.2 each), from the gradient
:math:`g_c` of the task loss on a batch of the training split: magnitude :math:`\|x_c\|`, average magnitude
:math:`\|x_c\| / |x_c|`, cosine similarity :math:`\frac{x_c \cdot g_c}{\|x_c\|\|g_c\|} + 1`, first-order Taylor
:math:`|x_c \cdot g_c|`, second-order Taylor :math:`\frac12 (x_c \cdot g_c)^2`; each criterion divided by its
L2 norm over all channels, then summed (:func:`hesso_saliency`). Lowest = most redundant.

**Half-space projection** (OTOv2/v3's DHSPG, added on the redundant channels): a redundant channel whose
update leaves the half-space :math:`\{x : x \cdot x_{\text{old}} > 0\}` (its value before the step) is set
exactly to zero at once and committed; the run counts them (``halfspace_projections``).

Papers: Chen, Qu, Aponte, Banbury, Ko, Ding, Ma, Lyapunov, Zharkov & Liang, "HESSO: Towards Automatic Efficient
and User Friendly Any Neural Network Training and Pruning", 2024 (https://arxiv.org/abs/2409.09085); the OTOv3
entry of the roster ("OTOv3: Automatic Architecture-Agnostic Neural Network Training and Compression from
Structured Pruning to Erasing Operators", Chen et al. 2023) for the search space and the half-space projection;
code github.com/tianyic/only_train_once (HESSO, ``importance_score/``, tutorial 01: ``start_pruning_step`` 10 of
100 epochs, ``pruning_periods`` 10, ``pruning_steps`` 10 epochs, ``target_group_sparsity`` 0.7).

Deviations. Groups come from :func:`effbench.channels.channel_groups` (conv / dense channels; OTO's graph also
groups attention heads and erases operators, which the suite's backbones do not need). The saliency gradient
is the raw gradient of one batch (256 training examples), not the optimizer's running gradient variant. The
repository decays over :math:`T - 1` steps of each period (its first step identifies); here over all
:math:`T`. The half-space projection is DHSPG's, not in the HESSO code; CRIC (the corrective cycle) is not
implemented. ``small-faithful``: the suite's digits / mnist1d scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from effbench.channels import ChannelGroup, channel_groups, remove_channels
from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, task_loss
from suites.pruning._channel_scores import (
    TrainingLog,
    channel_facts,
    kept_channels,
    lowest_channels,
    removal_count,
    training_steps,
)
from suites.pruning.base import INIT, PruningMethod

L = keras.layers
CRITERIA = ("magnitude", "avg_magnitude", "cosine_similarity", "taylor_first_order", "taylor_second_order")
SALIENCY_EXAMPLES = 256
EPSILON = 1e-8


def channel_variables(model: keras.Model, group: ChannelGroup) -> list[tuple[tf.Variable, int]]:
    """(variable, axis holding the group's channels) of every weight in the group's zero-invariant groups."""
    found = []
    for name in group.producers:
        layer = model.get_layer(name)
        kernel = layer.pointwise_kernel if isinstance(layer, L.SeparableConv2D) else layer.kernel
        found.append((kernel, kernel.shape.rank - 1))
        if layer.use_bias:
            found.append((layer.bias, 0))
    for name in group.readers:
        layer = model.get_layer(name)
        if isinstance(layer, L.BatchNormalization):
            found += [(weight, 0) for weight in (layer.gamma, layer.beta) if weight is not None]
        elif isinstance(layer, L.DepthwiseConv2D):
            found.append((layer.depthwise_kernel, 2))
            if layer.use_bias:
                found.append((layer.bias, 0))
        elif isinstance(layer, L.PReLU):
            found.append((layer.alpha, layer.alpha.shape.rank - 1))
    return found


def per_channel(value: np.ndarray, axis: int) -> np.ndarray:
    """``value`` as (channels, everything else)."""
    return np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)


def hesso_saliency(norm_sq: np.ndarray, dot: np.ndarray, grad_sq: np.ndarray, size: np.ndarray) -> np.ndarray:
    """HESSO's combined saliency of channels with :math:`\\|x\\|^2`, :math:`x \\cdot g`, :math:`\\|g\\|^2` and
    element counts given (module docstring); all channels of the network at once."""
    norm, grad_norm = np.sqrt(norm_sq), np.sqrt(grad_sq)
    criteria = {
        "magnitude": norm,
        "avg_magnitude": norm / size,
        "cosine_similarity": dot / (norm + EPSILON) / (grad_norm + EPSILON) + 1.0,
        "taylor_first_order": np.abs(dot),
        "taylor_second_order": 0.5 * dot**2,
    }
    weight = 1.0 / len(CRITERIA)
    return sum(weight * criteria[name] / (np.linalg.norm(criteria[name]) + EPSILON) for name in CRITERIA)


@dataclass(frozen=True)
class HessoPlan:
    """When HESSO prunes: ``start`` (warm-up steps), ``period_steps`` :math:`T`, and :math:`K_p` per period."""

    start: int
    period_steps: int
    counts: tuple[int, ...]

    @classmethod
    def build(cls, total_steps: int, warmup: float, pruning: float, periods: int, target: int) -> "HessoPlan":
        pruning_steps = max(1, int(pruning * total_steps))
        periods = max(1, min(periods, pruning_steps))
        period_steps = pruning_steps // periods
        start = min(int(warmup * total_steps), max(0, total_steps - periods * period_steps))
        share = target // periods
        return cls(start, period_steps, (share,) * (periods - 1) + (target - share * (periods - 1),))

    def period(self, step: int) -> tuple[int, int] | None:
        """(period, local step t) at global step ``step`` (0-based), or None outside the pruning periods."""
        offset = step - self.start
        if not 0 <= offset < self.period_steps * len(self.counts):
            return None
        return offset // self.period_steps, offset % self.period_steps


class Hesso(keras.callbacks.Callback):
    """HESSO's pruning around the recipe optimizer's steps (module docstring); ``pruned`` are exact zeros."""

    def __init__(self, model: keras.Model, groups: list[ChannelGroup], plan: HessoPlan, batch: tuple, loss):
        super().__init__()
        self.source, self.plan, self.batch, self.loss = model, plan, batch, loss
        self.variables = {group.index: channel_variables(model, group) for group in groups}
        self.pruned = {group.index: np.zeros(group.channels, bool) for group in groups}
        self.active = {group.index: np.zeros(group.channels, bool) for group in groups}
        self.step = 0
        self.halfspace_projections = 0
        self._old: dict[int, list[np.ndarray]] = {}

    def saliency(self) -> dict[int, np.ndarray]:
        """Group -> HESSO's saliency of each of its channels, on the saliency batch."""
        x, y = self.batch
        flat = [variable for entries in self.variables.values() for variable, _ in entries]
        with tf.GradientTape() as tape:
            loss = self.loss(y, self.source(x, training=False))
        grads = dict(zip((id(v) for v in flat), tape.gradient(loss, flat), strict=True))
        parts = {}
        for index, entries in self.variables.items():
            sums = np.zeros((4, len(self.pruned[index])))
            for variable, axis in entries:
                value = per_channel(np.asarray(variable), axis)
                grad = per_channel(np.asarray(grads[id(variable)]), axis)
                size = np.full(len(value), value.shape[1])
                sums += [(value**2).sum(1), (value * grad).sum(1), (grad**2).sum(1), size]
            parts[index] = sums
        order = list(parts)
        scores = hesso_saliency(*np.concatenate([parts[i] for i in order], axis=1))
        sizes = np.cumsum([0] + [parts[i].shape[1] for i in order])
        return {index: scores[sizes[k] : sizes[k + 1]] for k, index in enumerate(order)}

    def identify(self, count: int) -> None:
        """Mark the ``count`` lowest-saliency live channels redundant (no group loses its last channel)."""
        scores = self.saliency()
        alive = {index: np.flatnonzero(~pruned) for index, pruned in self.pruned.items()}
        count = min(count, sum(len(indices) - 1 for indices in alive.values()))
        chosen = lowest_channels({index: scores[index][indices] for index, indices in alive.items()}, count)
        for index, positions in chosen.items():
            self.active[index][alive[index][positions]] = True

    def commit(self) -> None:
        for index, active in self.active.items():
            self.pruned[index] |= active
            active[:] = False

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        where = self.plan.period(self.step)
        if where is not None and where[1] == 0:
            self.commit()
            self.identify(self.plan.counts[where[0]])
        self._old = {index: [np.asarray(v) for v, _ in self.variables[index]]
                     for index, active in self.active.items() if active.any()}  # fmt: skip

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        where = self.plan.period(self.step)
        for index, entries in self.variables.items():
            active, pruned = self.active[index], self.pruned[index]
            if not (active.any() or pruned.any()):
                continue
            factor = np.ones(len(active), np.float32)
            if active.any() and where is not None:
                t, steps = where[1], self.plan.period_steps
                factor[active] = (steps - t - 1) / (steps - t)
            factor[pruned] = 0.0
            values = [np.asarray(variable) for variable, _ in entries]
            scaled = [value * factor.reshape([-1 if k == axis % value.ndim else 1 for k in range(value.ndim)])
                      for value, (_, axis) in zip(values, entries, strict=True)]  # fmt: skip
            if index in self._old:
                inner = sum((per_channel(old, axis) * per_channel(new, axis)).sum(1)
                            for old, new, (_, axis) in zip(self._old[index], scaled, entries, strict=True))  # fmt: skip
                crossed = active & (inner <= 0) & (factor > 0)
                if crossed.any():
                    self.halfspace_projections += int(crossed.sum())
                    for value, (_, axis) in zip(scaled, entries, strict=True):
                        np.moveaxis(value, axis, 0)[crossed] = 0.0
                    pruned |= crossed
                    active &= ~crossed
            for (variable, _), value in zip(entries, scaled, strict=True):
                variable.assign(value)
        if where is not None and where[1] == self.plan.period_steps - 1:
            self.commit()
        self.step += 1


@register_method(
    "oto-hesso",
    suite="pruning",
    kind="training",
    paper=Paper(
        "HESSO: Towards Automatic Efficient and User Friendly Any Neural Network Training and Pruning",
        2024,
        "https://arxiv.org/abs/2409.09085",
    ),
    summary="zero-invariant channel groups from the graph; HESSO (warm-up, saliency-selected redundant groups "
    "decayed to exact zero per period, half-space projection) in one training run; zero groups removed exactly",
    taxonomy=Taxonomy(structured=True, applied="training", data="labelled"),
    scale="small-faithful",
)
class OtoHesso(PruningMethod):
    """Options: ``sparsity`` (0.7, the repository tutorial's ``target_group_sparsity``; the fraction of all
    groups' channels), ``warmup`` (0.1 of the steps), ``pruning`` (0.1 of the steps), ``periods`` (10),
    ``backbone``."""

    default_options: ClassVar[dict[str, Any]] = {
        **PruningMethod.default_options, "sparsity": 0.7, "warmup": 0.1, "pruning": 0.1, "periods": 10,
    }  # fmt: skip
    starts_from: ClassVar[str] = INIT

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        groups = channel_groups(model)
        total = training_steps(context)
        o = self.options
        plan = HessoPlan.build(total, o["warmup"], o["pruning"], o["periods"], removal_count(groups, o["sparsity"]))
        splits = context.splits
        chosen = np.random.default_rng(context.seed).permutation(len(splits.x_train))[:SALIENCY_EXAMPLES]
        hesso = Hesso(model, groups, plan, (splits.x_train[chosen], splits.y_train[chosen]),
                      task_loss(context.task.spec))  # fmt: skip
        log = TrainingLog()
        log.fit(model, context, context.recipe.epochs, callbacks=[hesso])

        kept = kept_channels(groups, {index: np.flatnonzero(pruned) for index, pruned in hesso.pruned.items()})
        small = remove_channels(model, kept)
        probe = splits.x_val[:64]
        error = np.abs(model.predict(probe, verbose=0) - small.predict(probe, verbose=0)).max()
        facts = {
            **channel_facts(groups, kept, o["sparsity"]),
            "halfspace_projections": hesso.halfspace_projections,
            "removal_max_abs_error": float(error),
            "warmup_steps": plan.start,
            "period_steps": plan.period_steps,
            "periods": len(plan.counts),
        }
        return Artifact(small, log.history, log.seconds, facts=facts)
