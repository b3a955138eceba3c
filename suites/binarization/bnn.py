r"""BNN: sign with the clipped straight-through estimator, on weights and activations, no scale.

Forward and pseudo-gradient, for activations and latent weights alike (larq's ``SteSign`` with
``clip_value=1``; sign(0) = +1)::

    q(x) = +1 if x >= 0 else -1          dq/dx := 1 if |x| <= 1 else 0

The pseudo-gradient is the derivative of hard tanh, clip(x, -1, 1); in BiBench's code
``sign(x).detach() - clamp(x, -1, 1).detach() + clamp(x, -1, 1)``. The operator protocol's weight clip
keeps latent weights in [-1, 1], where the STE passes the gradient.

Paper: Hubara, Courbariaux, Soudry, El-Yaniv & Bengio, "Binarized Neural Networks", NeurIPS 2016
(https://arxiv.org/abs/1602.02830), as the BNN baseline of BiBench (https://arxiv.org/abs/2301.11233).
"""

from __future__ import annotations

from effbench.tf import tf  # noqa: F401  (first: selects the Keras 2 API larq needs)

# isort: split
import larq

from effbench.registry import Paper, Taxonomy, register_method
from suites.binarization.operators import OperatorMethod


@register_method(
    "bnn",
    suite="binarization",
    kind="operator",
    paper=Paper(
        "Binarized Neural Networks: Training Deep Neural Networks with Weights and Activations Constrained to +1 or -1",
        2016,
        "https://arxiv.org/abs/1602.02830",
    ),
    summary="sign forward, clipped STE (1 on |x| <= 1) backward, on weights and activations, no scale",
    taxonomy=Taxonomy(weight_bits=1, activation_bits=1, applied="training", data="labelled"),
)
class BNN(OperatorMethod):
    def input_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)

    def kernel_quantizer(self) -> larq.quantizers.SteSign:
        return larq.quantizers.SteSign(clip_value=1.0)
