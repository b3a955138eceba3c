"""The ``noisy-signals`` task and the ``enhancement`` kind: synthetic noisy 1-D signals whose label is the clean
signal, scored by SI-SNR beside the noisy input's, through the accuracy and edge tracks, with fcn-small's
enhancement head as the default backbone."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.registry import TASKS, TRACKS, RegistryError, check_task_spec, find_metric
from effbench.tasks import noisy_signals
from effbench.tasks.base import Splits
from effbench.tf import keras
from effbench.track import MeasureContext
from tests.test_tasks_smoke import run_tracks
from tracks import _quality, edge

SPEC = TASKS.get("noisy-signals").spec


def orthogonal_pair(length: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two zero-mean signals of equal energy, orthogonal to each other."""
    time = np.arange(length)
    return np.sin(2 * np.pi * 3 * time / length), np.cos(2 * np.pi * 5 * time / length)


# ------------------------------------------------------------------------------------------------ SI-SNR


def test_si_snr_of_a_signal_plus_orthogonal_noise_is_its_energy_ratio():
    clean, other = orthogonal_pair()
    for scale, expected in ((1.0, 0.0), (0.1, 20.0), (np.sqrt(0.1), 10.0)):
        assert _quality.si_snr((clean + scale * other)[None], clean[None])[0] == pytest.approx(expected, abs=1e-9)


def test_si_snr_ignores_the_estimates_gain_and_offset():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((4, 128))
    estimate = clean + 0.3 * rng.standard_normal((4, 128))
    value = _quality.si_snr(estimate, clean)
    np.testing.assert_allclose(_quality.si_snr(7.5 * estimate + 2.0, clean), value, rtol=1e-10)
    np.testing.assert_allclose(_quality.si_snr(0.01 * estimate, clean), value, rtol=1e-10)


def test_a_perfect_estimate_scores_high_and_an_unrelated_one_very_low():
    clean, other = orthogonal_pair()
    assert _quality.si_snr(clean[None], clean[None])[0] > 100.0
    assert _quality.si_snr(other[None], clean[None])[0] < -50.0


def test_enhancement_metrics_report_the_noisy_reference_and_the_improvement():
    clean, other = orthogonal_pair()
    noisy, enhanced = (clean + other)[None], (clean + 0.1 * other)[None]
    metrics = {m.name: m for m in _quality.enhancement_metrics(enhanced, clean[None], reference=noisy)}
    assert metrics["si_snr"].value == pytest.approx(20.0) and metrics["noisy_si_snr"].value == pytest.approx(0.0)
    assert metrics["si_snri"].value == pytest.approx(20.0) and metrics["si_snr"].unit == "dB"


# -------------------------------------------------------------------------------------------------- task


def test_the_task_is_declared_synthetic_enhancement_with_the_clean_signal_as_label():
    assert SPEC.kind == "enhancement" and "SYNTHETIC" in SPEC.summary
    assert SPEC.output_shape == SPEC.input_shape == (noisy_signals.LENGTH,)
    assert SPEC.quality.primary == "si_snr" and SPEC.quality.direction == "higher"
    with pytest.raises(RegistryError, match="shaped like the input"):
        check_task_spec(replace(SPEC, output_shape=(noisy_signals.LENGTH, 1)))


def test_the_generator_gives_the_same_bytes_for_a_seed_and_other_ones_for_another():
    first, again = noisy_signals.noisy_pairs(3, 0, 50), noisy_signals.noisy_pairs(3, 0, 50)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], noisy_signals.noisy_pairs(4, 0, 50)[0])
    assert not np.array_equal(first[0], noisy_signals.noisy_pairs(3, 1, 50)[0])  # the test split differs


def test_noisy_inputs_have_unit_rms_and_their_si_snr_spans_the_drawn_snrs():
    noisy, clean = noisy_signals.noisy_pairs(noisy_signals.SEED, 0, 2_000)
    np.testing.assert_allclose(np.sqrt(np.mean(noisy.astype(np.float64) ** 2, axis=1)), 1.0, rtol=1e-5)
    value = _quality.si_snr(noisy, clean)
    low, high = noisy_signals.SNR_RANGE_DB
    assert low - 1.0 < np.percentile(value, 1) < low + 2.0 and high - 2.0 < np.percentile(value, 99) < high + 1.0
    silent = np.mean(np.abs(clean) < 1e-6, axis=1)
    assert 0.05 < silent.mean() < 0.5  # the envelopes leave silence before the onsets and after the offsets


