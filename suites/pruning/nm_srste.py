r"""N:M fine-grained structured sparsity trained from scratch with SR-STE (Zhou et al., 2021).

Mask: the input-channel axis of every conv / dense kernel is cut into groups of :math:`M` consecutive
weights (for a Conv2D kernel :math:`W \in \mathbb{R}^{k_h \times k_w \times C_{in} \times C_{out}}`, the
group of input channels :math:`gM, \dots, gM + M - 1` at one :math:`(i, j, o)`; for a Dense kernel
:math:`C_{in} \times C_{out}`, the same along :math:`C_{in}`: the reduction axis of the matrix product, which
is what sparse tensor cores need and what TFMOT's ``sparsity_m_by_n`` and TFLite lay out), and the mask keeps
the :math:`N` largest :math:`|W|` of each group. It is recomputed from the dense weights at every step.

Forward and pseudo-gradient (:func:`sr_ste`, the official ``Sparse_NHWC`` autograd function)::

    forward:   W~ = M(W) * W                      M(W): the N:M mask of the dense weights W (no gradient)
    backward:  dL/dW := dL/dW~ + lambda_w * (1 - M(W)) * W

The first term is the straight-through estimator (the gradient at the sparse weights reaches every dense
weight); the second, *sparse-refined*, term decays the pruned weights, so that a weight does not flip in and
out of the mask on noise. :math:`\lambda_w = 2 \times 10^{-4}` (option ``lambda_w``; the paper's and the
code's default). The model trains with the task's recipe; the deployed model is the dense-shaped backbone with
:math:`W \leftarrow M(W) \odot W` (exactly :math:`N` nonzeros in every group of :math:`M`).

SAD (the paper's sparse architecture divergence): the number of mask entries that flip between consecutive
steps, summed per epoch into the history's ``sad`` curve (:mod:`suites.pruning._sparse_training`).

Protocol choice: the paper trains from scratch ("... From Scratch", its title), so this method starts from a
fresh backbone with the task's recipe (``starts_from = INIT``, taxonomy ``applied="training"``), not from the
trained twin with the fine-tune recipe; its twin is still the trained dense backbone, for the ratio.

Options: ``n`` and ``m`` (2:4 by default; the suite runs 2:4 and 1:4); ``sparsity`` follows from them
(:math:`1 - N/M`; given, it must agree); ``lambda_w``.

Layers: every Conv1D / Conv2D / Dense kernel whose input-channel count is a multiple of :math:`M`, the
classifier included. The others (the digits stem conv has one input channel) stay dense and are named in the
facts (``dense_layers``). Deviations: the official code keeps the ImageNet classifier (``nn.Linear``) dense and
makes the RGB stem conv N:M by letting its groups run across kernel positions; here the classifier is N:M
like every other eligible layer and groups never leave the input-channel axis. Depthwise kernels are dense,
as everywhere in the suite.

Paper: Zhou, Ma, Zhu, Liu, Zhang, Yuan, Sun & Li, "Learning N:M Fine-grained Structured Sparse Neural Networks
From Scratch", ICLR 2021 (https://arxiv.org/abs/2102.04010); code: github.com/NM-sparsity/NM-sparsity
(``devkit/sparse_ops/sparse_ops.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from effbench.method import Artifact
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext, fit
from suites.pruning._masks import prunable_layers, sparsity_facts
from suites.pruning._sparse_training import MaskedKernels, SadLogger
from suites.pruning.base import INIT, PruningMethod

SR_STE_DECAY = 2e-4  # lambda_w of the paper and of the official code


def nm_mask(kernel: tf.Tensor, n: int, m: int) -> tf.Tensor:
    """The N:M mask of ``kernel`` along its input-channel axis (the second to last): in every group of ``m``
    consecutive input channels, 1 at the ``n`` largest magnitudes (the earlier weight wins a tie), else 0."""
    kernel = tf.convert_to_tensor(kernel)
    rank = kernel.shape.rank
    # Input channels last, then (..., C_in / m, m) groups.
    perm = [*range(rank - 2), rank - 1, rank - 2]
    moved = tf.transpose(tf.abs(kernel), perm)
    groups = tf.reshape(moved, [*moved.shape[:-1], moved.shape[-1] // m, m])
    _, kept = tf.math.top_k(groups, k=n, sorted=False)
    mask = tf.reduce_sum(tf.one_hot(kept, m, dtype=kernel.dtype), axis=-2)
    return tf.transpose(tf.reshape(mask, moved.shape), perm)


def sr_ste(kernel: tf.Tensor, mask: tf.Tensor, decay: float) -> tf.Tensor:
    """``mask * kernel``, with SR-STE's gradient to the dense kernel: ``g + decay * (1 - mask) * kernel``."""
    mask = tf.stop_gradient(mask)

    @tf.custom_gradient
    def masked(weights: tf.Tensor) -> tuple[tf.Tensor, Any]:
        def gradient(upstream: tf.Tensor) -> tf.Tensor:
            return upstream + decay * (1.0 - mask) * weights

        return weights * mask, gradient

    return masked(kernel)


