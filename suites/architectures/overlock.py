r"""OverLoCK, small-faithful: Base-Net, Overview-Net and Focus-Net with context-mixing dynamic kernels (ContMix).

Three sub-networks, with ``w`` = option ``width`` (the official code's ``OverLoCK`` class, scaled down)::

    Base-Net      stem: conv3x3(w/2)-BN-GELU, conv3x3(w)-BN
                  stage 1 (w): RepConv blocks;  downsample: conv3x3 s2 + BN;  stage 2 (2w): RepConv blocks  -> x
    Overview-Net  downsample (4w), RepConv blocks -> coarse context c;  c_ori = Conv1x1_{w}(c),
                  c_up = bilinear upsampling of c_ori to x's size   ("overview first": top-down attention)
    Focus-Net     at x's size: Dynamic blocks on (x, h, c_up), h = c_up at first  ("look closely next")
                  downsample x (conv3x3 s2 + BN, to 4w) and h (conv3x3 s2 + BN);  Dynamic blocks on (x, h, c_ori);
                  the last one returns [x, h]
    head          Conv1x1(8w)-BN-SiLU, global mean pool, `logits`

RepConv block (Base-Net and Overview-Net): ``x <- x + DW3x3(x)``, then
``x <- x + Conv1x1(GRN(x' + DW3x3(x')))`` with ``x' = GELU(Conv1x1_{rC}(SE(BN(BN(DWk(LN(x)))))))``.

Dynamic block (Focus-Net), with the context flow ``h`` (w channels) carried beside the features ``x`` (C)::

    h <- s_1 * h + s_2 * h_r              (per-channel scales, from the second block on)
    f = [x, h];  f <- f + DW3x3(f);  u = f;  f = LN(f)
    x = GRN(Conv1x1_C(GELU(BN(DW3x3(f)))))
    gate = SiLU(BN(Conv1x1(x)));   lepe = BN(DWk(x))
    q = BN(Conv1x1_{C/2}(f[:C])),  k = BN(Conv1x1_{C/2}(AvgPool_{S x S}(f[C:])))   (S x S region centres of h)
    y = gate * SE(BN(Conv1x1(ContMix(q, k, x))) + lepe)
    f = u + Conv1x1_{C+w}(BN(y));  f <- f + DW3x3(f);  f <- f + MLP(LN(f));  [x, h] = f

ContMix (:class:`ContMix`), per group g of G (option ``groups``) and position i: the affinity of the query to
the S^2 region centres, :math:`a_i = q_{i,g} K_g^\top / \sqrt{C/G}`, becomes two dynamic kernels by one learned
linear map shared by all positions and groups, :math:`[\kappa^s_i, \kappa^l_i] = W a_i + b` (k_s^2 + k_l^2
values), plus a learned relative position bias per group and kernel offset, each softmax-normalised over its
kernel; the first half of x's channels (group g) is aggregated with :math:`\kappa^s` over the k_s x k_s
neighbourhood of i, the second half with :math:`\kappa^l` over k_l x k_l. The kernel at i mixes global context
(every region centre) and keeps a local window: the paper's point. GRN is ConvNeXt V2's global response norm.

Paper: Lou & Yu, "OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels",
CVPR 2025 (https://arxiv.org/abs/2502.20087); checked against the official code (LMMMEng/OverLoCK, the
``RepConvBlock``, ``DynamicConvBlock`` and ``OverLoCK`` classes). Scaled down (small-faithful): widths from 8,
one RepConv block per Base-Net/Overview-Net stage, two then one Dynamic blocks, kernels 5 (large: ContMix and
the large depthwise convs) and 3 (small), S = 4 region centres per axis (7 in the paper), 2 groups, MLP ratio 2.
Deviations: (1) each Dilated Reparam block (a large kernel plus parallel dilated branches, merged into one kernel
for deployment) is its deployed form, a single k x k depthwise conv, trained as such; (2) ContMix's neighbourhoods
are zero-padded at the map's border, where the paper's NATTEN kernel shifts the window inside the map, and the
map is not upsampled when smaller than the kernel; (3) no layer scale on the residuals, no auxiliary
(deep-supervision) head on the Overview-Net, no stochastic depth; (4) squeeze-excitation's hidden width is
max(4, C / 8) (16 at least in the paper's); (5) stem without strides, and per :class:`Geometry` an axis is
downsampled only while it keeps two positions, S and the pooling follow the map (S the largest divisor of
its size up to 4), so it builds on 8x8 digits (Focus-Net at 4x4 then 2x2), 32x32 images and (L, 1) vectors.
TFLite converts it with builtins only (tested): the dynamic aggregation is k^2 shifted slices times weights.
"""

from __future__ import annotations

