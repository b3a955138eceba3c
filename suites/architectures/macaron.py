r"""Macaron Net: each transformer block is half an FFN step, the attention step, half an FFN step.

Mechanism. Read as an ODE solver for particles (tokens) that interact (attention, a convection term
:math:`F`) and move on their own (the position-wise FFN, a diffusion term :math:`G`), a transformer block
:math:`x \leftarrow x + F(x)`, :math:`x \leftarrow x + G(x)` is one Lie-Trotter splitting step of
:math:`\dot x = F(x) + G(x)`. The Strang-Marchuk splitting, of second order where Lie-Trotter is of first,
takes half a :math:`G` step, a whole :math:`F` step, then half a :math:`G` step; as a block (pre-norm, as
the tiny transformer)

.. math::  x \leftarrow x + \tfrac12\,\mathrm{FFN}_1(\mathrm{LN}(x)), \qquad
           x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x)), \qquad
           x \leftarrow x + \tfrac12\,\mathrm{FFN}_2(\mathrm{LN}(x))

with two FFNs of their own weights (Dense ``hidden``, GELU, Dense back to ``dim``), each output scaled by
1/2 (a Rescaling layer ``block{i}_mlp{1,2}_scale``). Everything else is the tiny transformer's
(:class:`suites.architectures._transformer.TransformerArchitecture`: patch or id tokens, learned positions,
the same attention sublayer and core, final LayerNorm, token mean, logits), built from the same pieces.

Paper: Lu, Li, He, Sun, Dong, Qin, Wang & Liu, "Understanding and Improving Transformer From a
Multi-Particle Dynamic System Point of View", 2019 (https://arxiv.org/abs/1906.02762). Small-faithful:
the block is the paper's, at tiny sizes (dim 64, depth 2, 4 heads) on patch or id tokens for
classification instead of translation and BERT pre-training. Deviations: pre-norm sublayers (the paper's
Transformer and BERT baselines are post-norm), GELU in both FFNs, mean pooling, no dropout. The size knob is
``hidden``, the width of each FFN; the default 64 (half the tiny transformer's 128, so that the two FFNs
hold what its one does) keeps the tiny transformer's parameters and MACs on every task; ``SIZED_RUNS``
checks the match on ``listops-short``.
"""

from __future__ import annotations

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import tf
from suites.architectures._transformer import TransformerArchitecture, mlp, pre_norm_residual, self_attention

# The Strang splitting's half step: each FFN's output is added at half weight.
HALF_STEP = 0.5


@register_method(
    "macaron",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Understanding and Improving Transformer From a Multi-Particle Dynamic System Point of View",
        2019,
        "https://arxiv.org/abs/1906.02762",
    ),
    summary="tiny transformer with Macaron blocks: half-step FFN, attention, half-step FFN (Strang splitting); "
    "small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class Macaron(TransformerArchitecture):
    default_options = {"dim": 64, "depth": 2, "heads": 4, "hidden": 64, "patch": 2}

    def block(self, x: tf.Tensor, name: str, grid: tuple[int, int]) -> tf.Tensor:
        hidden = self.options["hidden"]
        x = pre_norm_residual(x, f"{name}_mlp1", mlp(hidden, f"{name}_mlp1"), scale=HALF_STEP)
        x = pre_norm_residual(x, f"{name}_attention", self_attention(self.options["heads"], name))
        return pre_norm_residual(x, f"{name}_mlp2", mlp(hidden, f"{name}_mlp2"), scale=HALF_STEP)
