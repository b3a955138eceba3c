r"""Pieces the 2-D attention hybrids share: token positions on a grid, their relative offsets, a relative-bias
attention core, and squeeze-excitation (a private module: the registry skips it).

Positions. A feature map of :math:`H \times W` positions is read row-major as :math:`T = HW` tokens; token
:math:`t` sits at :math:`(t // W, t \% W)` times a step (a strided query grid) plus an origin (a haloed key
window starts :math:`h` positions before its block). :func:`relative_offsets` gives each (query, key) pair's
offset :math:`(\Delta y, \Delta x)` = key position - query position, and :func:`offset_index` numbers the
offsets that occur, so a table with one row per offset holds what a relative position scheme learns:

* ``astroformer`` (CoAtNet's relative attention): a scalar per head and offset added to the logits,
  :class:`RelativeBiasAttentionCore`;
* ``halonet``: an embedding per row offset and per column offset, dotted with the query;
* ``gmm-mask-vit``: the squared distance :math:`\Delta y^2 + \Delta x^2` of a Gaussian mask.

Squeeze-excitation (Hu et al. 2018) rescales channels by a gate computed from their spatial means:
MBConv's (``astroformer``) and OverLoCK's blocks use it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from effbench.tf import keras, tf
from suites.architectures._transformer import AttentionCore


def grid_positions(
    size: tuple[int, int], step: tuple[int, int] = (1, 1), origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """(T, 2) (row, column) of the ``size`` grid's tokens, row-major: ``origin + index * step``."""
    rows, columns = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    positions = np.stack([rows.ravel(), columns.ravel()], axis=-1)
    return positions * np.asarray(step) + np.asarray(origin)


def relative_offsets(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(Tq, Tk, 2): each key's position minus each query's."""
    return keys[None, :, :] - queries[:, None, :]


def offset_index(offsets: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The row of each (query, key) pair in a table over the offsets' bounding box, and that box's (rows, columns).

    Offset (dy, dx) is row (dy - min dy) * n_x + (dx - min dx), n_x the number of column offsets.
    """
    low = offsets.reshape(-1, 2).min(axis=0)
    extent = offsets.reshape(-1, 2).max(axis=0) - low + 1
    shifted = offsets - low
    return (shifted[..., 0] * extent[1] + shifted[..., 1]).astype("int32"), (int(extent[0]), int(extent[1]))


@keras.utils.register_keras_serializable(package="effbench")
class RelativeBiasAttentionCore(AttentionCore):
    r"""Multi-head attention over the tokens of a ``grid`` with a learned bias per head and relative offset:

    .. math::  S_h[i, j] = \frac{q_i \cdot k_j}{\sqrt{d}} + w_h[\,p_j - p_i\,]

    CoAtNet's relative attention (Dai et al. 2021, eq. 3, the pre-softmax form): translation-invariant, one
    table entry per offset of a :math:`H \times W` grid, :math:`(2H - 1)(2W - 1)` per head, zero at first.
    """

    def __init__(self, heads: int, grid: tuple[int, int], **kwargs: Any):
        super().__init__(heads, **kwargs)
        self.grid = tuple(int(size) for size in grid)
        positions = grid_positions(self.grid)
        index, extent = offset_index(relative_offsets(positions, positions))
        self.bias_index = index.reshape(-1)
        self.table_size = extent[0] * extent[1]

    def build(self, input_shape: Any) -> None:
        self.relative_bias = self.add_weight(name="relative_bias", shape=(self.heads, self.table_size),
                                             initializer="zeros")  # fmt: skip
        super().build(input_shape)

    def bias(self) -> tf.Tensor:
        """(heads, T, T): each head's bias of every (query, key) pair."""
        tokens = math.prod(self.grid)
        return tf.reshape(tf.gather(self.relative_bias, self.bias_index, axis=1), [self.heads, tokens, tokens])

    def scores(self, query: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        return super().scores(query, key) + self.bias()

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        macs, elementwise = super().effbench_cost(inputs, outputs)
        return macs, elementwise + self.heads * math.prod(self.grid) ** 2  # the bias add

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "grid": self.grid}


def squeeze_excite(x: tf.Tensor, hidden: int, activation: str, name: str) -> tf.Tensor:
    """``x * sigmoid(W_2 act(W_1 mean_{i,j} x))``, the gate a per-channel weight (1x1 convs on the pooled map)."""
    channels, layers = x.shape[-1], keras.layers
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    hidden_gate = layers.Conv2D(max(1, hidden), 1, activation=activation, name=f"{name}_reduce")(pooled)
    gate = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(hidden_gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])
