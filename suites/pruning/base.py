"""The pruning protocol in code: every method prunes the same protocol backbone, trained or fresh.

:class:`PruningMethod` declares the backbone's training as the upstream of role ``trained`` for methods that
prune a trained model (``starts_from = TRAINED``: the FP32 twin is the same training, so the planner runs it once
and every method and sparsity level shares it; the runner gives them the task's fine-tune recipe), and builds a
fresh backbone for methods that prune at initialisation or during training (``starts_from = INIT``: the task's
recipe). A subclass implements :meth:`PruningMethod.prune` on that model.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from effbench.method import Artifact, Method, MethodRef
from effbench.registry import TaskSpec
from effbench.tf import keras
from effbench.training import TrainContext

TRAINED = "trained"
INIT = "init"


class PruningMethod(Method):
    """Prunes the protocol backbone; subclasses implement :meth:`prune`.

    Options: ``backbone``, a method reference of the architecture to prune instead of the task's default (the
    closed division takes the default, ``resnet-cifar``, ``mobilenetv2`` and ``mlp``:
    :mod:`suites.pruning.protocol`); ``sparsity``, the method's target (fraction of prunable weights, or of
    channels for a structured method). Subclasses change the default target or add options by extending
    ``default_options`` (``{**PruningMethod.default_options, "sparsity": 0.5, "n": 2}``).
    """

    default_options: ClassVar[dict[str, Any]] = {"backbone": None, "sparsity": 0.75}
    protocol: ClassVar[str] = "pruning"
    # TRAINED: prune the trained backbone and fine-tune it; INIT: prune a fresh one and train it from scratch.
    starts_from: ClassVar[str] = TRAINED

    def __init__(self, **options: Any):
        super().__init__(**options)
        sparsity = self.options["sparsity"]
        if not isinstance(sparsity, int | float) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
            raise ValueError(f"option sparsity of '{self.spec.slug}' is {sparsity!r}; expected a number in [0, 1)")

    def backbone(self, task: TaskSpec) -> MethodRef:
        return MethodRef.parse(self.options["backbone"] or task.default_backbone)

    def requires(self, task: TaskSpec) -> dict[str, MethodRef]:
        """The trained backbone (also the FP32 twin, so it trains once) for a method that prunes a trained one."""
        return {TRAINED: self.backbone(task)} if self.starts_from == TRAINED else {}

    def run(self, context: TrainContext) -> Artifact:
        if self.starts_from == TRAINED:
            model = context.upstream[TRAINED].model
        else:
            spec = context.task.spec
            model = self.backbone(spec).create().build(spec.input_shape, spec.num_classes)
        return self.prune(model, context)

    @abc.abstractmethod
    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        """The pruned (and fine-tuned, or trained) deployables of ``model``: trained weights, or fresh ones."""