def test_every_noise_family_is_present():
    rng = np.random.default_rng(0)
    bursts = noisy_signals.burst_noise(rng, 200)
    assert np.mean(np.isclose(np.abs(bursts) / np.abs(bursts).max(), 0)) < 0.01  # a floor, never silence
    loud = np.abs(bursts) > 5 * noisy_signals.BURST_FLOOR
    assert 0.02 < loud.mean() < 0.6
    coloured = noisy_signals.coloured_noise(rng, 200)
    power = np.mean(np.abs(np.fft.rfft(coloured, axis=1)) ** 2, axis=0)
    assert power[2:10].mean() > 10 * power[-50:].mean()  # pink to brown: low frequencies carry the power


def test_the_splits_hold_the_declared_sizes():
    splits = TASKS.get("noisy-signals").factory().load()
    validation = noisy_signals.VALIDATION_EXAMPLES
    assert (len(splits.x_train), len(splits.x_val)) == (noisy_signals.TRAIN_EXAMPLES - validation, validation)
    assert len(splits.x_test) == noisy_signals.TEST_EXAMPLES


# ------------------------------------------------------------------------------------------------ tracks


def test_the_accuracy_track_scores_si_snr_beside_the_noisy_input():
    clean, other = orthogonal_pair(noisy_signals.LENGTH)
    noisy, enhanced = (clean + other)[None].astype(np.float32), (clean + 0.1 * other)[None]
    spec = SPEC
    splits = Splits(noisy, clean[None], noisy, clean[None], noisy, clean[None].astype(np.float32))
    model = SimpleNamespace(predict=lambda x, batch_size, verbose: enhanced)
    task = SimpleNamespace(spec=spec, reference_outputs=lambda x: x)
    context = MeasureContext(model=model, task=task, splits=splits, reference={"si_snr": 10.0})
    metrics = {m.name: m for m in TRACKS.get("accuracy").factory().measure(context)}
    assert metrics["si_snr"].value == pytest.approx(20.0) and metrics["si_snri"].value == pytest.approx(20.0)
    assert metrics["si_snr_relative"].value == pytest.approx(2.0) and metrics["fp32_si_snr"].unit == "dB"
    declared = TRACKS.get("accuracy").spec.metrics
    assert all((s := find_metric(declared, m.name, False)) is not None and s.unit == m.unit for m in metrics.values())


def test_the_edge_track_compares_a_variants_signals_with_keras_by_snr():
    clean = np.ones((1, 8)) * np.arange(8)
    inputs = edge.Inputs(np.zeros(8), np.zeros((1, 8)), clean, None, clean, replace(SPEC, input_shape=(8,),
                         output_shape=(8,)))  # fmt: skip
    scoring = edge.Backend("litert", None, lambda content, x, threads: clean * 1.01)
    metrics = {m.name: m for m in edge.accuracy_metrics(scoring, b"", inputs, "int8")}
    assert metrics["agreement_snr"].value == pytest.approx(40.0) and metrics["si_snr"].value > 100.0
    declared = TRACKS.get("edge").spec.metrics
    assert all(find_metric(declared, m.name, True) is not None for m in metrics.values())


# -------------------------------------------------------------------------------------- default backbone


def test_fcn_smalls_enhancer_passes_the_input_through_when_its_head_is_zero_and_round_trips(tmp_path):
    model = MethodRef.parse("fcn-small:width=4").create().build_for(SPEC)
    assert model.output_shape == (None, noisy_signals.LENGTH) and model.layers[-1].name == "enhanced"
    assert {layer.kernel_size[1] for layer in model.layers if hasattr(layer, "kernel_size")} == {1}  # k x 1 kernels
    head = model.get_layer("noise")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    x = np.random.default_rng(0).standard_normal((2, noisy_signals.LENGTH)).astype(np.float32)
    np.testing.assert_allclose(model(x, training=False), x, atol=1e-6)
    model.save(tmp_path / "enhancer.keras")
    reloaded = keras.models.load_model(tmp_path / "enhancer.keras", compile=False)
    np.testing.assert_allclose(reloaded(x, training=False), x, atol=1e-6)


def test_the_default_backbone_trains_at_smoke_budget_and_both_tracks_score_it(tmp_path):
    metrics = run_tracks(tmp_path, "noisy-signals", ["accuracy", "edge-lce"])
    accuracy, converted = metrics["accuracy"], metrics["edge-lce"]
    assert 3.0 < accuracy[("", "noisy_si_snr")] < 7.0  # the SNRs are drawn in [-5, 15] dB
    assert accuracy[("", "si_snri")] == pytest.approx(accuracy[("", "si_snr")] - accuracy[("", "noisy_si_snr")])
    assert converted[("float32", "converted")] == 1 and converted[("float32", "agreement_snr")] > 60.0
    assert np.isfinite(converted[("float32", "si_snr")])
