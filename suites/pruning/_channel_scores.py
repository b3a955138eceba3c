r"""Channel pruning's shared mechanisms: BN gates, channel scores and selection, decoupled gate steps, facts.

The suite's structured methods (``polarization``, ``masksparsity``, ``oto-hesso``, ``pqi-sap``,
``class-dependent``) prune channels per :func:`effbench.channels.channel_groups` group ``g`` (its ``C_g``
channels are removed together from every producer and reader) and deploy the physically smaller model of
:func:`effbench.channels.remove_channels`. What they share is here.

- **Gates.** The batch norm right after a producer scales each of its output channels by :math:`\gamma_c`
  (the backbones are conv -> BN -> ReLU): :func:`gates` are the BN layers among a group's readers whose input
  is one of its producers' outputs. A residual group has one gate per producer.
- **BN-scale score** (:func:`bn_scale_scores`): :math:`s_{g,c} = \max_{b \in \text{gates}(g)} |\gamma_{b,c}|`;
  a channel of a residual group is dead only when every producer's gate is.
- **Selection** (:func:`lowest_channels`): the ``count`` lowest-scored channels over all groups together
  (global, as network slimming thresholds all scales at once), in ascending score order with ties broken by
  (group, channel) order, never taking a group's last channel. ``count = round(s \sum_g C_g)``:
  ``sparsity`` is the fraction of channels removed over all groups (:func:`removal_count`).
- **Decoupled gate step** (:class:`GateStep`): after every optimizer step, the gate scales are moved by the
  method's regulariser step :math:`\gamma \leftarrow \operatorname{update}(\gamma)` outside the optimizer,
  as AdamW decouples weight decay: Adam would divide a penalty's gradient in the loss by its running RMS and
  so move a scale by at most the learning rate per step, whatever the penalty's weight.
- **Facts** (:func:`channel_facts`): the target, the achieved channel sparsity, ``sparsity_by_layer`` (the
  fraction of each producer's output channels removed), and per group its kept count, original count and
  producers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from effbench.channels import ChannelGroup
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit


def gates(model: keras.Model, group: ChannelGroup) -> list[str]:
    """The batch norms among ``group``'s readers that read a producer's output directly, in reader order."""
    names = []
    for name in group.readers:
        layer = model.get_layer(name)
        if isinstance(layer, keras.layers.BatchNormalization) and producer_of(layer) in group.producers:
            names.append(name)
    return names


def producer_of(layer: keras.layers.Layer) -> str | None:
    """The name of the layer whose output ``layer`` reads (its only input), or None."""
    inbound = [tf.nest.flatten(node.inbound_layers) for node in layer.inbound_nodes]
    sources = {source.name for nodes in inbound for source in nodes}
    return sources.pop() if len(sources) == 1 else None


def gate_scales(model: keras.Model, groups: Sequence[ChannelGroup]) -> list[tf.Variable]:
    """Every gate's :math:`\\gamma` variable, group by group."""
    return [model.get_layer(name).gamma for group in groups for name in gates(model, group)]


def bn_scale_scores(model: keras.Model, groups: Sequence[ChannelGroup]) -> dict[int, np.ndarray]:
    """Group index -> :math:`\\max_b |\\gamma_{b,c}|` over the group's gates (module docstring)."""
    scores = {}
    for group in groups:
        names = gates(model, group)
        if not names:
            raise ValueError(f"channel group {group.index} (producers {', '.join(group.producers)}) has no batch "
                             "norm after its producers: BN-scale scores need conv -> BN")  # fmt: skip
        scales = [np.abs(np.asarray(model.get_layer(name).gamma)) for name in names]
        scores[group.index] = np.max(scales, axis=0)
    return scores


def removal_count(groups: Sequence[ChannelGroup], sparsity: float) -> int:
    """How many channels ``sparsity`` removes: :math:`\\operatorname{round}(s \\sum_g C_g)`."""
    return int(round(sparsity * sum(group.channels for group in groups)))


def lowest_channels(scores: Mapping[int, np.ndarray], count: int) -> dict[int, np.ndarray]:
    """Group -> sorted indices of the ``count`` lowest-scored channels over all groups (module docstring).

    A group keeps at least one channel; raises ``ValueError`` when ``count`` leaves some group empty.
    """
    capacity = sum(len(values) - 1 for values in scores.values())
    if count > capacity:
        raise ValueError(f"cannot remove {count} channels: the groups can lose {capacity} and keep one each")
    entries = sorted((float(value), group, channel) for group, values in scores.items()
                     for channel, value in enumerate(values))  # fmt: skip
    left = {group: len(values) for group, values in scores.items()}
    removed: dict[int, list[int]] = {group: [] for group in scores}
    taken = 0
    for _, group, channel in entries:
        if taken == count:
            break
        if left[group] > 1:
            removed[group].append(channel)
            left[group] -= 1
            taken += 1
    return {group: np.array(sorted(chosen), np.int64) for group, chosen in removed.items() if chosen}