class SrSteTraining(MaskedKernels):
    """The backbone trained through N:M masks recomputed from its dense kernels at every step, with SR-STE."""

    def __init__(self, base: keras.Model, layer_names: list[str], n: int, m: int, decay: float):
        super().__init__(base, layer_names)
        self.n, self.m, self.decay = n, m, decay

    def forward_kernel(self, index: int, kernel: tf.Variable) -> tf.Tensor:
        return sr_ste(kernel, nm_mask(kernel, self.n, self.m), self.decay)

    def masks(self) -> list[tf.Tensor]:
        return [nm_mask(self.base.get_layer(name).kernel, self.n, self.m) for name in self.layer_names]


@register_method(
    "nm-srste",
    suite="pruning",
    kind="training",
    paper=Paper(
        "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch",
        2021,
        "https://arxiv.org/abs/2102.04010",
    ),
    summary="N:M masks (2:4, 1:4) along the input channels, recomputed every step from the dense weights and "
    "trained from scratch with SR-STE (STE + lambda_w (1 - M) W); logs the SAD curve",
    taxonomy=Taxonomy(structured=False, applied="training", data="labelled"),
)
class NmSrSte(PruningMethod):
    """Options: ``n``, ``m`` (N of every M weights kept), ``lambda_w``; ``sparsity`` is ``1 - n / m``."""

    default_options: ClassVar[dict[str, Any]] = {
        **PruningMethod.default_options,
        "sparsity": 0.5,
        "n": 2,
        "m": 4,
        "lambda_w": SR_STE_DECAY,
    }
    starts_from: ClassVar[str] = INIT

    def __init__(self, **options: Any):
        n = options.get("n", self.default_options["n"])
        m = options.get("m", self.default_options["m"])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)) or not 0 < n < m:
            raise ValueError(f"nm-srste keeps n of every m weights: expected integers 0 < n < m, got n={n!r}, m={m!r}")
        options.setdefault("sparsity", 1.0 - n / m)
        super().__init__(**options)
        if not np.isclose(self.options["sparsity"], 1.0 - n / m):
            raise ValueError(f"nm-srste {n}:{m} has sparsity {1 - n / m:g}, not {self.options['sparsity']!r}")

    def prune(self, model: keras.Model, context: TrainContext) -> Artifact:
        n, m = self.options["n"], self.options["m"]
        layers = prunable_layers(model)
        eligible = [layer.name for layer in layers if layer.kernel.shape[-2] % m == 0]
        training = SrSteTraining(model, eligible, n, m, float(self.options["lambda_w"]))
        history, seconds = fit(training, context, callbacks=[SadLogger(training)])
        deployed = training.deploy()
        masks = {name: np.asarray(mask) for name, mask in zip(eligible, training.masks(), strict=True)}
        facts = {
            "sparsity_target": 1.0 - n / m,
            "sparsity_by_layer": sparsity_facts(masks),
            "pattern": f"{n}:{m}",
            "group_axis": "input channels",
            "dense_layers": [layer.name for layer in layers if layer.name not in masks],
            "lambda_w": float(self.options["lambda_w"]),
            "starts_from": "init",
        }
        return Artifact(deployed, history, seconds, facts=facts)
