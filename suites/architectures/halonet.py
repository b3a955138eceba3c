r"""HaloNet, small-faithful: a bottleneck ResNet whose 3x3 convs are blocked local self-attention with halos.

Blocked local self-attention (:class:`HaloAttention`). The query map is cut into non-overlapping blocks of
:math:`b \times b` positions; every query of a block attends to the same keys, the
:math:`(b + 2h) \times (b + 2h)` window of the block grown by a halo of :math:`h` positions on each side
(zeros beyond the map's border, as the paper's padding does). Per head, with query :math:`q` at position
:math:`p` and key :math:`k'` at :math:`p'`,

.. math::  \ell(q, k') = \frac{q \cdot k'}{\sqrt{d}}
           + q \cdot (r^{\mathrm{row}}_{p'_y - p_y} + r^{\mathrm{col}}_{p'_x - p_x}),
           \qquad o = \sum_{k'} \operatorname{softmax}(\ell)\, v'

with learned relative embeddings per row offset and per column offset (factorised 2-D relative position
embeddings, as the paper's and timm's ``PosEmbedRel``; initialised from :math:`N(0, 1/d)`). Attention
downsampling: in a strided block the queries come from a strided 1x1 conv, so a block of :math:`b \times b`
key positions holds :math:`(b/s) \times (b/s)` queries, each at its true position :math:`s \cdot u` in the
block for the offsets above. Blocks are cut with Reshape/Transpose/Concatenate only (the haloed windows are a
block plus the first :math:`2h` rows or columns of the next one, so :math:`2h \le b`), which TFLite runs with
builtins (tested).

Network, with ``w`` = option ``width``: stem conv3x3(w)-BN-ReLU; three stages of ``blocks`` bottlenecks with
w, 2w, 4w attention channels and 4x that at their output (stride 1, 2, 2: the first block of a strided
stage downsamples by attention, its shortcut by a strided 1x1 conv + BN)::

    x <- ReLU( BN(Conv1x1_{4c}( ReLU(BN( HaloAttn(Conv1x1_q(z), Conv1x1_k(z), Conv1x1_v(z)) )) )) + shortcut(x) ),
    z = ReLU(BN(Conv1x1_c(x)))

then global mean pool and ``logits``. ``heads = c / head_dim``.

Paper: Vaswani, Ramachandran, Srinivas, Parmar, Hechtman & Shlens, "Scaling Local Self-Attention for Parameter
Efficient Visual Backbones", CVPR 2021 (https://arxiv.org/abs/2103.12731). Scaled down (small-faithful): block
4 and halo 1 (the paper's HaloNets use b = 8, h = 3 on 224x224 inputs), one block per stage, widths from 8.
Deviations: (1) a 3x3 conv stem without a max pool instead of the 7x7 strided stem; (2) per axis the block is
the largest divisor of the map's size not above ``block`` and divisible by the stride, the halo at most half of
it, and an axis is strided only where its size is even and keeps two positions, so the model builds on 8x8
digits, 32x32 images and (L, 1) vectors (whose column has blocks of 1 and no halo); (3) no final 1x1 conv
before pooling, no stochastic depth or label smoothing (training recipe), no relative-embedding variants
beyond the factorised one.
"""

from __future__ import annotations

import math
from typing import Any

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._attention2d import grid_positions, relative_offsets
from suites.architectures._layers import BN_MOMENTUM, Geometry, bn_act, logits_model, model_name
from suites.architectures._transformer import AttentionCore

L = keras.layers
EXPANSION = 4
STAGE_STRIDES = (1, 2, 2)
Pair = tuple[int, int]


