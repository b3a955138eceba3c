"""Poincaré ResNet: a CIFAR ResNet whose convolutions, batch norms and residual additions are hyperbolic.

Geometry: the Poincaré ball of curvature -c, B = {x : c ||x||^2 < 1}, lambda_x = 2 / (1 - c ||x||^2), Möbius addition

    x (+) y = ((1 + 2c<x,y> + c||y||^2) x + (1 - c||x||^2) y) / (1 + 2c<x,y> + c^2 ||x||^2 ||y||^2),
    exp_0(v) = tanh(sqrt(c) ||v||) v / (sqrt(c) ||v||),      log_0(y) = artanh(sqrt(c) ||y||) y / (sqrt(c) ||y||).

As in the official code, a layer takes and returns tangent vectors at the origin (a feature map of C channels is a
point of the C-dimensional ball at each position, through exp_0), so ReLU, pooling and padding act on them.

- Poincaré fully connected layer (Shimizu et al.'s HNN++), weights z_k (columns of Z) and offsets r_k, on x = exp_0(v):
      v_k = 2 ||z_k|| / sqrt(c) * asinh( sqrt(c) lambda_x <x, z_k / ||z_k||> cosh(2 sqrt(c) r_k)
                                         - (lambda_x - 1) sinh(2 sqrt(c) r_k) ),
      w = sinh(sqrt(c) v) / sqrt(c),     y = proj( w / (1 + sqrt(1 + c ||w||^2)) ),     output log_0(y).
- Poincaré 2D convolution: the same on each receptive field, the k x k patch of C-channel tangent vectors scaled by
  the beta-concatenation factor B(kkC / 2, 1/2) / B(C / 2, 1/2) and taken as one point exp_0(p) of the kkC-dim ball.
  Since exp_0 only rescales, <exp_0(p), z_k> = tanh(sqrt(c)||p||) / (sqrt(c)||p||) <p, z_k>: an ordinary convolution
  of the scaled input with Z, and ||p||^2 a window sum of its squares (so TFLite runs two CONV_2Ds).
- Identity initialisation (the paper's fix for collapse to the origin): Z = I / 2, r = 0.
- Poincaré midpoint batch norm, per position's C-dim point x_i of the batch: the midpoint
      m = sum_i gamma_i^2 x_i / (sum_i gamma_i^2 - N / 2),  gamma_i^2 = 1 / (1 - c ||x_i||^2),
      mu = gamma_m / (1 + gamma_m) m,  gamma_m = 1 / sqrt(1 - c ||m||^2),
  the Fréchet variance s^2 = mean_i d(x_i, mu)^2, and with a learned mean beta = exp_0(b) and variance v:
      y_i = exp_beta( sqrt(v / (s^2 + 1e-6)) P_{mu -> beta}( log_mu(x_i) ) ),   P the parallel transport (gyration).
- Poincaré residual: log_0( exp_0(f(x)) (+) exp_0(shortcut(x)) ), then ReLU; the shortcut is the identity, or a
  1x1 Poincaré convolution where the block strides or widens.

Network (ResNet-20 layout by default, ``depth`` = 6n + 2): a 3x3 Poincaré conv of ``base`` channels, Poincaré BN,
ReLU; three stages of n blocks (conv-BN-ReLU-conv-BN, residual, ReLU) of base, 2 base and 4 base channels, the
first block of stages 2 and 3 striding by 2; global average pooling (of the tangent vectors, as the official code);
the Poincaré fully connected layer to the classes, named ``logits`` (its output, log_0(y), is the logits).
Curvature ``curvature`` c = 0.1, fixed (the official default). All parameters are Euclidean (the BN mean is
exp_0 of one): the recipe's optimizer trains them as it is, no Riemannian step is needed.

Paper: van Spengler, Berkhout & Mettes, "Poincaré ResNet", ICCV 2023 (https://arxiv.org/abs/2303.14027); checked
against the official code (maxvanspengler/poincare-resnet: ``models/nn/modules``, ``models/manifolds``,
``models/resnets/hyperbolic.py``). Small-faithful: the layers and the network are the paper's, at ResNet-20 size.
Deviations: lambda_x in the fully connected layer is the HNN++ paper's 2 / (1 - c||x||^2) (the official code
computes 2 (1 - c||x||^2)); the batch norm keeps moving averages of the midpoint (as log_0) and variance, momentum
0.9, for inference (the official layer always uses the batch's statistics); no hand-written backward passes (TF's
graphs stay small at this size); sqrt(c) v is clipped to +-15 before sinh and artanh's argument below 1 - 1e-6, and
norms take a 1e-12 floor, float32 guards; padding and strides are Keras "same" (zeros: the origin).

TFLite: every op is a builtin (CONV_2D, FULLY_CONNECTED, TANH, EXP, LOG, SQRT, SIGN and arithmetic): it converts.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._layers import BN_MOMENTUM, Geometry, model_name

Shape = tuple[int, ...]
DEPTHS = (8, 20, 32, 56)
# The official float32 margin: points are kept at norm <= (1 - 4e-3) / sqrt(c).
BALL_MARGIN = 4e-3
FLOOR = 1e-12
SINH_LIMIT = 15.0
# Elementwise operations per output element, roughly: the fully connected formula; the batch norm's midpoint,
# distance, logarithm, transport and exponential; the residual's two exponentials, the addition and the logarithm.
FC_ELEMENTWISE, BN_ELEMENTWISE, RESIDUAL_ELEMENTWISE = 20, 60, 30


# ----------------------------------------------------------------------------------------------- the ball


def _norm(x: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True) + FLOOR)


def _artanh(x: tf.Tensor) -> tf.Tensor:
    x = tf.clip_by_value(x, -1.0 + 1e-6, 1.0 - 1e-6)
    return 0.5 * tf.math.log((1.0 + x) / (1.0 - x))


def _asinh(x: tf.Tensor) -> tf.Tensor:
    # Not tf.math.asinh: TFLite has no builtin for it.
    return tf.sign(x) * tf.math.log(tf.abs(x) + tf.sqrt(tf.square(x) + 1.0))


def _sinh(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * (tf.exp(x) - tf.exp(-x))


def _cosh(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * (tf.exp(x) + tf.exp(-x))


def project(x: tf.Tensor, c: float) -> tf.Tensor:
    """``x`` pulled inside the ball to norm at most (1 - BALL_MARGIN) / sqrt(c)."""
    largest = (1.0 - BALL_MARGIN) / math.sqrt(c)
    norm = _norm(x)
    return x * tf.minimum(1.0, largest / norm)


def expmap0(v: tf.Tensor, c: float) -> tf.Tensor:
    norm = _norm(v) * math.sqrt(c)
    return project(tf.tanh(norm) * v / norm, c)


def logmap0(y: tf.Tensor, c: float) -> tf.Tensor:
    norm = _norm(y) * math.sqrt(c)
    return _artanh(norm) * y / norm


def mobius_add(x: tf.Tensor, y: tf.Tensor, c: float) -> tf.Tensor:
    x2, y2 = tf.reduce_sum(x * x, -1, keepdims=True), tf.reduce_sum(y * y, -1, keepdims=True)
    xy = tf.reduce_sum(x * y, -1, keepdims=True)
    numerator = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return numerator / tf.maximum(1 + 2 * c * xy + c**2 * x2 * y2, 1e-15)


def conformal_factor(x: tf.Tensor, c: float) -> tf.Tensor:
    """lambda_x = 2 / (1 - c ||x||^2)."""
    return 2.0 / tf.maximum(1.0 - c * tf.reduce_sum(x * x, -1, keepdims=True), 1e-15)


def expmap(x: tf.Tensor, v: tf.Tensor, c: float) -> tf.Tensor:
    norm = _norm(v)
    step = tf.tanh(math.sqrt(c) * conformal_factor(x, c) * norm / 2) * v / (math.sqrt(c) * norm)
    return project(mobius_add(x, step, c), c)


def logmap(x: tf.Tensor, y: tf.Tensor, c: float) -> tf.Tensor:
    difference = mobius_add(-x, y, c)
    norm = _norm(difference)
    scale = 2.0 / (math.sqrt(c) * conformal_factor(x, c))
    return scale * _artanh(math.sqrt(c) * norm) * difference / norm


def distance(x: tf.Tensor, y: tf.Tensor, c: float) -> tf.Tensor:
    return 2.0 / math.sqrt(c) * _artanh(math.sqrt(c) * _norm(mobius_add(-x, y, c)))


def gyration(u: tf.Tensor, v: tf.Tensor, w: tf.Tensor, c: float) -> tf.Tensor:
    """gyr[u, v] w."""
    u2, v2 = tf.reduce_sum(u * u, -1, keepdims=True), tf.reduce_sum(v * v, -1, keepdims=True)
    uv, uw = tf.reduce_sum(u * v, -1, keepdims=True), tf.reduce_sum(u * w, -1, keepdims=True)
    vw = tf.reduce_sum(v * w, -1, keepdims=True)
    a = -(c**2) * uw * v2 + c * vw + 2 * c**2 * uv * vw
    b = -(c**2) * vw * u2 - c * uw
    d = 1 + 2 * c * uv + c**2 * u2 * v2
    return w + 2 * (a * u + b * v) / tf.maximum(d, 1e-15)


def transport(x: tf.Tensor, y: tf.Tensor, v: tf.Tensor, c: float) -> tf.Tensor:
    """Parallel transport of the tangent vector ``v`` from ``x`` to ``y``."""
    return gyration(y, -x, v, c) * conformal_factor(x, c) / conformal_factor(y, c)


def midpoint(x: tf.Tensor, c: float) -> tf.Tensor:
    """The Poincaré midpoint of the points ``x`` (N, C)."""
    gamma_sq = 1.0 / tf.maximum(1.0 - c * tf.reduce_sum(x * x, -1, keepdims=True), 1e-15)
    count = tf.cast(tf.shape(x)[0], x.dtype)
    m = tf.reduce_sum(gamma_sq * x, 0, keepdims=True) / (tf.reduce_sum(gamma_sq, 0, keepdims=True) - count / 2)
    gamma_m = 1.0 / tf.sqrt(tf.maximum(1.0 - c * tf.reduce_sum(m * m, -1, keepdims=True), 1e-15))
    return gamma_m / (1 + gamma_m) * m


def fully_connected(
    x_dot_z: tf.Tensor, x_norm_sq: tf.Tensor, z_norm: tf.Tensor, offsets: tf.Tensor, c: float
) -> tf.Tensor:
    """The Poincaré fully connected layer's output point y (module docstring), from <x, z_k>, ||x||^2, ||z_k||, r_k."""
    root = math.sqrt(c)
    lam = 2.0 / tf.maximum(1.0 - c * x_norm_sq, 1e-15)
    shift = 2.0 * root * offsets
    argument = root * lam * x_dot_z / z_norm * _cosh(shift) - (lam - 1.0) * _sinh(shift)
    v = 2.0 * z_norm / root * _asinh(argument)
    w = _sinh(tf.clip_by_value(root * v, -SINH_LIMIT, SINH_LIMIT)) / root
    return project(w / (1.0 + tf.sqrt(1.0 + c * tf.reduce_sum(w * w, -1, keepdims=True))), c)