import math
from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._attention2d import squeeze_excite
from suites.architectures._layers import BN_MOMENTUM, Geometry, logits_model, model_name

L = keras.layers
Pair = tuple[int, int]
GRN_OPS = 6  # per element: square, sum, sqrt; divide by the channel mean, scale-and-add, bias
SOFTMAX_OPS = 3


@keras.utils.register_keras_serializable(package="effbench")
class GlobalResponseNorm(keras.layers.Layer):
    """ConvNeXt V2's GRN: ``(gamma * N(x) + 1) * x + beta``, ``N`` = per-channel L2 norm over the map divided by
    its mean over channels; gamma and beta start at zero (the identity)."""

    def build(self, input_shape: Any) -> None:
        shape = (int(input_shape[-1]),)
        self.gamma = self.add_weight(name="gamma", shape=shape, initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        norm = tf.sqrt(tf.reduce_sum(tf.square(inputs), axis=[1, 2], keepdims=True))
        normalized = norm / (tf.reduce_mean(norm, axis=-1, keepdims=True) + 1e-6)
        return (self.gamma * normalized + 1.0) * inputs + self.beta

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        return 0, GRN_OPS * math.prod(outputs[0][1:])


@keras.utils.register_keras_serializable(package="effbench")
class ChannelSlice(keras.layers.Layer):
    """Channels ``[start, stop)`` of a map (splits the features from the context flow)."""

    def __init__(self, start: int, stop: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs[..., self.start : self.stop]

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        return 0, 0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.utils.register_keras_serializable(package="effbench")
class BilinearUpsampling(keras.layers.Layer):
    """Bilinear resize by integer ``factor`` per axis, half-pixel centres (PyTorch's ``align_corners=False``)."""

    def __init__(self, factor: Pair, **kwargs: Any):
        super().__init__(**kwargs)
        self.factor = tuple(int(f) for f in factor)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        size = (inputs.shape[1] * self.factor[0], inputs.shape[2] * self.factor[1])
        return tf.image.resize(inputs, size, method="bilinear")

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        # One lerp (2 ops) per interpolated axis and its combinations: 2, or 6 when both axes grow.
        axes = sum(f > 1 for f in self.factor)
        return 0, 2 * (2**axes - 1) * math.prod(outputs[0][1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


@keras.utils.register_keras_serializable(package="effbench")
class ContMix(keras.layers.Layer):
    """Context-mixing dynamic convolution of ``[query (B, H, W, Cq), region keys (B, Sy, Sx, Cq), values
    (B, H, W, C)]`` (module docstring): small kernel on the first half of the channels, large on the second."""

    def __init__(self, groups: int, small: Pair, large: Pair, **kwargs: Any):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.small, self.large = (tuple(int(k) for k in kernel) for kernel in (small, large))
        self.kernel_sizes = (math.prod(self.small), math.prod(self.large))

    def build(self, input_shape: Any) -> None:
        query_channels, value_channels = int(input_shape[0][-1]), int(input_shape[2][-1])
        if query_channels % self.groups or value_channels % (2 * self.groups):
            raise ValueError(
                f"ContMix: {self.groups} groups need query channels ({query_channels}) divisible by them and each "
                f"half of the value channels ({value_channels}) too"
            )
        regions = int(input_shape[1][1]) * int(input_shape[1][2])
        self.kernel_projection = self.add_weight(
            name="kernel_projection", shape=(regions, sum(self.kernel_sizes)), initializer="glorot_uniform"
        )
        self.kernel_bias = self.add_weight(name="kernel_bias", shape=(sum(self.kernel_sizes),), initializer="zeros")
        self.position_bias = self.add_weight(
            name="position_bias", shape=(self.groups, 1, sum(self.kernel_sizes)), initializer="zeros"
        )
        super().build(input_shape)

    def _grouped(self, x: tf.Tensor) -> tf.Tensor:
        """(B, H, W, C) -> (B, G, HW, C / G)."""
        positions, channels = x.shape[1] * x.shape[2], x.shape[3]
        x = tf.reshape(x, [-1, positions, self.groups, channels // self.groups])
        return tf.transpose(x, [0, 2, 1, 3])

    def kernels(self, query: tf.Tensor, key: tf.Tensor, value_channels: int) -> tuple[tf.Tensor, tf.Tensor]:
        """The small and large dynamic kernels, softmax-normalised: (B, H, W, G, k^2) each."""
        affinity = tf.matmul(self._grouped(query), self._grouped(key), transpose_b=True)
        affinity = affinity / math.sqrt(value_channels / self.groups)  # the official (dim / heads) ** -0.5
        logits = tf.tensordot(affinity, self.kernel_projection, axes=1) + self.kernel_bias + self.position_bias
        logits = tf.reshape(tf.transpose(logits, [0, 2, 1, 3]), [-1, query.shape[1], query.shape[2], self.groups,
                                                                sum(self.kernel_sizes)])  # fmt: skip
        small, large = tf.split(logits, list(self.kernel_sizes), axis=-1)
        return tf.nn.softmax(small, axis=-1), tf.nn.softmax(large, axis=-1)

    def aggregate(self, kernel: tf.Tensor, value: tf.Tensor, size: Pair) -> tf.Tensor:
        """Per position and group, the ``size`` neighbourhood of ``value`` (zero-padded) weighted by ``kernel``."""
        height, width, channels = value.shape[1:]
        padded = tf.pad(value, [[0, 0], [size[0] // 2, size[0] // 2], [size[1] // 2, size[1] // 2], [0, 0]])
        total = 0.0
        for offset in range(size[0] * size[1]):
            dy, dx = divmod(offset, size[1])
            shifted = tf.reshape(padded[:, dy : dy + height, dx : dx + width, :],
                                 [-1, height, width, self.groups, channels // self.groups])  # fmt: skip
            total = total + shifted * kernel[..., offset : offset + 1]
        return tf.reshape(total, [-1, height, width, channels])

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        query, key, value = inputs
        small, large = self.kernels(query, key, value.shape[-1])
        first, second = tf.split(value, 2, axis=-1)
        return tf.concat([self.aggregate(small, first, self.small), self.aggregate(large, second, self.large)], -1)

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        (_, height, width, query_channels), (_, sy, sx, _), (_, _, _, channels) = inputs
        positions, regions, kernel_values = height * width, sy * sx, sum(self.kernel_sizes)
        logits = self.groups * positions * kernel_values
        macs = (
            positions * regions * query_channels  # affinities
            + logits * regions  # the kernel projection
            + positions * channels // 2 * kernel_values  # the two aggregations
        )
        return macs, self.groups * positions * regions + (2 + SOFTMAX_OPS) * logits  # scaling; biases, softmax

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": self.groups, "small": self.small, "large": self.large}


def _largest_divisor(size: int, limit: int) -> int:
    return max(d for d in range(1, min(size, limit) + 1) if size % d == 0)


@register_method(
    "overlock",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels",
        2025,
        "https://arxiv.org/abs/2502.20087",
    ),
    summary="Base-Net, Overview-Net (coarse top-down context) and Focus-Net with ContMix dynamic kernels guided "
    "by that context; small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
)
class OverLoCK(ArchitectureMethod):
    default_options = {"width": 8, "kernel": 5, "small_kernel": 3, "regions": 4, "groups": 2, "mlp_ratio": 2}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(input_shape)
        self.geometry = geometry
        inputs, x = geometry.inputs()
        width = self.options["width"]
        x = self.conv_bn(x, max(1, width // 2), 3, (1, 1), "stem0")
        x = self.conv_bn(L.Activation("gelu", name="stem0_gelu")(x), width, 3, (1, 1), "stem1")
        x = self.rep_conv_block(x, "base1")
        x = self.rep_conv_block(self.conv_bn(x, 2 * width, 3, geometry.stride(2, x), "base2_down"), "base2")
        step = geometry.stride(2, x)
        context = self.rep_conv_block(self.conv_bn(x, 4 * width, 3, step, "overview_down"), "overview")
        context = L.Conv2D(width, 1, name="overview_context")(context)
        context_up = BilinearUpsampling(step, name="overview_context_up")(context) if step != (1, 1) else context
        x, h = self.dynamic_block(x, context_up, context_up, "focus1_block0", first=True)
        x, h = self.dynamic_block(x, h, context_up, "focus1_block1")
        x, h = (
            self.conv_bn(x, 4 * width, 3, step, "focus2_down"),
            self.conv_bn(h, width, 3, step, "focus2_context_down"),
        )
        x = self.dynamic_block(x, h, context, "focus2_block0", last=True)
        x = self.conv_bn(x, 8 * width, 1, (1, 1), "head", bias=False)
        x = L.GlobalAveragePooling2D(name="pool")(L.Activation("swish", name="head_silu")(x))
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))

    def conv_bn(self, x: tf.Tensor, filters: int, size: int, step: Pair, name: str, bias: bool = False) -> tf.Tensor:
        x = L.Conv2D(filters, self.geometry.kernel(size), strides=step, padding="same", use_bias=bias,
                     name=f"{name}_conv")(x)  # fmt: skip
        return L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)

    def depthwise(self, x: tf.Tensor, size: int, name: str, bias: bool = True) -> tf.Tensor:
        return L.DepthwiseConv2D(self.geometry.kernel(size), padding="same", use_bias=bias, name=name)(x)

    def residual_depthwise(self, x: tf.Tensor, name: str) -> tf.Tensor:
        """``x + DW3x3(x)`` (the official ``ResDWConv``)."""
        return L.Add(name=f"{name}_add")([x, self.depthwise(x, 3, name)])

    def batch_norm(self, x: tf.Tensor, name: str) -> tf.Tensor:
        return L.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)

    def conv_mlp(self, x: tf.Tensor, channels: int, name: str) -> tf.Tensor:
        """Conv1x1(rC)-GELU, ResDW3x3, GRN, Conv1x1(C)."""
        hidden = L.Conv2D(channels * self.options["mlp_ratio"], 1, activation="gelu", name=f"{name}_in")(x)
        hidden = GlobalResponseNorm(name=f"{name}_grn")(self.residual_depthwise(hidden, f"{name}_dw"))
        return L.Conv2D(channels, 1, name=f"{name}_out")(hidden)

    def se(self, x: tf.Tensor, name: str) -> tf.Tensor:
        return squeeze_excite(x, max(4, x.shape[-1] // 8), "gelu", name)

    def rep_conv_block(self, x: tf.Tensor, name: str) -> tf.Tensor:
        channels = x.shape[-1]
        x = self.residual_depthwise(x, f"{name}_dw")
        y = L.LayerNormalization(epsilon=1e-6, name=f"{name}_norm")(x)
        y = self.depthwise(y, self.options["kernel"], f"{name}_large", bias=False)
        y = self.batch_norm(self.batch_norm(y, f"{name}_large_bn"), f"{name}_bn")
        y = self.conv_mlp(self.se(y, f"{name}_se"), channels, f"{name}_mlp")
        return L.Add(name=f"{name}_add")([x, y])

    def dynamic_block(
        self, x: tf.Tensor, h: tf.Tensor, h_reference: tf.Tensor, name: str, first: bool = False, last: bool = False
    ) -> Any:
        channels, context_channels = x.shape[-1], h.shape[-1]
        if not first:
            scales = [L.DepthwiseConv2D(1, depthwise_initializer="ones", name=f"{name}_{part}_scale")(t)
                      for part, t in (("context", h), ("reference", h_reference))]  # fmt: skip
            h = L.Add(name=f"{name}_context")(scales)
        f = self.residual_depthwise(L.Concatenate(name=f"{name}_fuse")([x, h]), f"{name}_dw1")
        identity = f
        f = L.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(f)
        fused = L.Activation("gelu", name=f"{name}_fusion_gelu")(
            self.batch_norm(self.depthwise(f, 3, f"{name}_fusion_dw"), f"{name}_fusion_bn")
        )
        fused = GlobalResponseNorm(name=f"{name}_fusion_grn")(L.Conv2D(channels, 1, name=f"{name}_fusion_pw")(fused))
        gate = L.Activation("swish", name=f"{name}_gate")(self.conv_bn(fused, channels, 1, (1, 1), f"{name}_gate"))
        lepe = self.batch_norm(self.depthwise(fused, self.options["kernel"], f"{name}_lepe", bias=False),
                               f"{name}_lepe_bn")  # fmt: skip
        query = self.conv_bn(ChannelSlice(0, channels, name=f"{name}_features")(f), channels // 2, 1, (1, 1),
                             f"{name}_query")  # fmt: skip
        context = ChannelSlice(channels, channels + context_channels, name=f"{name}_context_part")(f)
        regions = [_largest_divisor(size, self.options["regions"]) for size in context.shape[1:3]]
        pool = (context.shape[1] // regions[0], context.shape[2] // regions[1])
        if pool != (1, 1):
            context = L.AveragePooling2D(pool, strides=pool, name=f"{name}_regions")(context)
        key = self.conv_bn(context, channels // 2, 1, (1, 1), f"{name}_key")
        kernels = [self.geometry.kernel(self.options[size]) for size in ("small_kernel", "kernel")]
        y = ContMix(self.options["groups"], *kernels, name=f"{name}_contmix")([query, key, fused])
        y = L.Add(name=f"{name}_lepe_add")([self.conv_bn(y, channels, 1, (1, 1), f"{name}_contmix_proj"), lepe])
        y = L.Multiply(name=f"{name}_gated")([gate, self.se(y, f"{name}_se")])
        y = L.Conv2D(channels + context_channels, 1, name=f"{name}_proj")(self.batch_norm(y, f"{name}_proj_bn"))
        f = self.residual_depthwise(L.Add(name=f"{name}_add1")([identity, y]), f"{name}_dw2")
        mlp = self.conv_mlp(L.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(f), f.shape[-1], f"{name}_mlp")
        f = L.Add(name=f"{name}_add2")([f, mlp])
        if last:
            return f
        return (ChannelSlice(0, channels, name=f"{name}_out_features")(f),
                ChannelSlice(channels, channels + context_channels, name=f"{name}_out_context")(f))  # fmt: skip
