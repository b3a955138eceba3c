r"""Training BatchNorm and only BatchNorm: random features, frozen, rescaled and shifted by trained BN affines.

A fresh backbone keeps every weight at its random initialisation, and only the affine parameters of its
batch normalisations train. For each BN channel :math:`c`,

.. math::

    y_c = \gamma_c \frac{x_c - \mu_c}{\sqrt{\sigma^2_c + \epsilon}} + \beta_c,

and the gradient step updates :math:`\gamma, \beta` only: :math:`\nabla_W \mathcal{L}` is computed for no
conv / dense kernel or bias, so :math:`W = W^{(0)}` throughout (every layer but the BN layers is frozen:
``trainable = False``). The moving statistics :math:`\mu, \sigma^2` are not trained weights: BN updates them
in training mode as usual. The paper's question is how expressive the random features are when BN can only
scale and shift (and, setting :math:`\gamma_c \approx 0`, switch off) each of them; it reports that BN learns
to disable about a third of them. The model trains from scratch with the task's recipe.

Facts: ``trainable_params`` (the :math:`\gamma, \beta` count), ``params`` (every weight, BN's moving
statistics included, as the complexity track counts them), and ``trainable_fraction``, their ratio; the
deployed model keeps its frozen layers frozen, so the complexity track's ``params_trainable`` shows the same.

Paper: Frankle, Schwab & Morcos, "Training BatchNorm and Only BatchNorm: On the Expressive Power of Random
Features in CNNs", ICLR 2021 (https://arxiv.org/abs/2003.00152). Deviations: the paper's deep and wide
ResNets (up to 866 layers) are the protocol backbone here; the classifier layer stays frozen too, as in
the paper's main setting (its variant that also trains the output layer is not run). Not a sparsity method:
nothing is pruned, and the ``sparsity`` option does not apply (0 only).
"""

from __future__ import annotations

from typing import Any

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext, fit
from suites.pruning.base import INIT, PruningMethod


def freeze_all_but_batchnorm(model: keras.Model) -> int:
    """Freeze every layer but the batch normalisations (whose gamma and beta stay trainable); the BN count.

    A frozen BN layer would also run in inference mode while training, so BN layers are never frozen.
    """
    norms = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            norms += freeze_all_but_batchnorm(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            norms += 1
        elif layer.weights:
            layer.trainable = False
    return norms


def parameter_count(weights: list) -> int:
    return sum(int(weight.shape.num_elements()) for weight in weights)


@register_method(
    "bn-only",
    suite="pruning",
    kind="training",
    paper=Paper(
        "Training BatchNorm and Only BatchNorm: On the Expressive Power of Random Features in CNNs",
        2021,
        "https://arxiv.org/abs/2003.00152",
    ),
    summary="every weight frozen at its random init; only BatchNorm's gamma and beta train",
    taxonomy=Taxonomy(structured=None, applied="training"),
)
class BatchNormOnly(PruningMethod):
    """Trains a fresh backbone's BN affine parameters only; the rest stays at its random initialisation."""

    default_options = {**PruningMethod.default_options, "sparsity": 0.0}
    starts_from = INIT

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["sparsity"] != 0:
            raise ValueError("bn-only prunes nothing (it freezes every weight but BatchNorm's gamma and beta): its "
                             "option sparsity does not apply (leave it at 0)")  # fmt: skip

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        if not freeze_all_but_batchnorm(model):
            raise ValueError(f"bn-only trains BatchNorm layers only, and backbone '{model.name}' has none")
        history, seconds = fit(model, context)
        trainable, total = parameter_count(model.trainable_weights), parameter_count(model.weights)
        facts = {"trainable_params": trainable, "params": total, "trainable_fraction": trainable / total}
        return Artifact(model, history, seconds, facts=facts)
