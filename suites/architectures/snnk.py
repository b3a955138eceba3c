r"""Scalable Neural Network Kernels (SNNK): each hidden dense layer of a backbone as a random-feature kernel layer.

Mechanism: a feed-forward layer computes f(<w_j, x> + b_j) for each of its units j, which couples the input x
and the parameters w_j inside f. SNNK disentangles them: x and w_j are mapped *separately* by random
features, and only a dot product joins them,

    y_j = phi(x)^T psi_j + b_j,    phi(x) = relu(G^T x) / sqrt(m),    G in R^{d x m},  G_{ik} ~ N(0, 1),

where G is drawn once and fixed (not trained) and m = ``features``. Started from psi_j = phi(w_j) (w_j a
fresh Glorot draw of the replaced layer's kernel), the product is an unbiased estimate of the ReLU (arc-cosine)
kernel of the pair,

    E_G[phi(x)^T phi(w)] = E_g[relu(g.x) relu(g.w)]
                         = ||x|| ||w|| (sin t + (pi - t) cos t) / (2 pi),   t = angle(x, w),

the ReLU-SNNK of the paper (its official code's ``NNK_Relu``), a nonlinear function of <x, w> and the norms:
the layer's nonlinearity, so the replaced layer's activation goes. Then psi (m x units) is trained directly,
as the official code makes ``phi(W)`` the trained parameter: the layer holds m x units trainable weights
instead of d x units (fewer when m < d, the paper's parameter saving), plus the fixed d x m projection, which
is not trained but ships in the file (it counts in ``params``, and in the packed size). Its cost is
d m + m units MACs per example, against d units for the dense layer.

Applied to the hidden ``Dense`` layers of the backbone named by ``backbone`` (default ``mlp``, the vector
tasks' default backbone); the logits layer stays a ``Dense``. TFLite: FULLY_CONNECTED (x G, with the
1 / sqrt(m) folded into G: relu is positively homogeneous), RELU, FULLY_CONNECTED (psi), builtins only.

Paper: Sehanobish, Choromanski, Zhao, Dubey & Likhosherstov, "Scalable Neural Network Kernels", ICLR 2024
(https://arxiv.org/abs/2310.13225); checked against the official code (arijitthegame/neural-network-kernels,
``src/nnk/nnk.py``, ``NNK_Relu``). Scale: small-faithful for the ReLU-SNNK layer. Deviations: only the ReLU
random features are implemented, not the paper's universal random features (URFs) for other f (exp, sin,
the asymmetric variants) nor network bundling or its closed-form fit; a learned bias b_j (the replaced layer's
``use_bias``) is added, which the official layer lacks (its code leaves it as a TODO); G is i.i.d. Gaussian,
not the optional orthogonal draw.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dropin import DenseDropIn

Shape = tuple[int, ...]


def relu_features(z: tf.Tensor, projection: tf.Tensor) -> tf.Tensor:
    """phi(z) = relu(z G) / sqrt(m) for rows z, with G (d x m) the ``projection``."""
    return tf.nn.relu(tf.matmul(z, projection / math.sqrt(projection.shape[-1])))


@keras.utils.register_keras_serializable(package="effbench")
class SNNKDense(keras.layers.Layer):
    """``units`` outputs phi(x)^T psi_j + b_j over ``features`` fixed random ReLU features (module docstring)."""

    def __init__(
        self, units: int, features: int, use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ):  # fmt: skip
        super().__init__(**kwargs)
        self.units, self.features, self.use_bias = int(units), int(features), bool(use_bias)
        self.kernel_initializer = keras.initializers.serialize(keras.initializers.get(kernel_initializer))

    def build(self, input_shape: Any) -> None:
        inputs = int(input_shape[-1])
        self.projection = self.add_weight(
            name="projection",
            shape=(inputs, self.features),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            trainable=False,
        )
        self.feature_weights = self.add_weight(
            name="feature_weights", shape=(self.features, self.units), initializer=self._features_of_fresh_kernel
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None
        super().build(input_shape)

    def _features_of_fresh_kernel(self, shape: Shape, dtype: Any = None) -> tf.Tensor:
        """psi = phi(W) for a fresh draw W (d x units) of the replaced layer's kernel initializer."""
        kernel = keras.initializers.get(self.kernel_initializer)((self.projection.shape[0], self.units), dtype)
        return tf.transpose(relu_features(tf.transpose(kernel), self.projection))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = tf.matmul(relu_features(inputs, self.projection), self.feature_weights)
        return outputs + self.bias if self.bias is not None else outputs

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        rows = math.prod(output_shapes[0][1:-1])
        inputs = input_shapes[0][-1]
        macs = rows * (inputs * self.features + self.features * self.units)
        return macs, rows * (self.features + self.use_bias * self.units)  # the relu, the bias add

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "features": self.features,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
        }


@register_method(
    "snnk",
    suite="architectures",
    kind="architecture",
    paper=Paper("Scalable Neural Network Kernels", 2024, "https://arxiv.org/abs/2310.13225"),
    summary="each hidden Dense a ReLU-SNNK layer: fixed random ReLU features of x, a trained `features` x units "
    "matrix; small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
)
class SNNK(DenseDropIn):
    default_options: ClassVar[dict[str, Any]] = {**DenseDropIn.default_options, "features": 128}

    def dense_replacement(self, layer: keras.layers.Dense) -> keras.layers.Layer:
        config = layer.get_config()
        return SNNKDense(
            config["units"],
            self.options["features"],
            use_bias=config["use_bias"],
            kernel_initializer=config["kernel_initializer"],
            name=layer.name,
        )
