r"""The depth x width grid of "Make deep networks shallow again": both forms of the residual stack at each point.

What it runs. Each point of the grid is a residual conv stack (:mod:`suites.architectures._residual_stack`,
the block of ``shallow-again``) of depth L and width C in one of two forms,

.. math::

    \text{deep: } x_{i+1} = x_i + f_i(x_i) \qquad\qquad \text{shallow: } y = x_0 + \sum_{i=0}^{L-1} f_i(x_0)

with :math:`f_i` a k x k conv-BN-ReLU of C channels, after a stem conv and before global average pooling and
the logits. The grid is L in ``min_depth`` x (1, 2, 4, ...) (``depths`` values), C in ``min_width`` x (1, 2, ...)
(``widths`` values), and both forms: by default L in {1, 2, 4}, C in {16, 32}, 12 networks. One run trains
every one of them, from scratch, with the task's recipe, and deploys each: the tracks measure all 12, and each
deployable's facts name its grid coordinates (``depth``, ``width``, ``form``), so the leaderboard draws
quality over depth x width per form. At each point the two forms have the same layers, parameters and MACs
(they differ in wiring only), so the grid compares them at equal cost, and at L = 1 they are the same network
(a control: their gap there is the seed's noise). Deployables are named ``<form>-depth<L>-width<C>``; the main
one is the shallow network at the largest depth and width (by default shallow-again's own default, L = 4,
C = 32, which on ``digits`` costs 0.94x resnet-cifar's MACs).

Paper: Bermeitinger, Hrycej & Handschuh, "Make Deep Networks Shallow Again", 2023
(https://arxiv.org/abs/2309.08414): 6912 configurations of both forms (numbers of conv layers, filters,
kernel sizes, other meta-parameters) trained on MNIST and CIFAR10, compared by training and validation loss.
Scale: small-faithful, the grid scaled down to depth and width only (3 x 2 points and two forms, not 6912
configurations; the kernel size is the fixed option ``kernel``), on the suite's tasks with their recipe. The
block's own deviations are ``shallow-again``'s (only the abstract was available: conv-BN-ReLU layers, a stem
conv, a pooled head).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from effbench.method import MAIN, ArchitectureMethod, Artifact, Deployable
from effbench.registry import TaskSpec, Taxonomy, register_method
from effbench.tf import keras
from effbench.training import TrainContext, fit
from suites.architectures._layers import model_name
from suites.architectures._residual_stack import FORMS, PAPER, residual_stack_model


@dataclass(frozen=True)
class GridPoint:
    """One network of the grid: the residual stack of ``depth`` layers of ``width`` channels in ``form``."""

    form: str
    depth: int
    width: int

    @property
    def name(self) -> str:
        return f"{self.form}-depth{self.depth}-width{self.width}"

    @property
    def facts(self) -> dict[str, Any]:
        """Its grid coordinates, as the records of its deployable carry them."""
        return {"depth": self.depth, "width": self.width, "form": self.form}


@register_method(
    "deep-wide-grid",
    suite="architectures",
    kind="architecture",
    paper=PAPER,
    summary="small-faithful: the depth x width grid of the residual conv stack in both forms, deep (sequential) "
    "and shallow (its layers in parallel), all trained in one run and each deployed with its grid coordinates",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class DeepWideGrid(ArchitectureMethod):
    default_options: ClassVar[dict[str, Any]] = {"min_depth": 1, "depths": 3, "min_width": 16, "widths": 2, "kernel": 3}

    def __init__(self, **options: Any):
        super().__init__(**options)
        bad = [key for key, value in self.options.items() if not (isinstance(value, int) and value >= 1)]
        if bad:
            raise ValueError(f"deep-wide-grid options {', '.join(bad)} must be positive integers")

    def grid(self) -> list[GridPoint]:
        """Every point, deep then shallow, each by depth then width; the main one (:meth:`main_point`) among them."""
        depths = [self.options["min_depth"] * 2**step for step in range(self.options["depths"])]
        widths = [self.options["min_width"] * 2**step for step in range(self.options["widths"])]
        return [GridPoint(form, depth, width) for form in FORMS for depth in depths for width in widths]

    def main_point(self) -> GridPoint:
        """The shallow network at the grid's largest depth and width."""
        return self.grid()[-1]

    def deployable_name(self, point: GridPoint) -> str:
        return MAIN if point == self.main_point() else point.name

    def deployable_names(self) -> tuple[str, ...]:
        return (MAIN, *(self.deployable_name(point) for point in self.grid() if point != self.main_point()))

    def build_point(self, point: GridPoint, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        name = model_name(self.spec.slug, {**point.facts, "kernel": self.options["kernel"]})
        return residual_stack_model(
            input_shape, num_classes, point.depth, point.width, self.options["kernel"], point.form, name
        )

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        """The main deployable's network (what size matching counts); :meth:`run` trains the whole grid."""
        return self.build_point(self.main_point(), input_shape, num_classes)

    def run(self, context: TrainContext) -> Artifact:
        started = time.perf_counter()
        spec: TaskSpec = context.task.spec
        deployables, histories = {}, {}
        for point in self.grid():
            model = self.build_point(point, spec.input_shape, spec.num_classes)
            histories[point], _ = fit(model, context)
            deployables[self.deployable_name(point)] = Deployable(model, facts=point.facts)
        return Artifact.of(
            deployables, history=histories[self.main_point()], train_seconds=time.perf_counter() - started
        )
