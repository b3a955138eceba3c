r"""Activating-while-Pruning (AP): de-sparsify a pruned network's ReLUs by pruning its stagnant negative weights.

AP is not a pruning criterion of its own: it works in tandem with one (here ``gmp``, TFMOT's magnitude
pruning) and lowers the *dynamic dead neuron rate* of the pruned network, the share of ReLU outputs that are
zero. For ReLU units :math:`a_u(x) = \max(0, z_u(x))` (every element of every ReLU output: a conv feature
map's positions and channels, a dense layer's units) over inputs :math:`x_1..x_N`:

.. math::

    \mathrm{DNR} = \frac{1}{N |\mathcal{U}|} \sum_{n} \sum_{u} 1[a_u(x_n) = 0], \qquad
    \text{never-active rate} = \frac{1}{|\mathcal{U}|} \sum_{u} 1[\forall n: a_u(x_n) = 0].

The paper finds that the more a network is pruned, the lower its DNR gets during optimisation, and that
pushing it lower helps: AP *selectively activates* units. A unit is dead where its pre-activation
:math:`z_u = \sum_j w_{uj} a_j + b_u` is negative, and the weights that keep it negative and barely move
are the negative ones that changed least; removing them raises :math:`z_u` and re-activates the unit. So,
with the base method's masks :math:`M` and the weights :math:`W^{(0)}` at the start of a training cycle and
:math:`W` after it, AP prunes the :math:`n_{AP}` surviving negative weights of smallest change

.. math::

    \mathcal{A} = \operatorname{argsmallest}_{n_{AP}} \{\, |w - w^{(0)}| : M_w = 1,\ w < 0 \,\}, \qquad
    M_w \leftarrow 0 \text{ for } w \in \mathcal{A},

over all the base method's pruned kernels at once (the official code's ``prune_by_percentile_ap``), and
training goes on with the new masks.

Here: ``ap-activate:sparsity=s`` starts from the ``gmp`` model pruned to :math:`s - a` (option ``activate``
:math:`a`, the fraction of the pruned kernels' weights AP removes, 0.02 as in the code's
``ap_pruning_rate = 2``), declared as its ``trained`` upstream, so the total sparsity is :math:`s` as in
the paper, where the base method prunes :math:`p - 2\%` and AP the other 2%. It fine-tunes that model with
the task's fine-tune recipe, pruned weights held at zero (``MaskKeeper``); the first half of the steps is
the cycle whose weight changes AP measures, AP prunes :math:`n_{AP} = \mathrm{round}(a \cdot |W|)` weights
at the half-way step, and the second half retrains the network with them removed. The deployed model is
the masked one (zeros in place). Facts: the DNR and never-active rate before (the ``gmp`` model as it
came) and after, on up to 256 training inputs in inference mode; ``sparsity_by_layer``; ``base`` (the
upstream's reference) and ``activated_weights``.

Paper: Liu, Ghosh, Tan & Motani, "AP: Selective Activation for De-sparsifying Pruned Networks", TMLR 2023
(https://arxiv.org/abs/2212.06145); code: github.com/Martin1937/Activate-While-Pruning (``resnet_20.py``).
Deviations: the code runs AP in every cycle of iterative pruning with lottery-ticket rewinding; here one AP
step follows the base method's whole pruning schedule and nothing is rewound (gmp does not rewind). The
DNR is measured in inference mode on a fixed probe batch, not during optimisation. AP acts only on the
kernels the base method pruned (the code: every weight tensor), so a layer the base method keeps dense
stays dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from effbench.graph import RELU_NAMES, is_relu_layer
from effbench.method import Artifact, MethodRef
from effbench.registry import Paper, TaskSpec, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.pruning._masks import MaskKeeper, Masks, prunable_layers, sparsity_facts
from suites.pruning.base import TRAINED, PruningMethod

BASE_METHOD = "gmp"
PROBE_SAMPLES = 256
PROBE_BATCH = 64


@dataclass(frozen=True)
class DeadNeurons:
    """The dynamic dead neuron rate and the never-active rate of a model's ReLU units (module docstring)."""

    rate: float
    never_active: float
    units: int


def relu_outputs(model: keras.Model) -> list[tf.Tensor]:
    """The outputs of the model's ReLUs: ReLU layers, and layers with a ReLU ``activation`` argument."""
    return [
        layer.output for layer in model.layers
        if is_relu_layer(layer) or layer.get_config().get("activation") in RELU_NAMES
    ]  # fmt: skip


def dead_neurons(model: keras.Model, inputs: np.ndarray) -> DeadNeurons:
    """How many of the ReLU outputs are zero over ``inputs`` (inference mode), counted batch by batch."""
    outputs = relu_outputs(model)
    if not outputs:
        raise ValueError(f"model '{model.name}' has no ReLU: there is no dead neuron rate to control")
    probe = keras.Model(model.inputs, outputs)
    zeros, seen, active = 0, 0, None
    for start in range(0, len(inputs), PROBE_BATCH):
        values = probe(inputs[start : start + PROBE_BATCH], training=False)
        values = values if isinstance(values, list) else [values]
        flat = np.concatenate([np.reshape(v.numpy(), (len(v), -1)) for v in values], axis=1) > 0
        zeros, seen = zeros + int(flat.size - flat.sum()), seen + flat.size
        active = flat.any(axis=0) if active is None else active | flat.any(axis=0)
    return DeadNeurons(zeros / seen, float(1.0 - active.mean()), int(active.size))


