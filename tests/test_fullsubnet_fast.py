"""Specifications of ``fullsubnet-fast``: a fixed-DFT STFT, a linear-to-mel full-band LSTM, one sub-band LSTM shared
by the mel bands at half the frame rate, a mel-to-linear full-band LSTM to a complex mask, and the inverse STFT."""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest

from effbench.litert import litert_predict
from effbench.method import MethodRef
from effbench.registry import TASKS
from effbench.tasks import noisy_signals
from effbench.tf import keras, tf
from suites.architectures import fullsubnet_fast
from suites.architectures.lstm import unrolled_lstm_sequence
from tests.dense_checks import converted_ops
from tracks.complexity import count_complexity

# A short signal keeps the unrolled LSTMs short: 128 samples, padded by 32 each side, are 5 frames of 64.
SHORT = replace(TASKS.get("noisy-signals").spec, input_shape=(128,), output_shape=(128,))
FRAMES, BINS = 5, 33
SMALL = "fullsubnet-fast:fullband_units=8,subband_units=4"


@functools.cache
def enhancer(reference: str = SMALL) -> keras.Model:
    return MethodRef.parse(reference).create().build_for(SHORT)


def short_pairs(count: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) of the task, cut to the short length."""
    noisy, clean = noisy_signals.noisy_pairs(noisy_signals.SEED, 0, count)
    return noisy[:, :128], clean[:, :128]


def sqrt_hann(length: int, dtype: tf.DType) -> tf.Tensor:
    return tf.sqrt(tf.signal.hann_window(length, periodic=True, dtype=dtype))


def test_the_stft_layers_compute_tf_signal_stft_of_the_padded_signal():
    model = enhancer()
    x, _ = short_pairs(2)
    expected = tf.signal.stft(np.pad(x, ((0, 0), (32, 32))), 64, 32, 64, window_fn=sqrt_hann, pad_end=False).numpy()
    for part, values in (("real", expected.real), ("imag", expected.imag)):
        computed = keras.Model(model.inputs, model.get_layer(f"stft_{part}").output)(x).numpy()[:, :, 0, :]
        assert computed.shape == (2, FRAMES, BINS)
        np.testing.assert_allclose(computed, values, atol=1e-4)


def test_with_the_untrained_unit_mask_the_inverse_stft_returns_the_input():
    x, _ = short_pairs(3)
    np.testing.assert_allclose(enhancer()(x, training=False), x, atol=1e-5)


def test_the_sub_band_lstm_is_shared_by_the_mel_bands_and_runs_at_half_the_frame_rate():
    model = enhancer()
    neighbours, bands = 2, 12
    # Per band: 2n + 1 neighbouring mel magnitudes and the full-band model's output; 5 frames pooled to 3 steps.
    assert model.get_layer("subband_input").input_shape == (None, 3, bands, 2 * neighbours + 2)
    assert model.get_layer("subband_recurrent").kernel.shape == (4, 4 * 4)  # one LSTM, not one per band
    assert model.get_layer("fullband_input").input_shape == (None, FRAMES, BINS)
    assert model.get_layer("melband_input").input_shape == (None, FRAMES, bands * 4)
    assert model.get_layer("mask_real").output_shape == (None, FRAMES, BINS)


def test_an_lstm_over_parallel_sequences_is_the_same_lstm_run_on_each_of_them():
    steps, parallel, features, units = 4, 3, 2, 5
    together = keras.Input((steps, parallel, features))
    shared = keras.Model(together, unrolled_lstm_sequence(together, units, "shared"))
    alone = keras.Input((steps, features))
    single = keras.Model(alone, unrolled_lstm_sequence(alone, units, "shared"))
    single.set_weights(shared.get_weights())
    x = np.random.default_rng(0).standard_normal((2, steps, parallel, features)).astype(np.float32)
    outputs = shared(x).numpy()
    assert outputs.shape == (2, steps, parallel, units)
    for band in range(parallel):
        np.testing.assert_allclose(outputs[:, :, band], single(x[:, :, band]).numpy(), atol=1e-6)


def test_the_dft_and_mel_layers_are_fixed_and_a_few_steps_reduce_the_waveform_error():
    model = MethodRef.parse(SMALL).create().build_for(SHORT)
    fixed = {name: model.get_layer(name).get_weights()[0].copy()
             for name in ("stft_real", "stft_imag", "istft", "mel_filterbank")}  # fmt: skip
    trainable = {id(weight) for weight in model.trainable_weights}
    assert not any(id(w) in trainable for name in fixed for w in model.get_layer(name).weights)
    noisy, clean = short_pairs(16)
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", run_eagerly=True)
    losses = [float(model.train_on_batch(noisy, clean)) for _ in range(6)]
    assert min(losses[2:]) < losses[0]
    for name, weights in fixed.items():
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[0], weights)


def test_round_trips_through_a_keras_file_without_custom_objects(tmp_path):
    model = enhancer()
    x, _ = short_pairs(2)
    model.save(tmp_path / "fullsubnet.keras")
    reloaded = keras.models.load_model(tmp_path / "fullsubnet.keras", compile=False)
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), atol=1e-6)


def test_complexity_counts_every_weighted_layer_and_the_dft_as_matrix_products():
    report = count_complexity(enhancer())
    assert report.uncounted == []
    frame, units = 64, 8
    assert report.row("stft_real").macs == FRAMES * frame * BINS
    assert report.row("istft").macs == FRAMES * 2 * BINS * frame
    assert report.row("fullband_recurrent").macs == (FRAMES - 1) * units * 4 * units  # h_0 = 0 at t = 1
    assert report.row("magnitude").flops == 4 * FRAMES * BINS


def test_converts_to_tflite_builtins_and_agrees_with_keras():
    model = enhancer()
    content, ops = converted_ops(model)
    assert {"CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "SQRT"} <= set(ops)
    x, _ = short_pairs(2)
    np.testing.assert_allclose(litert_predict(content, x, 1), model(x, training=False), atol=1e-4)


def test_tf_signals_inverse_stft_would_need_flex_ops_which_is_why_the_dft_is_a_convolution():
    inputs = keras.Input((128,))
    spectrum = tf.signal.stft(inputs, 64, 32, 64)
    model = keras.Model(inputs, tf.signal.inverse_stft(spectrum, 64, 32, 64))
    with pytest.raises(Exception, match="IRFFT"):
        converted_ops(model)


def test_builds_a_classifier_for_other_kinds_and_refuses_signals_shorter_than_a_frame():
    method = MethodRef.parse(SMALL).create()
    assert method.build((8, 8, 1), 10).output_shape == (None, 10)  # 8 frames of 8 features
    with pytest.raises(ValueError, match="at least 64 samples"):
        method.build_for(replace(SHORT, input_shape=(32,), output_shape=(32,)))
    with pytest.raises(ValueError, match="positive integer"):
        MethodRef.parse("fullsubnet-fast:bands=0").create()


def test_the_mel_filterbank_covers_every_bin_above_dc_and_no_band_is_empty():
    weights = fullsubnet_fast.mel_filterbank(BINS, 12)
    assert (weights.sum(axis=0) > 0).all() and (weights[1:-1].sum(axis=1) > 0).all()
