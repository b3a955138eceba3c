r"""S-KAN: Kolmogorov-Arnold layers whose nodes select among activation spaces, for a backbone's hidden dense layers.

Mechanism: a KAN layer puts a learned univariate function on every edge (i, j) from input i to output node j,
and a node only sums: y_j = sum_i phi_ij(x_i) + b_j. A KAN draws every phi from one function space
(B-splines, Chebyshev polynomials, Gaussian radial bases, ...); S-KAN gives each node a *selectable* pool of
spaces s = 1..S, each a basis B_{s,1..G}, and learns how much of each space the node uses:

    phi_ij(x) = w_ij silu(x) + sum_s alpha_sj sum_g c_sgij B_sg(x),    alpha_.j = softmax_s(a_.j),

with the KAN's residual ``silu`` base term w_ij, coefficients c, and selection logits a (zeros at the start:
every space weighs 1 / S). The pool here, G = ``grid`` functions each:

* rbf:        exp(-((x - mu_g) / h)^2), centres mu_g evenly over [-2, 2], h their spacing (FastKAN);
* chebyshev:  T_g(tanh x), degrees g = 1..G (ChebyKAN; T_0's constant is the node's bias b_j);
* fourier:    sin(k x), cos(k x) for k = 1, 1, 2, 2, ... (FourierKAN), G of them in that order.

The layer has d x units x (1 + S G) edge weights, S x units selection logits and the units biases; its
multiply-accumulates are the same d x units x (1 + S G) per example: the basis values of all spaces are
concatenated and met by one matrix whose blocks are c_s scaled by alpha_s, plus the base term's.

Applied to the hidden ``Dense`` layers of the backbone named by ``backbone`` (default ``mlp``): each becomes
an S-KAN layer of ``units`` outputs (default 64; a KAN edge holds 1 + S G weights, so a layer as wide as the
MLP's 256 would cost 13 times as much), its activation gone (the edges are the nonlinearity); the logits layer
stays a ``Dense``. TFLite converts it to builtins: the softmax and the scaling fold into one constant
FULLY_CONNECTED kernel; the bases run as EXP (rbf), TANH and MUL / SUB (chebyshev), SIN (fourier, the cosines
as phase-shifted sines), LOGISTIC and MUL (silu), PACK / CONCATENATION and RESHAPE.

Paper: Yang, Zhang, Luo, Lu & Shen, "Activation Space Selectable Kolmogorov-Arnold Networks", 2024
(https://arxiv.org/abs/2408.08338). Scale: small-faithful for the selectable layer (a softmax-weighted pool
of activation spaces at every node). Deviations: only the abstract and summaries were available; the pool
here is three spaces that TFLite runs with builtins (the paper's also holds B-splines, wavelets and other
polynomial families), and the selection is trained as one soft mixture throughout, without the paper's later
stages that train the selected spaces alone and prune the others; the convolutional S-ConvKAN is not
implemented.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dropin import DenseDropIn

Shape = tuple[int, ...]
SPACES = ("rbf", "chebyshev", "fourier")
RBF_RANGE = 2.0
# Elementwise operations per basis value: rbf sub, scale, square, exp; chebyshev the recurrence's mul and
# sub (its tanh counts once per input); fourier mul, add, sin. Then the silu base term (sigmoid, mul) per input.
BASIS_OPS = {"rbf": 4, "chebyshev": 2, "fourier": 3}
SILU_OPS = 2


def rbf_basis(x: tf.Tensor, grid: int) -> tf.Tensor:
    """(..., d) -> (..., d, grid): Gaussian bumps centred evenly over [-2, 2], as wide as their spacing."""
    centres = np.linspace(-RBF_RANGE, RBF_RANGE, grid, dtype="float32")
    width = 2 * RBF_RANGE / max(grid - 1, 1)
    return tf.exp(-tf.square((x[..., None] - centres) / width))


def chebyshev_basis(x: tf.Tensor, grid: int) -> tf.Tensor:
    """(..., d) -> (..., d, grid): T_1..T_grid of tanh(x), by T_{k+1} = 2 t T_k - T_{k-1}."""
    t = tf.tanh(x)
    polynomials = [t, 2 * t * t - 1]
    while len(polynomials) < grid:
        polynomials.append(2 * t * polynomials[-1] - polynomials[-2])
    return tf.stack(polynomials[:grid], axis=-1)


def fourier_basis(x: tf.Tensor, grid: int) -> tf.Tensor:
    """(..., d) -> (..., d, grid): sin(x), cos(x), sin(2x), cos(2x), ... (a cosine is a sine a quarter turn on)."""
    harmonics = np.arange(grid) // 2 + 1
    phases = np.where(np.arange(grid) % 2 == 1, np.pi / 2, 0.0)
    return tf.sin(x[..., None] * harmonics.astype("float32") + phases.astype("float32"))


BASES = {"rbf": rbf_basis, "chebyshev": chebyshev_basis, "fourier": fourier_basis}


@keras.utils.register_keras_serializable(package="effbench")
class SKANDense(keras.layers.Layer):
    """``units`` S-KAN nodes over the last axis: learned edge functions from a selectable pool (module docstring)."""

    def __init__(self, units: int, grid: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.units, self.grid = int(units), int(grid)
        if self.grid < 2:
            raise ValueError(f"SKANDense '{self.name}': grid {self.grid} needs at least 2 functions per space")

    def build(self, input_shape: Any) -> None:
        inputs = int(input_shape[-1])
        self.base_kernel = self.add_weight(name="base_kernel", shape=(inputs, self.units), initializer="glorot_uniform")
        # (d, S, G, units): the row order of the concatenated basis values (input, then space, then function).
        self.coefficients = self.add_weight(
            name="coefficients",
            shape=(inputs, len(SPACES), self.grid, self.units),
            initializer=keras.initializers.VarianceScaling(0.1, mode="fan_in", distribution="truncated_normal"),
        )
        self.selection = self.add_weight(name="selection", shape=(len(SPACES), self.units), initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        super().build(input_shape)

    def space_weights(self) -> tf.Tensor:
        """alpha: (S, units), each node's softmax over the spaces."""
        return tf.nn.softmax(self.selection, axis=0)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        basis = tf.concat([BASES[space](inputs, self.grid) for space in SPACES], axis=-1)  # (..., d, S G)
        inputs_count = inputs.shape[-1]
        flat_basis = tf.reshape(basis, [-1, *inputs.shape[1:-1], inputs_count * len(SPACES) * self.grid])
        selected = self.coefficients * self.space_weights()[None, :, None, :]
        kernel = tf.reshape(selected, [-1, self.units])
        base = tf.matmul(tf.nn.silu(inputs), self.base_kernel)
        return base + tf.matmul(flat_basis, kernel) + self.bias

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        rows = math.prod(output_shapes[0][1:-1])
        inputs = input_shapes[0][-1]
        macs = rows * inputs * self.units * (1 + len(SPACES) * self.grid)
        per_input = SILU_OPS + 1 + sum(BASIS_OPS[space] * self.grid for space in SPACES)  # + 1: chebyshev's tanh
        return macs, rows * (inputs * per_input + 2 * self.units)  # the base and bias adds

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "grid": self.grid}


@register_method(
    "s-kan",
    suite="architectures",
    kind="architecture",
    paper=Paper("Activation Space Selectable Kolmogorov-Arnold Networks", 2024, "https://arxiv.org/abs/2408.08338"),
    summary="each hidden Dense an S-KAN layer of `units` nodes: edge functions from rbf / Chebyshev / Fourier "
    "spaces mixed by a learned per-node softmax; small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
)
class SKAN(DenseDropIn):
    default_options: ClassVar[dict[str, Any]] = {**DenseDropIn.default_options, "units": 64, "grid": 4}

    def dense_replacement(self, layer: keras.layers.Dense) -> keras.layers.Layer:
        return SKANDense(self.options["units"], self.options["grid"], name=layer.name)
