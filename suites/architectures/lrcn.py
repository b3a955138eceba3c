r"""LRCN, small-faithful: one CNN applied to every frame, an LSTM over the frames' features, logits from its last
hidden state (``lrcn``).

Mechanism. For frames :math:`x_1, \dots, x_T` (``digits-seq``: T = 4 frames of 8x8x1), with w = option ``width``::

    f_t = ReLU(F^T flatten(CNN(x_t)) + e)      CNN: three conv3x3 (no bias) + batch norm + ReLU blocks of w, 2w and
                                               2w channels, the last two with stride 2 (8x8 -> 4x4 -> 2x2);
                                               F: the "frame_features" Dense layer of `features` units
    h_t = LSTM(f_t, h_{t-1}),  h_0 = 0         the ``lstm`` backbone's cell, unrolled in Dense layers
                                               ("lstm_input", "lstm_recurrent"; `units` hidden units)
    logits = V^T h_T + d                       "logits"

The CNN and F have one set of weights whatever T is: the frames are stacked as one (batch, T, H, W, C) tensor, and
a Keras Conv2D treats every leading axis as a batch axis, so each conv is one layer applied to all frames
(batch norm's statistics run over the batch, the frames and the positions, as a time-distributed batch norm's
do). The complexity track counts each conv's MACs over its T x H x W output positions, T times one frame's, and
the LSTM's as the ``lstm`` backbone's; TFLite converts the stack to CONV_2D and FULLY_CONNECTED builtins.

Other input layouts, so that the backbone builds on every task: an image (H, W, C) is one frame; a sequence
(T, F) is T frames, each an F-vector laid out (F, 1, 1) with (3, 1) kernels, and a vector (L,) is one such frame
(:class:`~suites.architectures._layers.Geometry`); a frame axis is strided only while it keeps two positions.

Paper: Donahue, Hendricks, Guadarrama, Rohrbach, Venugopalan, Saenko & Darrell, "Long-term Recurrent
Convolutional Networks for Visual Recognition and Description", CVPR 2015, https://arxiv.org/abs/1411.4389:
per-frame CNN features (CaffeNet's fc6) feed an LSTM, "doubly deep" in space and time, trained end to end.

Scaled down (small-faithful): CaffeNet's five convs and fc6 become three small conv blocks and a ``features``-unit
(64) layer, the LSTM's 256 units 64, 16-frame clips 4 frames. Deviations: (1) the prediction is read from the last
hidden state, the paper's sequential-input, fixed-output form; its activity recognition instead averages a
prediction per frame over the clip, as every frame of an action shows it, whereas ``digits-seq``'s label
(d1 - d2 + d3 - d4 mod 10) is known only after the last frame; (2) batch norm in place of local response
normalization and stride-2 convs in place of max pools (the conv + BN + ReLU blocks the suite's backbones share);
(3) no dropout and no ImageNet pretraining of the CNN.
"""

from __future__ import annotations

import math

from effbench.method import ArchitectureMethod
from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras
from suites.architectures._layers import Geometry, axis_strides, conv_bn_act, logits_model, model_name
from suites.architectures.lstm import unrolled_lstm

L = keras.layers
# (channels as a multiple of `width`, stride) of the frame CNN's conv blocks.
CONV_BLOCKS = ((1, 1), (2, 2), (2, 2))


def frame_layout(input_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(frames T, one frame's shape): frames (T, H, W, C) and sequences (T, F) list T frames; an image (H, W, C)
    or a vector (L,) is one frame."""
    if len(input_shape) in (2, 4):
        return input_shape[0], tuple(input_shape[1:])
    return 1, tuple(input_shape)


@register_method(
    "lrcn",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Long-term Recurrent Convolutional Networks for Visual Recognition and Description",
        2015,
        "https://arxiv.org/abs/1411.4389",
    ),
    summary="small-faithful: one conv-BN-ReLU CNN shared by every frame, an LSTM (unrolled in Dense layers) over "
    "the frame features, logits from its last hidden state",
    taxonomy=Taxonomy(applied="architecture"),
    scale="small-faithful",
)
class LRCN(ArchitectureMethod):
    """Options: ``width`` (w, 16), ``features`` (the per-frame feature layer, 64), ``units`` (the LSTM's, 64)."""

    default_options = {"width": 16, "features": 64, "units": 64}

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        frames, frame_shape = frame_layout(tuple(input_shape))
        geometry = Geometry(frame_shape)
        height, width = geometry.spatial
        channels = 1 if geometry.is_vector else frame_shape[-1]
        inputs = keras.Input(shape=input_shape)
        stacked = (frames, height, width, channels)
        x = inputs if tuple(input_shape) == stacked else L.Reshape(stacked)(inputs)
        for multiple, step in CONV_BLOCKS:
            strides = axis_strides(step, x.shape[2:4])
            x = conv_bn_act(x, multiple * self.options["width"], geometry.kernel(3), strides)
        x = L.Reshape((frames, math.prod(x.shape[2:])))(x)
        features = L.Dense(self.options["features"], activation="relu", name="frame_features")(x)
        hidden = unrolled_lstm(features, self.options["units"])
        return logits_model(inputs, hidden, num_classes, model_name(self.spec.slug, self.options))
