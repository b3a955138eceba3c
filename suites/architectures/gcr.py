"""Grassmann class representation (GCR): each class is a k-dim subspace, trained by Riemannian SGD.

Head. The backbone's logits Dense layer becomes a projection onto one orthonormal basis S_c (d x k, a point of
the Grassmann manifold Gr(k, d)) per class c; with the feature x normalised and a scale gamma,

    logit_c = || gamma * S_c^T x / ||x|| ||_2,        S_c^T S_c = I_k.

A class vector is the case k = 1 (and gamma a cosine-softmax temperature). The bases are the columns of one
(d, C * k) kernel, class c's in columns c*k .. c*k + k - 1.

Update. The bases move along the manifold, the rest of the network as the recipe's optimizer says, at the
recipe's scheduled learning rate lr (the official code's ``RAdamWOptimizer`` splits them the same way):

    m   <- 0.9 m + G                           (heavy-ball momentum of the Euclidean gradient G)
    xi  = -lr (m - S S^T m)                    (the step, projected on the horizontal space at S)
    U Sigma V^T = xi                           (thin SVD)
    S   <- qr( S V cos(Sigma) V^T + U sin(Sigma) V^T )   (the geodesic from S along xi, re-orthonormalised)

``qr`` keeps Q with the signs that make diag(R) positive. It is the bases' kernel constraint, so an optimizer
without the Riemannian step (a test's plain Adam) still keeps them orthonormal by retraction; the architecture
supplies the Riemannian one through :meth:`effbench.method.ArchitectureMethod.training_optimizer`, built from
the recipe's optimizer (its class, options and schedule). The bases take no weight decay (nor in the paper).

Applied to the backbone named by ``backbone`` (default ``resnet-cifar``): its ``logits`` layer is replaced.
Options: ``subspace_dim`` k (default 8, the paper's GCR-8) and ``scale`` gamma (default 25, the official
head's). On digits the head costs k times the linear one: 5,120 parameters instead of 650 on ResNet-20, +1.6%.

Paper: Wang, Li & Zhang, "Get the Best of Both Worlds: Improving Accuracy and Transferability by Grassmann
Class Representation", ICCV 2023 (https://arxiv.org/abs/2308.01547); checked against the official code
(innerlee/GCR: ``grassmann_head.py``, ``rsgd.py``, ``rsgd_adamw.py``). Small-faithful: the head and the
update are the paper's, on a CIFAR-size backbone instead of ResNet50-D / Swin on ImageNet. Deviations: the
re-orthonormalisation runs after every step (the official ``reorth_step`` defaults to 5, its AdamW variant
to 1); the norms take a 1e-12 floor under the square root so the gradient at a zero feature is finite.

TFLite: the head is builtins (FULLY_CONNECTED, reshape, square, sum, sqrt, L2-normalisation): it converts.
"""

from __future__ import annotations

from typing import Any, ClassVar

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dropin import DropInArchitecture

Shape = tuple[int, ...]
# The official RSGD's momentum for the subspaces, whatever the recipe's optimizer.
SUBSPACE_MOMENTUM = 0.9


def class_blocks(kernel: tf.Tensor, dim: int) -> tf.Tensor:
    """A (d, C * dim) kernel as its C bases, (C, d, dim)."""
    return tf.transpose(tf.reshape(kernel, [kernel.shape[0], -1, dim]), [1, 0, 2])


def from_class_blocks(blocks: tf.Tensor) -> tf.Tensor:
    """The inverse of :func:`class_blocks`."""
    return tf.reshape(tf.transpose(blocks, [1, 0, 2]), [blocks.shape[1], -1])


def orthonormalized(blocks: tf.Tensor) -> tf.Tensor:
    """Each (d, k) block's Q factor, signed so that R's diagonal is positive (an orthonormal block is kept)."""
    q, r = tf.linalg.qr(blocks)
    signs = tf.where(tf.linalg.diag_part(r) < 0, -1.0, 1.0)
    return q * signs[:, tf.newaxis, :]


