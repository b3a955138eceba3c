r"""Fast FullSubNet: full-band and sub-band LSTMs with the sub-band model in a few mel bands, at a lower frame rate.

FullSubNet (Hao, Su, Horaud & Li, 2021) enhances speech in the short-time Fourier domain with two LSTM models:
a *full-band* model reads every frequency of a frame and gives global spectral context; a *sub-band* model, one
LSTM shared by all frequencies, reads each frequency's neighbourhood over time with the full-band output at
that frequency, and predicts a complex ratio mask (cIRM). Fast FullSubNet cuts its cost by cascading three
models, so that the sub-band model runs on far fewer frequencies, and by down-sampling the sub-band model's
input sequence in time. Here, small-faithful, on ``noisy-signals`` (512-sample signals)::

    x (512,) -> STFT: frames of N = 64 (sqrt-Hann window), hop 32, the signal zero-padded by N/2 each side
             -> X_r, X_i (T = 17 frames, F = 33 bins)      |X| = sqrt(X_r^2 + X_i^2)
    linear-to-mel full-band:  LSTM_fb over t of |X|_t (F)   -> Dense to M = 12 bands        g (T, M)
    noisy mel spectrum:       |X| times the fixed mel filterbank (tf.signal.linear_to_mel_weight_matrix)  S (T, M)
    sub-band, per band m (one LSTM shared by the M bands):
        input_t,m = [S_t,m-n .. S_t,m+n (n = 2 neighbours, zeros past the edges), g_t,m]     (2n + 2 features)
        average-pooled in time by d = 2 (T -> 9 steps) -> LSTM_sb -> Dense to K = 4 -> repeated d times in time
    mel-to-linear full-band:  LSTM_ml over t of the M K sub-band outputs of frame t -> Dense to M_r, M_i (F each)
    Y = (M_r + i M_i) (X_r + i X_i)  -> inverse STFT (overlap-add, sqrt-Hann) -> the enhanced (512,)

The LSTMs are :mod:`suites.architectures.lstm`'s, unrolled into Dense layers (``fullband_*``, ``subband_*``,
``melband_*`` kernels); the sub-band LSTM runs over the M bands as parallel sequences of the same weights.

STFT and inverse STFT as convolutions with a fixed DFT basis: ``stft_real`` and ``stft_imag`` are (N, 1)
convolutions of stride 32 whose kernels are the windowed cosines and negated sines of the F bins (exactly
``tf.signal.stft``; tested), ``istft`` a transposed convolution with the one-sided inverse DFT times the
synthesis window (overlap-add), so with a mask of 1 the model returns its input (tested). They are not trained
(``trainable=False``). Why not ``tf.signal``: TFLite converts ``tf.signal.stft`` (RFFT) but not
``tf.signal.inverse_stft``, whose IRFFT needs TF Select (Flex) ops (``ERROR_NEEDS_FLEX_OPS``; the converter's
message is recorded in tests/test_fullsubnet_fast.py); the convolutions convert to ``CONV_2D`` and
``TRANSPOSE_CONV``. The cost is a matrix DFT, N F MACs per frame and part, not an FFT's N log N.

Heads by task kind (:mod:`suites.architectures._dense`): enhancement as above (``noisy-signals``, the default
``fullsubnet-fast``); any other kind gets the classification :meth:`build`, which reads the input as a
spectrogram (its first axis the frames, the rest one frame's features, as the ``lstm`` backbone reads it), a
learned Dense ``band_projection`` to the M bands in place of the mel filterbank, the same three models, and the
last state of the mel-to-linear LSTM into a ``logits`` Dense layer, so every backbone test can build it.

Paper: Hao & Li, "Fast FullSubNet: Accelerate Full-band and Sub-band Fusion Model for Single-channel Speech
Enhancement", 2022 (https://arxiv.org/abs/2212.09019). Small-faithful: 16 kHz speech, a 512-point STFT (257 bins)
and two-layer LSTMs of hundreds of units (FullSubNet's published settings, as we recall them; the sizes of Fast
FullSubNet's mel models were not checked against the paper here) become 512-sample synthetic signals, a 64-point
STFT (33 bins), 12 mel bands, one layer of 32 (full-band) and 16 (sub-band) units; the options ``fullband_units``,
``subband_units``, ``bands``, ``neighbours``, ``downsample`` and ``subband_features`` set them. Matched cost on
``noisy-signals`` (MACs; ``SIZED_RUNS`` of :mod:`suites.architectures.protocol`): the default costs 646,796 MACs,
``fcn-small:width=8`` 606,208; ``fcn-small`` (2,392,064) is matched by ``fullband_units=104`` (2,392,220).
Deviations: trained end to end on the task's waveform MSE, not on a compressed cIRM target; no cumulative input
normalization (the task's inputs have unit RMS); no look-ahead frames; the mel-to-linear model reads only the
sub-band outputs; the mask is not bounded, and starts at 1 (its head's kernel at 0, bias at 1: the untrained model
passes the input through).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from effbench.registry import Paper, Taxonomy, register_method
from effbench.tf import keras, tf
from suites.architectures._dense import DenseArchitecture
from suites.architectures._layers import logits_model, model_name, sequence_shape
from suites.architectures.lstm import unrolled_lstm_sequence

L = keras.layers
FRAME, HOP = 64, 32
SAMPLE_RATE = 8_000.0
MAGNITUDE_EPS = 1e-8


@keras.utils.register_keras_serializable(package="effbench")
class SpectralMagnitude(L.Layer):
    """``sqrt(re^2 + im^2 + eps)`` of ``[re, im]``: the magnitude of a spectrum kept as two real tensors."""

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        real, imag = inputs
        return tf.sqrt(real * real + imag * imag + MAGNITUDE_EPS)

    def compute_output_shape(self, input_shape: list[tf.TensorShape]) -> tf.TensorShape:
        return tf.TensorShape(input_shape[0])

    def effbench_cost(self, inputs: list[tuple], outputs: list[tuple]) -> tuple[int, int]:
        return 0, 4 * math.prod(outputs[0][1:])  # two squares, a sum and a square root per bin


def sqrt_hann(frame: int) -> np.ndarray:
    """The square root of the periodic Hann window: analysis times synthesis is Hann, whose copies at a hop of
    half the frame sum to 1 (perfect reconstruction)."""
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame))


def analysis_basis(frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(real, imaginary) DFT kernels, (frame, bins) each: window times cos, window times -sin."""
    angle = 2 * np.pi * np.outer(np.arange(frame), np.arange(frame // 2 + 1)) / frame
    window = sqrt_hann(frame)[:, None]
    return window * np.cos(angle), -window * np.sin(angle)


def synthesis_basis(frame: int) -> np.ndarray:
    """(2 bins, frame): the one-sided inverse DFT of [real; imaginary] parts times the synthesis window."""
    bins = frame // 2 + 1
    angle = 2 * np.pi * np.outer(np.arange(bins), np.arange(frame)) / frame
    weight = np.full((bins, 1), 2.0 / frame)
    weight[[0, -1]] = 1.0 / frame  # DC and Nyquist appear once in a full spectrum
    window = sqrt_hann(frame)[None, :]
    return np.concatenate([weight * np.cos(angle) * window, -weight * np.sin(angle) * window])


def mel_filterbank(bins: int, bands: int) -> np.ndarray:
    """(bins, bands) triangular mel filters over 0 .. Nyquist at ``SAMPLE_RATE``."""
    return tf.signal.linear_to_mel_weight_matrix(bands, bins, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2).numpy()


def fixed_conv(layer: L.Layer, kernel: np.ndarray) -> None:
    layer.set_weights([kernel.astype(np.float32)])


@register_method(
    "fullsubnet-fast",
    suite="architectures",
    kind="architecture",
    paper=Paper(
        "Fast FullSubNet: Accelerate Full-band and Sub-band Fusion Model for Single-channel Speech Enhancement",
        2022,
        "https://arxiv.org/abs/2212.09019",
    ),
    summary="small-faithful Fast FullSubNet: linear-to-mel full-band LSTM, sub-band LSTM shared over 12 mel bands "
    "at half the frame rate, mel-to-linear full-band LSTM to a complex mask; STFT as fixed DFT convolutions",
    taxonomy=Taxonomy(applied="architecture"),
)
class FullSubNetFast(DenseArchitecture):
    default_options = {
        "fullband_units": 32, "subband_units": 16, "bands": 12, "neighbours": 2, "downsample": 2,
        "subband_features": 4,
    }  # fmt: skip

    def __init__(self, **options: Any):
        super().__init__(**options)
        for option in self.default_options:
            if int(self.options[option]) < (0 if option == "neighbours" else 1):
                raise ValueError(f"fullsubnet-fast: {option} must be a positive integer, not {self.options[option]}")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        steps, features = sequence_shape(tuple(input_shape))
        inputs = keras.Input(shape=input_shape)
        frames = L.Reshape((steps, features))(inputs)
        bands = L.Dense(self.options["bands"], name="band_projection")(frames)
        fused = self.fusion(frames, bands)
        last = L.Flatten()(L.Cropping1D((steps - 1, 0))(fused))
        return logits_model(inputs, last, num_classes, model_name(self.spec.slug, self.options))

    def enhancer(self, input_shape: tuple[int, ...]) -> keras.Model:
        if len(input_shape) != 1 or input_shape[0] < FRAME:
            raise ValueError(f"fullsubnet-fast enhances 1-D signals of at least {FRAME} samples, not {input_shape}")
        length = input_shape[0]
        inputs = keras.Input(shape=input_shape)
        padded = L.ZeroPadding2D(((FRAME // 2, FRAME // 2), (0, 0)))(L.Reshape((length, 1, 1))(inputs))
        bins = FRAME // 2 + 1
        stft = {part: L.Conv2D(bins, (FRAME, 1), strides=(HOP, 1), use_bias=False, trainable=False,
                               name=f"stft_{part}") for part in ("real", "imag")}  # fmt: skip
        real, imag = stft["real"](padded), stft["imag"](padded)  # (T, 1, F)
        steps = real.shape[1]
        magnitude = L.Reshape((steps, bins))(SpectralMagnitude(name="magnitude")([real, imag]))
        mel = L.Dense(self.options["bands"], use_bias=False, trainable=False, name="mel_filterbank")
        fused = self.fusion(magnitude, mel(magnitude))
        masks = [L.Reshape((steps, 1, bins))(L.Dense(bins, kernel_initializer="zeros", bias_initializer=init,
                                                      name=f"mask_{part}")(fused))
                 for part, init in (("real", "ones"), ("imag", "zeros"))]  # fmt: skip
        enhanced = L.Concatenate(name="masked_spectrum")(complex_product(masks, [real, imag]))
        istft = L.Conv2DTranspose(1, (FRAME, 1), strides=(HOP, 1), use_bias=False, trainable=False, name="istft")
        signal = L.Cropping2D(((FRAME // 2, (steps - 1) * HOP + FRAME - FRAME // 2 - length), (0, 0)))(istft(enhanced))
        model = keras.Model(inputs, L.Reshape(input_shape, name="enhanced")(signal),
                            name=model_name(f"{self.spec.slug}-enhancement", self.options))  # fmt: skip
        analysis_real, analysis_imag = analysis_basis(FRAME)
        fixed_conv(stft["real"], analysis_real[:, None, None, :])
        fixed_conv(stft["imag"], analysis_imag[:, None, None, :])
        fixed_conv(istft, synthesis_basis(FRAME).T[:, None, None, :])
        fixed_conv(mel, mel_filterbank(bins, self.options["bands"]))
        return model

    def fusion(self, frames: tf.Tensor, bands: tf.Tensor) -> tf.Tensor:
        """The three cascaded models over (batch, T, F) ``frames`` and their (batch, T, M) band features:
        (batch, T, ``fullband_units``), the mel-to-linear LSTM's states."""
        units, count = self.options["fullband_units"], self.options["bands"]
        steps = frames.shape[1]
        fullband = L.Dense(count, name="fullband_mel")(unrolled_lstm_sequence(frames, units, "fullband"))
        subband = self.subband(bands, fullband)  # (T, M, K)
        flat = L.Reshape((steps, count * self.options["subband_features"]))(subband)
        return unrolled_lstm_sequence(flat, units, "melband")

    def subband(self, bands: tf.Tensor, fullband: tf.Tensor) -> tf.Tensor:
        """The sub-band model: per band, its neighbourhood and the full-band output, at 1/d of the frame rate;
        (batch, T, M, K)."""
        steps, count = bands.shape[1], bands.shape[2]
        neighbours, down = self.options["neighbours"], self.options["downsample"]
        padded = L.ZeroPadding2D(((0, 0), (neighbours, neighbours)))(L.Reshape((steps, count, 1))(bands))
        window = [L.Cropping2D(((0, 0), (offset, 2 * neighbours - offset)))(padded)
                  for offset in range(2 * neighbours + 1)]  # fmt: skip
        inputs = L.Concatenate(name="subband_inputs")([*window, L.Reshape((steps, count, 1))(fullband)])
        if down > 1:
            inputs = L.AveragePooling2D((down, 1), padding="same", name="subband_downsample")(inputs)
        states = unrolled_lstm_sequence(inputs, self.options["subband_units"], "subband")
        outputs = L.Dense(self.options["subband_features"], name="subband_output")(states)
        if down > 1:
            outputs = L.UpSampling2D((down, 1), name="subband_upsample")(outputs)
            outputs = L.Cropping2D(((0, outputs.shape[1] - steps), (0, 0)))(outputs)
        return outputs


def complex_product(mask: list[tf.Tensor], spectrum: list[tf.Tensor]) -> list[tf.Tensor]:
    """[real, imaginary] of (a + ib)(c + id) for ``mask`` = [a, b] and ``spectrum`` = [c, d]."""
    (a, b), (c, d) = mask, spectrum
    real = L.Subtract()([L.Multiply()([a, c]), L.Multiply()([b, d])])
    imag = L.Add()([L.Multiply()([a, d]), L.Multiply()([b, c])])
    return [real, imag]