def beta_function(a: float, b: float) -> float:
    return math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


# ----------------------------------------------------------------------------------------------- the layers


@keras.utils.register_keras_serializable(package="effbench")
class PoincareConv2D(keras.layers.Conv2D):
    """The Poincaré 2D convolution on tangent vectors at the origin (module docstring), identity-initialised."""

    def __init__(self, filters: int, kernel_size: Any, strides: Any = (1, 1), curvature: float = 0.1, **kwargs: Any):
        for derived in ("padding", "use_bias", "activation"):
            kwargs.pop(derived, None)
        super().__init__(filters, kernel_size, strides=strides, padding="same", use_bias=True, **kwargs)
        self.curvature = float(curvature)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        height, width, channels, filters = self.kernel.shape
        # Z = I / 2 over the patch's features in PyTorch's unfold order (channel, row, column).
        unfold_index = tf.range(channels)[None, None, :] * height * width + tf.range(height * width)[:, None]
        unfold_index = tf.reshape(unfold_index, [height, width, channels])
        self.kernel.assign(0.5 * tf.cast(unfold_index[..., None] == tf.range(filters), self.kernel.dtype))
        fan = height * width * channels
        self.concatenation_scale = beta_function(fan / 2, 0.5) / beta_function(channels / 2, 0.5)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        c = self.curvature
        patches = inputs * self.concatenation_scale
        patch_dot_z = self.convolution_op(patches, self.kernel)
        window = tf.ones([*self.kernel.shape[:3], 1], patches.dtype)
        patch_norm = tf.sqrt(self.convolution_op(tf.square(patches), window) + FLOOR)
        shrink = tf.tanh(math.sqrt(c) * patch_norm) / (math.sqrt(c) * patch_norm)  # exp_0 of the patch
        x_norm_sq = tf.square(tf.tanh(math.sqrt(c) * patch_norm)) / c
        z_norm = tf.sqrt(tf.reduce_sum(tf.square(self.kernel), axis=[0, 1, 2]) + FLOOR)
        return logmap0(fully_connected(shrink * patch_dot_z, x_norm_sq, z_norm, self.bias, c), c)

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        positions = math.prod(output_shapes[0][1:-1])
        fan = math.prod(self.kernel.shape[:3])
        # The convolution with Z and the window sum of squares.
        return positions * fan * (self.filters + 1), FC_ELEMENTWISE * math.prod(output_shapes[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "curvature": self.curvature}


@keras.utils.register_keras_serializable(package="effbench")
class PoincareDense(keras.layers.Dense):
    """The Poincaré fully connected layer on tangent vectors at the origin, identity-initialised."""

    def __init__(self, units: int, curvature: float = 0.1, **kwargs: Any):
        for derived in ("use_bias", "activation"):
            kwargs.pop(derived, None)
        super().__init__(units, use_bias=True, **kwargs)
        self.curvature = float(curvature)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.kernel.assign(0.5 * tf.eye(*self.kernel.shape, dtype=self.kernel.dtype))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        c = self.curvature
        x = expmap0(inputs, c)
        z_norm = tf.sqrt(tf.reduce_sum(tf.square(self.kernel), axis=0) + FLOOR)
        x_norm_sq = tf.reduce_sum(x * x, -1, keepdims=True)
        return logmap0(fully_connected(tf.matmul(x, self.kernel), x_norm_sq, z_norm, self.bias, c), c)

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        return math.prod(self.kernel.shape), FC_ELEMENTWISE * self.units + 3 * input_shapes[0][-1]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "curvature": self.curvature}