def _blocks(x: tf.Tensor, block: Pair) -> tf.Tensor:
    """(batch, H, W, C) -> (batch * blocks, b_y b_x, C), blocks row-major, positions row-major in each."""
    (width, channels), (by, bx) = x.shape[2:], block
    x = tf.reshape(x, [-1, by, width // bx, bx, channels])  # (batch * block rows, b_y, block columns, b_x, C)
    x = tf.transpose(x, [0, 2, 1, 3, 4])
    return tf.reshape(x, [-1, by * bx, channels])


def _unblocks(x: tf.Tensor, size: Pair, block: Pair) -> tf.Tensor:
    """The inverse of :func:`_blocks` for a (height, width) = ``size`` map."""
    (height, width), (by, bx), channels = size, block, x.shape[-1]
    x = tf.reshape(x, [-1, width // bx, by, bx, channels])
    x = tf.transpose(x, [0, 2, 1, 3, 4])
    return tf.reshape(x, [-1, height, width, channels])


def _grow(x: tf.Tensor, axis: int, block: int, halo: int) -> tf.Tensor:
    """Along ``axis`` of a map already padded by ``halo`` before and ``block - halo`` after, split into blocks
    (a new axis of block count before it) each grown by the first ``2 halo`` positions of the next one."""
    shape = x.shape.as_list()
    count = shape[axis] // block - 1  # the padding added one block
    split = tf.reshape(x, [-1, *shape[1:axis], count + 1, block, *shape[axis + 1 :]])
    before = [slice(None)] * axis
    current = tuple([*before, slice(0, count)])
    following = tuple([*before, slice(1, None), slice(0, 2 * halo)])
    return tf.concat([split[current], split[following]], axis=axis + 1)


def _haloed_windows(x: tf.Tensor, block: Pair, halo: Pair) -> tf.Tensor:
    """(batch, H, W, C) -> (batch * blocks, (b_y + 2 h_y)(b_x + 2 h_x), C): each block's haloed window, zero
    beyond the map, blocks in :func:`_blocks`' order."""
    (by, bx), (hy, hx), channels = block, halo, x.shape[-1]
    x = tf.pad(x, [[0, 0], [hy, by - hy if hy else 0], [hx, bx - hx if hx else 0], [0, 0]])
    if hy:
        x = _grow(x, 1, by, hy)  # (batch, block rows, window rows, W', C)
    else:
        x = tf.reshape(x, [-1, x.shape[1] // by, by, *x.shape[2:]])
    window_rows, padded_width = x.shape[2], x.shape[3]
    x = tf.reshape(x, [-1, window_rows, padded_width, channels])
    if hx:
        x = _grow(x, 2, bx, hx)  # (batch * block rows, window rows, block columns, window columns, C)
    else:
        x = tf.reshape(x, [-1, window_rows, padded_width // bx, bx, channels])
    x = tf.transpose(x, [0, 2, 1, 3, 4])
    return tf.reshape(x, [-1, window_rows * x.shape[-2], channels])


@keras.utils.register_keras_serializable(package="effbench")
class HaloAttention(AttentionCore):
    """Blocked local self-attention of projected ``[query map, key map, value map]`` (module docstring).

    ``block`` and ``halo`` are in key-map positions; the query map is the key map subsampled by ``stride``.
    """

    def __init__(self, heads: int, block: Pair, halo: Pair, stride: Pair = (1, 1), **kwargs: Any):
        super().__init__(heads, **kwargs)
        self.block, self.halo, self.stride = (tuple(int(v) for v in pair) for pair in (block, halo, stride))
        if any(b % s or 2 * h > b for b, h, s in zip(self.block, self.halo, self.stride, strict=True)):
            raise ValueError(f"halo attention needs blocks divisible by the stride and halos at most half a block; "
                             f"got block {self.block}, halo {self.halo}, stride {self.stride}")  # fmt: skip
        self.query_block = (self.block[0] // self.stride[0], self.block[1] // self.stride[1])
        self.window = (self.block[0] + 2 * self.halo[0], self.block[1] + 2 * self.halo[1])
        queries = grid_positions(self.query_block, step=self.stride)
        offsets = relative_offsets(queries, grid_positions(self.window, origin=(-self.halo[0], -self.halo[1])))
        low = offsets.reshape(-1, 2).min(axis=0)
        self.offset_counts = tuple(int(n) for n in offsets.reshape(-1, 2).max(axis=0) - low + 1)
        self.row_index, self.column_index = (offsets[..., axis] - low[axis] for axis in (0, 1))

    def build(self, input_shape: Any) -> None:
        head_dim = int(input_shape[0][-1]) // self.heads
        self.row_embedding, self.column_embedding = (
            self.add_weight(
                name=f"{axis}_embedding",
                shape=(count, head_dim),
                initializer=keras.initializers.RandomNormal(stddev=head_dim**-0.5),
            )
            for axis, count in zip(("row", "column"), self.offset_counts, strict=True)
        )
        super().build(input_shape)

    def relative_embeddings(self) -> tf.Tensor:
        """(queries, keys, head dim) of one block: r_row[dy] + r_col[dx] of each pair's offset."""
        return tf.gather(self.row_embedding, self.row_index) + tf.gather(self.column_embedding, self.column_index)

    def scores(self, query: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        # q . r per query position: a batched matmul over the block's query positions.
        queries, head_dim = query.shape[2], query.shape[3]
        by_position = tf.reshape(tf.transpose(query, [2, 0, 1, 3]), [queries, -1, head_dim])
        relative = tf.matmul(by_position, self.relative_embeddings(), transpose_b=True)
        relative = tf.transpose(tf.reshape(relative, [queries, -1, self.heads, key.shape[2]]), [1, 2, 0, 3])
        return super().scores(query, key) + relative

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        query_map, key_map, value_map = inputs
        query = _blocks(query_map, self.query_block)
        key, value = (_haloed_windows(x, self.block, self.halo) for x in (key_map, value_map))
        attended = super().call([query, key, value])
        return _unblocks(attended, (query_map.shape[1], query_map.shape[2]), self.query_block)

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        queries, channels = math.prod(inputs[0][1:3]), inputs[0][3]
        keys = math.prod(self.window)
        scores = self.heads * queries * keys
        # QK^T, PV and q . r: queries x keys x channels each; softmax 3, the relative add 1 per score.
        return 3 * queries * keys * channels, 4 * scores + queries * channels

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block": self.block, "halo": self.halo, "stride": self.stride}


def axis_layout(size: int, block: int, halo: int, step: int) -> tuple[int, int, int]:
    """(block, halo, stride) along one axis of ``size`` positions (module docstring, deviation 2)."""
    stride = step if size % step == 0 and size // step >= 2 else 1
    fitting = [b for b in range(1, min(block, size) + 1) if size % b == 0 and b % stride == 0]
    chosen = max(fitting)
    return chosen, min(halo, chosen // 2), stride


@register_method(
    "halonet",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Scaling Local Self-Attention for Parameter Efficient Visual Backbones",
        2021,
        "https://arxiv.org/abs/2103.12731",
    ),
    summary="bottleneck ResNet with blocked local self-attention (b x b query blocks, haloed key windows, relative "
    "embeddings, attention downsampling) in place of 3x3 convs; small-faithful",
    taxonomy=Taxonomy(applied="architecture"),
)
class HaloNet(ArchitectureMethod):
    default_options = {"width": 8, "blocks": 1, "block": 4, "halo": 1, "head_dim": 16}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        geometry = Geometry(input_shape)
        inputs, x = geometry.inputs()
        width = self.options["width"]
        x = L.Conv2D(width, geometry.kernel(3), padding="same", use_bias=False, name="stem_conv")(x)
        x = bn_act(x, name="stem")
        for stage, step in enumerate(STAGE_STRIDES):
            for block in range(self.options["blocks"]):
                x = self.bottleneck(x, width * 2**stage, step if block == 0 else 1, f"s{stage + 1}_block{block}")
        x = L.GlobalAveragePooling2D(name="pool")(x)
        return logits_model(inputs, x, num_classes, model_name(self.spec.slug, self.options))

    def bottleneck(self, x: tf.Tensor, channels: int, step: int, name: str) -> tf.Tensor:
        layouts = [axis_layout(size, self.options["block"], self.options["halo"], step) for size in x.shape[1:3]]
        block, halo, stride = (tuple(layout[part] for layout in layouts) for part in range(3))
        z = bn_act(L.Conv2D(channels, 1, use_bias=False, name=f"{name}_reduce")(x), name=f"{name}_reduce")
        query = L.Conv2D(channels, 1, strides=stride, use_bias=False, name=f"{name}_query")(z)
        key, value = (L.Conv2D(channels, 1, use_bias=False, name=f"{name}_{part}")(z) for part in ("key", "value"))
        heads = max(1, channels // self.options["head_dim"])
        attended = HaloAttention(heads, block, halo, stride, name=f"{name}_attention")([query, key, value])
        attended = bn_act(attended, name=f"{name}_attention")
        out = L.Conv2D(channels * EXPANSION, 1, use_bias=False, name=f"{name}_expand")(attended)
        out = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_expand_bn")(out)
        shortcut = x
        if stride != (1, 1) or x.shape[-1] != channels * EXPANSION:
            shortcut = L.Conv2D(channels * EXPANSION, 1, strides=stride, use_bias=False, name=f"{name}_shortcut")(x)
            shortcut = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_shortcut_bn")(shortcut)
        return L.ReLU(name=f"{name}_relu")(L.Add(name=f"{name}_add")([shortcut, out]))
