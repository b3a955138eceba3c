"""Specifications of ``lrcn``: one CNN for every frame, an LSTM over the frame features, logits from its last state."""

from __future__ import annotations

import functools

import numpy as np

from effbench.method import MethodRef
from effbench.tf import keras
from suites.architectures.lstm import INPUT_KERNEL, RECURRENT_KERNEL
from tests.architecture_checks import losses_over_steps, tflite_outputs
from tracks.complexity import ComplexityReport, count_complexity

# Small widths keep the graphs (and their conversion) quick; the mechanism does not depend on them.
SMALL = "width=4,features=16,units=8"


@functools.cache
def build(frames: int = 4, options: str = SMALL) -> keras.Model:
    keras.utils.set_random_seed(0)
    return MethodRef.parse(f"lrcn:{options}").create().build((frames, 8, 8, 1), 10)


def clips(frames: int = 4, count: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, frames, 8, 8, 1)).astype(np.float32)


def frame_features(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The per-frame features f_t the LSTM reads: (batch, T, features)."""
    return keras.Model(model.inputs, model.get_layer(INPUT_KERNEL).input)(x, training=False).numpy()


def test_digits_seq_clips_give_ten_logits_through_an_lstm_over_four_frames():
    model = build(options="")
    assert model.input_shape == (None, 4, 8, 8, 1) and model.output_shape == (None, 10)
    assert model.get_layer(INPUT_KERNEL).input_shape == (None, 4, 64)  # `features` = 64 per frame
    assert model.get_layer(RECURRENT_KERNEL).kernel.shape == (64, 4 * 64)


def test_the_frame_cnn_has_one_set_of_weights_whatever_the_number_of_frames():
    two, six = build(frames=2), build(frames=6)
    assert two.count_params() == six.count_params()
    kernels = [[layer.kernel.shape for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
               for model in (two, six)]  # fmt: skip
    assert kernels[0] == kernels[1] and len(kernels[0]) == 3


def test_each_frame_is_encoded_alone_and_identically_wherever_it_stands():
    model, x = build(), clips()
    x[:, 2] = x[:, 0]
    features = frame_features(model, x)
    np.testing.assert_allclose(features[:, 2], features[:, 0], rtol=1e-5, atol=1e-6)
    changed = x.copy()
    changed[:, 3] = clips(seed=1)[:, 3]
    np.testing.assert_allclose(frame_features(model, changed)[:, :3], features[:, :3], rtol=1e-5, atol=1e-6)


def test_reversing_the_frames_changes_the_logits():
    model, x = build(), clips()
    forward = model(x, training=False).numpy()
    assert np.abs(model(x[:, ::-1], training=False).numpy() - forward).max() > 1e-3


def conv_macs(model: keras.Model) -> tuple[list[int], ComplexityReport]:
    """The MACs of each conv layer, in order, and the whole complexity report."""
    report = count_complexity(model)
    return [row.macs for row in report.layers if row.layer_class == "Conv2D"], report


def test_complexity_counts_the_frame_cnn_once_per_frame_and_the_lstm_as_unrolled():
    (one, _), (four, report) = conv_macs(build(frames=1)), conv_macs(build(frames=4))
    assert four == [4 * macs for macs in one] and len(one) == 3 and all(one)
    assert report.uncounted == []
    features, units = 16, 8
    assert report.row(INPUT_KERNEL).macs == 4 * features * 4 * units
    assert report.row(RECURRENT_KERNEL).macs == 3 * units * 4 * units  # h_0 = 0: no recurrent product at t = 1


def test_a_few_training_steps_lower_the_loss():
    model = MethodRef.parse(f"lrcn:{SMALL}").create().build((4, 8, 8, 1), 10)
    losses = losses_over_steps(model, clips(count=16), np.arange(16) % 10)
    assert losses[-1] < losses[0]


def test_converts_to_tflite_builtins_and_computes_what_keras_computes():
    # Two frames: every op of the network; more frames only unroll the LSTM further.
    model, x = build(frames=2), clips(frames=2)
    np.testing.assert_allclose(tflite_outputs(model, x), model(x, training=False), rtol=1e-4, atol=1e-5)