@keras.utils.register_keras_serializable(package="effbench")
class PoincareBatchNorm(keras.layers.Layer):
    """Poincaré midpoint batch norm over the channel vectors of a (batch, ..., channels) map (module docstring)."""

    def __init__(self, curvature: float = 0.1, momentum: float = BN_MOMENTUM, **kwargs: Any):
        super().__init__(**kwargs)
        self.curvature, self.momentum = float(curvature), float(momentum)

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        self.mean = self.add_weight(name="mean", shape=(channels,), initializer="zeros")
        self.variance = self.add_weight(name="variance", shape=(), initializer="ones")
        self.moving_mean = self.add_weight(name="moving_mean", shape=(channels,), initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=(), initializer="ones", trainable=False)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        c = self.curvature
        x = expmap0(tf.reshape(inputs, [-1, inputs.shape[-1]]), c)
        if training:
            batch_mean = midpoint(x, c)
            batch_variance = tf.reduce_mean(tf.square(distance(x, batch_mean, c)))
            keep = self.momentum
            self.moving_mean.assign(keep * self.moving_mean + (1 - keep) * logmap0(batch_mean, c)[0])
            self.moving_variance.assign(keep * self.moving_variance + (1 - keep) * batch_variance)
        else:
            batch_mean, batch_variance = expmap0(self.moving_mean[tf.newaxis], c), self.moving_variance
        target = expmap0(self.mean[tf.newaxis], c)
        moved = transport(batch_mean, target, logmap(batch_mean, x, c), c)
        rescaled = tf.sqrt(self.variance / (batch_variance + 1e-6)) * moved
        output = logmap0(expmap(target, rescaled, c), c)
        return tf.reshape(output, [-1, *inputs.shape[1:]])

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        return 0, BN_ELEMENTWISE * math.prod(output_shapes[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "curvature": self.curvature, "momentum": self.momentum}


@keras.utils.register_keras_serializable(package="effbench")
class PoincareResidual(keras.layers.Layer):
    """log_0( exp_0(branch) (+) exp_0(shortcut) ): the Poincaré residual addition of two tangent maps."""

    def __init__(self, curvature: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.curvature = float(curvature)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        branch, shortcut = inputs
        c = self.curvature
        return logmap0(mobius_add(expmap0(branch, c), expmap0(shortcut, c), c), c)

    def effbench_cost(self, input_shapes: list[Shape], output_shapes: list[Shape]) -> tuple[int, int]:
        return 0, RESIDUAL_ELEMENTWISE * math.prod(output_shapes[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "curvature": self.curvature}


# ----------------------------------------------------------------------------------------------- the network


@register_method(
    "poincare-resnet",
    suite="architectures",
    kind="architecture",
    paper=Paper("Poincaré ResNet", 2023, "https://arxiv.org/abs/2303.14027"),
    summary="a CIFAR ResNet on the Poincaré ball: hyperbolic convolutions, midpoint batch norm, Möbius residuals; "
    "small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class PoincareResNet(ArchitectureMethod):
    default_options: ClassVar[dict[str, Any]] = {"depth": 20, "base": 16, "curvature": 0.1}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options["depth"] not in DEPTHS:
            raise ValueError(
                f"poincare-resnet depth must be one of {', '.join(map(str, DEPTHS))} (6n+2); "
                f"got {self.options['depth']}"
            )
        if not self.options["curvature"] > 0:
            raise ValueError(f"poincare-resnet curvature must be positive; got {self.options['curvature']}")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(tuple(input_shape))
        c, base = float(self.options["curvature"]), int(self.options["base"])
        inputs, x = geometry.inputs()
        x = self.conv_bn(x, base, geometry.kernel(3), (1, 1), c)
        x = keras.layers.ReLU()(x)
        for stage in range(3):
            for block in range((self.options["depth"] - 2) // 6):
                step = 2 if stage > 0 and block == 0 else 1
                x = self.block(x, base * 2**stage, geometry.stride(step, x), geometry, c)
        x = keras.layers.GlobalAveragePooling2D()(x)
        logits = PoincareDense(num_classes, curvature=c, name="logits")(x)
        return keras.Model(inputs, logits, name=model_name(self.spec.slug, self.options))

    @staticmethod
    def conv_bn(x: tf.Tensor, channels: int, kernel: tuple[int, int], strides: tuple[int, int], c: float) -> tf.Tensor:
        x = PoincareConv2D(channels, kernel, strides, curvature=c)(x)
        return PoincareBatchNorm(curvature=c)(x)

    def block(self, x: tf.Tensor, channels: int, strides: tuple[int, int], geometry: Geometry, c: float) -> tf.Tensor:
        branch = self.conv_bn(x, channels, geometry.kernel(3), strides, c)
        branch = keras.layers.ReLU()(branch)
        branch = self.conv_bn(branch, channels, geometry.kernel(3), (1, 1), c)
        shortcut = x
        if strides != (1, 1) or x.shape[-1] != channels:
            shortcut = PoincareConv2D(channels, (1, 1), strides, curvature=c)(x)
        return keras.layers.ReLU()(PoincareResidual(curvature=c)([branch, shortcut]))
