r"""Make deep networks shallow again: a residual conv stack truncated to first order, its layers in parallel.

Mechanism (the paper's argument, from its abstract). A stack of L residual layers of one width,
:math:`x_{i+1} = x_i + f_i(x_i)`, expands like a Taylor series:

.. math::

    x_L = x_0 + \sum_{i} f_i(x_0) + \sum_{i < j} f_j'(x_0)\, f_i(x_0) + \ldots

Truncating after the first-order term leaves one broad, shallow layer: all L layers side by side, each reading
the stack's input, summed with it,

.. math::  y = x_0 + \sum_{i=0}^{L-1} f_i(x_0),\qquad f_i(x) = \mathrm{ReLU}(\mathrm{BN}(W_i * x))

In words: stem conv -> [x, f_0(x), f_1(x), ..., f_{L-1}(x)] -> sum -> global average pool -> logits, where
each :math:`f_i` is a k x k conv-BN-ReLU of ``width`` channels (:mod:`suites.architectures._residual_stack`).
``form=deep`` builds the sequential residual stack it replaces (stem conv -> x + f_0(x) -> ... -> pool ->
logits), the paper's comparison: the same layers, so the same parameters and MACs, wired in series. Options:
``depth`` (L, 4), ``width`` (channels, 32), ``kernel`` (k, 3), ``form`` (``shallow`` or ``deep``).

Paper: Bermeitinger, Hrycej & Handschuh, "Make Deep Networks Shallow Again", 2023
(https://arxiv.org/abs/2309.08414). They train both forms on MNIST and CIFAR10 over a grid of 6912
configurations (numbers of conv layers, filters, kernel sizes, other meta-parameters) and find similar training
and validation losses; ``deep-wide-grid`` runs a scaled-down grid of it. Scale: small-faithful (the paper's
block and comparison; small widths and depths, the suite's tasks and recipe). Deviations: only the abstract
was available, so the layer :math:`f_i` (conv-BN-ReLU, the suite's usual conv layer; batch norm is this
implementation's choice), the stem conv that brings the input to the stack's width, and the pooled head are
this implementation's; no downsampling inside the stack; training follows the task's recipe.

TFLite: standard Conv2D, batch norm, ReLU, Add, mean and Dense layers, so the float model converts to builtins
(the L parallel convs stay L ``CONV_2D`` ops reading one tensor; the converter does not merge them).
"""

from __future__ import annotations

from typing import Any, ClassVar

from effbench.method import ArchitectureMethod
from effbench.registry import Taxonomy, register_method
from effbench.tf import keras
from suites.architectures._layers import model_name
from suites.architectures._residual_stack import PAPER, check_form, residual_stack_model


@register_method(
    "shallow-again",
    suite="architectures",
    kind="architecture",
    paper=PAPER,
    summary="small-faithful: a residual conv stack truncated to first order, x + sum_i f_i(x), its L conv-BN-ReLU "
    "layers side by side in one wide shallow layer (form=deep: the sequential residual stack it replaces)",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class ShallowAgain(ArchitectureMethod):
    default_options: ClassVar[dict[str, Any]] = {"depth": 4, "width": 32, "kernel": 3, "form": "shallow"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        check_form(self.spec.slug, self.options["form"])

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        options = self.options
        return residual_stack_model(
            input_shape, num_classes, options["depth"], options["width"], options["kernel"], options["form"],
            model_name(self.spec.slug, options),
        )  # fmt: skip