def kept_channels(groups: Sequence[ChannelGroup], removed: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Group -> the sorted indices it keeps, for every group, once ``removed`` are gone."""
    return {group.index: np.setdiff1d(np.arange(group.channels), removed.get(group.index, [])) for group in groups}


def channel_facts(
    groups: Sequence[ChannelGroup], kept: Mapping[int, Sequence[int]], target: float
) -> dict[str, object]:
    """What a structured method decided (module docstring): JSON values, keyed by group index as text."""
    total = sum(group.channels for group in groups)
    left = {group.index: len(kept.get(group.index, range(group.channels))) for group in groups}
    by_layer = {name: round(1.0 - left[group.index] / group.channels, 6) for group in groups
                for name in group.producers}  # fmt: skip
    return {
        "sparsity_target": target,
        "channel_sparsity": round(1.0 - sum(left.values()) / total, 6),
        "sparsity_by_layer": by_layer,
        "kept_channels": {str(index): count for index, count in left.items()},
        "group_channels": {str(group.index): group.channels for group in groups},
        "group_producers": {str(group.index): list(group.producers) for group in groups},
    }


class GateStep(keras.callbacks.Callback):
    """After training step ``k``, ``scales <- update(scales, steps[k])``: a regulariser step outside the optimizer.

    ``scales`` are variables (the gates' :math:`\\gamma`); ``update`` maps their current values and the step
    size to new ones; ``steps`` are the sizes, one per training step (:func:`step_sizes`), the last one reused
    past the end. It holds the variables themselves, so it works whatever model ``fit`` trains (a modifier's
    wrapper).
    """

    def __init__(
        self,
        scales: Sequence[tf.Variable],
        update: Callable[[list[tf.Tensor], float], list[tf.Tensor]],
        steps: np.ndarray,
    ):
        super().__init__()
        self.scales, self.update, self.steps = list(scales), update, np.asarray(steps, np.float64)
        self.step = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        size = float(self.steps[min(self.step, len(self.steps) - 1)])
        for variable, value in zip(self.scales, self.update([v.value() for v in self.scales], size), strict=True):
            variable.assign(value)
        self.step += 1


def step_sizes(context: TrainContext, epochs: int, total: float) -> np.ndarray:
    """Per training step of ``epochs`` epochs, ``total`` split in proportion to the recipe's learning rate.

    An SGD step of a penalty is the learning rate times its gradient, so a decoupled regulariser whose steps
    sum to ``total`` moves in step with the optimizer: most while the rate is high, nothing once it is zero.
    """
    per_epoch = training_steps(context, 1)
    schedule = with_epochs(context, epochs).recipe.learning_rate_schedule(per_epoch)
    steps = per_epoch * epochs
    rates = np.array([float(schedule(k)) if callable(schedule) else float(schedule) for k in range(steps)])
    return total * rates / rates.sum() if rates.sum() > 0 else np.full(steps, total / steps)


def training_steps(context: TrainContext, epochs: int | None = None) -> int:
    """Optimizer steps of a ``fit`` over the run's training split for ``epochs`` (the recipe's by default)."""
    per_epoch = -(-len(context.splits.x_train) // context.recipe.batch_size)
    return per_epoch * (context.recipe.epochs if epochs is None else epochs)


def with_epochs(context: TrainContext, epochs: int) -> TrainContext:
    """``context`` whose recipe trains ``epochs`` epochs (same optimizer, schedule over those epochs)."""
    return dataclasses.replace(context, recipe=dataclasses.replace(context.recipe, epochs=epochs))


@dataclass
class TrainingLog:
    """The history and wall time of a method's several ``fit`` phases, concatenated epoch by epoch."""

    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def fit(self, model: keras.Model, context: TrainContext, epochs: int, **kwargs) -> None:
        """Train ``model`` for ``epochs`` epochs of the context's recipe (nothing for 0 epochs)."""
        if epochs <= 0:
            return
        history, seconds = fit(model, with_epochs(context, epochs), **kwargs)
        for name, values in history.items():
            self.history.setdefault(name, []).extend(values)
        self.seconds += seconds


def top1(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of ``x`` whose largest logit is its label ``y``."""
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), axis=-1) == y))