def geodesic_step(bases: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """The points reached from ``bases`` (C, d, k) along the geodesics of ``step``'s horizontal part."""
    tangent = step - bases @ tf.linalg.matmul(bases, step, transpose_a=True)
    sigma, u, v = tf.linalg.svd(tangent, full_matrices=False)
    sigma = sigma[:, tf.newaxis, :]
    moved = (bases @ v) * tf.cos(sigma) + u * tf.sin(sigma)
    return tf.linalg.matmul(moved, v, transpose_b=True)


@keras.utils.register_keras_serializable(package="effbench")
class GrassmannBases(keras.constraints.Constraint):
    """A (d, C * dim) kernel whose C blocks of ``dim`` columns are orthonormal: as a constraint, the QR retraction."""

    def __init__(self, dim: int):
        self.dim = int(dim)

    def __call__(self, kernel: tf.Tensor) -> tf.Tensor:
        return from_class_blocks(orthonormalized(class_blocks(kernel, self.dim)))

    def moved(self, kernel: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """``kernel`` moved along the manifold by ``step`` (:func:`geodesic_step` per class)."""
        blocks = geodesic_step(class_blocks(kernel, self.dim), class_blocks(step, self.dim))
        return from_class_blocks(blocks)

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim}


@keras.utils.register_keras_serializable(package="effbench")
class GrassmannLogits(keras.layers.Dense):
    """logit_c = ||scale * S_c^T x / ||x|| || (module docstring).

    A Dense layer of C * ``subspace_dim`` units without bias whose output is reduced to C norms: the backbone's
    logits layer keeps its kind, and the complexity track counts its matmul as a Dense's.
    """

    def __init__(self, classes: int, subspace_dim: int = 8, scale: float = 25.0, **kwargs: Any):
        # A reloaded config carries the Dense fields that follow from the three above.
        for derived in ("units", "use_bias", "kernel_initializer", "kernel_constraint", "activation"):
            kwargs.pop(derived, None)
        super().__init__(
            int(classes) * int(subspace_dim),
            use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0),
            kernel_constraint=GrassmannBases(subspace_dim),
            **kwargs,
        )
        self.classes, self.subspace_dim, self.scale = int(classes), int(subspace_dim), float(scale)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        if self.subspace_dim > int(input_shape[-1]):
            raise ValueError(
                f"GrassmannLogits '{self.name}': subspace_dim {self.subspace_dim} exceeds the feature size "
                f"{int(input_shape[-1])}"
            )
        self.kernel.assign(GrassmannBases(self.subspace_dim)(self.kernel))  # the official init: normal, then QR

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        projections = self.scale * tf.matmul(tf.math.l2_normalize(inputs, axis=-1), self.kernel)
        per_class = tf.reshape(projections, [-1, self.classes, self.subspace_dim])
        return tf.sqrt(tf.reduce_sum(tf.square(per_class), axis=-1) + 1e-12)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape([input_shape[0], self.classes])

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        features, units = input_shapes[0][-1], self.units
        # The matmul; then normalising x (square, sum, rsqrt, multiply) and each norm (square, sum, sqrt).
        return features * units, 3 * features + 2 * units + self.classes

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "classes": self.classes, "subspace_dim": self.subspace_dim,
                "scale": self.scale}  # fmt: skip


class RiemannianSubspaceSteps:
    """Mixed into a tf_keras optimizer class: weights constrained to :class:`GrassmannBases` take the RSGD step
    of the module docstring at the optimizer's learning rate, with a momentum of their own; the others, the
    optimizer's own update."""

    def build(self, var_list: list[tf.Variable]) -> None:
        fresh = not getattr(self, "_built", False)
        super().build(var_list)
        if fresh:
            self._subspace_momenta = {
                self._var_key(variable): self.add_variable_from_reference(variable, "subspace_momentum")
                for variable in var_list
                if isinstance(variable.constraint, GrassmannBases)
            }

    def _use_weight_decay(self, variable: tf.Variable) -> bool:
        return not isinstance(variable.constraint, GrassmannBases) and super()._use_weight_decay(variable)

    def update_step(self, gradient: tf.Tensor, variable: tf.Variable) -> None:
        bases = variable.constraint
        if not isinstance(bases, GrassmannBases):
            return super().update_step(gradient, variable)
        momentum = self._subspace_momenta[self._var_key(variable)]
        momentum.assign(SUBSPACE_MOMENTUM * momentum + gradient)
        variable.assign(bases.moved(variable, -tf.cast(self.learning_rate, variable.dtype) * momentum))


_RIEMANNIAN_CLASSES: dict[type, type] = {}


def riemannian(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """``optimizer``'s class, options and schedule, with :class:`RiemannianSubspaceSteps` for the subspaces.

    Not XLA-compiled: the step takes an SVD per class.
    """
    base = type(optimizer)
    if base not in _RIEMANNIAN_CLASSES:
        _RIEMANNIAN_CLASSES[base] = type(f"Riemannian{base.__name__}", (RiemannianSubspaceSteps, base), {})
    return _RIEMANNIAN_CLASSES[base].from_config({**optimizer.get_config(), "jit_compile": False})


@register_method(
    "gcr",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Get the Best of Both Worlds: Improving Accuracy and Transferability by Grassmann Class Representation",
        2023,
        "https://arxiv.org/abs/2308.01547",
    ),
    summary="a backbone whose classes are k-dim subspaces (logit: projection norm), trained by Riemannian SGD "
    "on the Grassmannian; small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class GrassmannClassRepresentation(DropInArchitecture):
    default_options: ClassVar[dict[str, Any]] = {
        **DropInArchitecture.default_options,
        "subspace_dim": 8,
        "scale": 25.0,
    }

    def replace(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name != "logits":
            return None
        classes = layer.get_config()["units"]
        return GrassmannLogits(classes, self.options["subspace_dim"], self.options["scale"], name=layer.name)

    def training_optimizer(self, recipe_optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
        return riemannian(recipe_optimizer)