def stagnant_negative_masks(
    kernels: Mapping[str, np.ndarray], start: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], count: int
) -> Masks:
    """Masks (1 = kept) pruning the ``count`` surviving negative weights whose value moved least since ``start``.

    Over all kernels together; equal changes go to the earlier weight (kernels in the given order).
    """
    names = list(kernels)
    change = np.concatenate([np.abs(kernels[n] - start[n]).ravel() for n in names])
    eligible = np.flatnonzero(np.concatenate([((masks[n] > 0) & (kernels[n] < 0)).ravel() for n in names]))
    chosen = eligible[np.argsort(change[eligible], kind="stable")[:count]]
    kept = np.ones(change.size, np.float32)
    kept[chosen] = 0.0
    sizes = np.cumsum([kernels[n].size for n in names])[:-1]
    return {n: part.reshape(kernels[n].shape) for n, part in zip(names, np.split(kept, sizes), strict=True)}


class ActivateWhilePruning(keras.callbacks.Callback):
    """At step ``at_step`` prunes ``count`` stagnant negative weights of the masked layers, then keeps them at zero.

    Put it after the base masks' ``MaskKeeper``; if training ends before ``at_step``, AP acts at the end.
    """

    def __init__(self, masks: Mapping[str, np.ndarray], count: int, at_step: int):
        super().__init__()
        self.masks, self.count, self.at_step = dict(masks), count, at_step
        self.activated: Masks | None = None
        self._keeper: MaskKeeper | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = {name: self.model.get_layer(name).kernel.numpy() for name in self.masks}
        self._step = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._step += 1
        if self._keeper is not None:
            self._keeper.on_train_batch_end(batch, logs)
        elif self._step >= self.at_step:
            self._activate()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._keeper is None:
            self._activate()

    def _activate(self) -> None:
        kernels = {name: self.model.get_layer(name).kernel.numpy() for name in self.masks}
        self.activated = stagnant_negative_masks(kernels, self._start, self.masks, self.count)
        self._keeper = MaskKeeper(self.activated)
        self._keeper.set_model(self.model)
        self._keeper.on_train_begin()


@register_method(
    "ap-activate",
    suite="pruning",
    kind="compression",
    paper=Paper(
        "AP: Selective Activation for De-sparsifying Pruned Networks", 2023, "https://arxiv.org/abs/2212.06145"
    ),
    summary="wraps gmp: prunes its stagnant negative weights to lower the dead-neuron rate, then fine-tunes",
    taxonomy=Taxonomy(structured=False, applied="training"),
)
class ActivatingWhilePruning(PruningMethod):
    """Option ``activate``: the share of the pruned kernels' weights AP removes on top of ``gmp``'s."""

    default_options = {**PruningMethod.default_options, "activate": 0.02}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if not 0 < self.options["activate"] <= self.options["sparsity"]:
            raise ValueError(
                f"ap-activate activate must be in (0, sparsity = {self.options['sparsity']}]: gmp prunes "
                f"sparsity - activate and AP the rest; got {self.options['activate']!r}"
            )

    def base(self) -> MethodRef:
        """The pruned model AP starts from: ``gmp`` at ``sparsity - activate`` (on the same backbone)."""
        options = {"sparsity": round(self.options["sparsity"] - self.options["activate"], 6)}
        if self.options["backbone"]:
            options["backbone"] = self.options["backbone"]
        return MethodRef(BASE_METHOD, tuple(sorted(options.items())))

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        return {TRAINED: self.base()}

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        layers = prunable_layers(model)
        masks = {layer.name: (layer.kernel.numpy() != 0).astype(np.float32) for layer in layers}
        masks = {name: mask for name, mask in masks.items() if mask.min() == 0} or masks
        count = round(self.options["activate"] * sum(mask.size for mask in masks.values()))
        probe = context.splits.x_train[:PROBE_SAMPLES]
        before = dead_neurons(model, probe)
        steps = context.recipe.epochs * -(-len(context.splits.x_train) // context.recipe.batch_size)
        activation = ActivateWhilePruning(masks, count, at_step=max(1, steps // 2))
        history, seconds = fit(model, context, callbacks=[MaskKeeper(masks), activation])
        after = dead_neurons(model, probe)
        final = {name: masks[name] * activation.activated[name] for name in masks}
        facts = {
            "sparsity_target": self.options["sparsity"],
            "sparsity_by_layer": sparsity_facts(final),
            "base": str(self.base()),
            "activated_weights": count,
            "dead_neuron_rate": {"before": before.rate, "after": after.rate},
            "never_active_rate": {"before": before.never_active, "after": after.never_active},
            "relu_units": after.units,
        }
        return Artifact(model, history, seconds, facts=facts)
