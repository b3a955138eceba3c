"""Scheduled binarization operators: ReSTE (annealed power-function backward) and BiPer (two-stage sine wave)."""

import math

import larq
import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.registry import METHODS, TASKS, load_builtin_entries
from effbench.schedule import EpochSchedule, scheduled_modules
from effbench.tf import keras, tf
from suites.binarization._layers import ScaledQuantConv2D
from suites.binarization._quantizers import StdNormalizedApproxSign, per_sample_std
from suites.binarization.biper import BiPerIndicators, BiPerSign, quantization_error
from suites.binarization.reste import (
    ReSTEIndicators,
    ReSTESign,
    annealed_exponent,
    estimating_error,
    reste_gradient,
    reste_layers,
)
from tests.conftest import value_and_gradient
from tracks.complexity import count_complexity

load_builtin_entries()

# Boundary points of ReSTE: 0, the interval m = 0.1, 1, the threshold t = 1.5 and just beyond.
POINTS = np.array([-2.0, -1.5001, -1.5, -1.0, -0.25, -0.1, -0.05, 0.0, 0.05, 0.1, 0.1001, 0.5, 1.5, 1.5001, 3.0])


def sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def scheduled(quantizer, epoch=0, epochs=1, shape=(4,)):
    quantizer.build(tf.TensorShape(shape))
    quantizer.set_epoch(epoch, epochs)
    return quantizer


def mlp_model(slug):
    """The slug's operator on the mnist1d MLP backbone (vectors of 40): cheap to train in a test."""
    return MethodRef.parse(slug).create().build(TASKS.get("mnist1d").spec)


@pytest.mark.parametrize("slug", ["reste", "biper"])
def test_reste_and_biper_are_registered_one_bit_operators_with_their_papers(slug):
    spec = METHODS.get(slug).spec
    assert (spec.suite, spec.kind) == ("binarization", "operator")
    assert (spec.taxonomy.weight_bits, spec.taxonomy.activation_bits) == (1, 1)
    assert spec.paper.url in ("https://arxiv.org/abs/2308.06689", "https://arxiv.org/abs/2404.01278")
    method = MethodRef.parse(slug).create()
    assert method.input_quantizer().precision == 1 and method.kernel_quantizer().precision == 1
    assert method.kernel_constraint() is None  # neither official code clips the latent weights


# ---------------------------------------------------------------- ReSTE


def test_reste_exponent_is_annealed_from_one_to_o_end_on_a_quarter_cosine():
    assert float(annealed_exponent(0.0, 3.0)) == pytest.approx(1.0)
    assert float(annealed_exponent(2 / 3, 3.0)) == pytest.approx(2.0)  # 1 + 2 (1 - cos(pi/3))
    assert float(annealed_exponent(1.0, 3.0)) == pytest.approx(3.0)
    values = [float(annealed_exponent(p, 3.0)) for p in np.linspace(0, 1, 11)]
    assert values == sorted(values)
    quantizer = scheduled(ReSTESign(), epoch=2, epochs=3)
    assert float(quantizer.exponent) == pytest.approx(2.0)


def test_reste_at_o_one_is_the_clipped_ste_with_window_t():
    quantizer = scheduled(ReSTESign(), epoch=0, epochs=10, shape=POINTS.shape)
    upstream = np.linspace(0.5, 2.0, POINTS.size)
    y, grad = value_and_gradient(quantizer, POINTS, upstream)
    np.testing.assert_array_equal(y, sign(POINTS))
    np.testing.assert_allclose(grad, (np.abs(POINTS) <= 1.5) * upstream, rtol=1e-6)
    y_larq, grad_larq = value_and_gradient(larq.quantizers.SteSign(clip_value=1.5), POINTS, upstream)
    np.testing.assert_array_equal(y, y_larq)
    np.testing.assert_allclose(grad, grad_larq, rtol=1e-6)


def test_reste_backward_follows_the_power_function_derivative_at_fixed_points():
    quantizer = scheduled(ReSTESign(), epoch=2, epochs=3, shape=POINTS.shape)  # o = 2
    y, grad = value_and_gradient(quantizer, POINTS)
    np.testing.assert_array_equal(y, sign(POINTS))
    expected = {
        0.0: math.sqrt(0.1) / 0.1, 0.05: math.sqrt(0.1) / 0.1, 0.1: math.sqrt(0.1) / 0.1,  # m^(1/o) / m
        0.1001: 0.5 / math.sqrt(0.1001), 0.25: 1.0, 0.5: 0.5 / math.sqrt(0.5), 1.0: 0.5,  # (1/o)|x|^((1-o)/o)
        1.5: 0.5 / math.sqrt(1.5), 1.5001: 0.0, 2.0: 0.0, 3.0: 0.0,  # zero beyond t
    }  # fmt: skip
    for x, g in zip(POINTS, grad, strict=True):
        assert g == pytest.approx(expected[round(abs(float(x)), 4)], rel=1e-5), x
    # The same formula at o = 3, directly.
    x = tf.constant([0.05, 0.4, 1.2, 1.6])
    want = [0.1 ** (1 / 3) / 0.1, (1 / 3) * 0.4 ** (-2 / 3), (1 / 3) * 1.2 ** (-2 / 3), 0.0]
    np.testing.assert_allclose(reste_gradient(x, 3.0, 1.5, 0.1).numpy(), want, rtol=1e-5)


def test_reste_kernels_take_a_layer_wise_mean_abs_scale_that_is_not_detached():
    kernel = np.array([[0.5, -1.0], [0.0, -0.25], [1.2, 2.0]], np.float32)
    upstream = np.arange(1, 7, dtype=np.float32).reshape(3, 2)
    quantizer = scheduled(ReSTESign(scaled=True), shape=kernel.shape)  # o = 1: gradient 1 on |W| <= 1.5
    y, grad = value_and_gradient(quantizer, kernel, upstream)
    scale = np.abs(kernel).mean()
    np.testing.assert_allclose(y, scale * sign(kernel), rtol=1e-6)
    # d mean|W| / dW_i = sign(W_i) / n, with d|W|/dW = 0 at W = 0 (TensorFlow's subgradient of abs).
    through_scale = np.sign(kernel) / kernel.size * np.sum(upstream * sign(kernel))
    np.testing.assert_allclose(grad, scale * (np.abs(kernel) <= 1.5) * upstream + through_scale, rtol=1e-5)


def test_reste_logs_its_indicators_every_epoch_as_the_exponent_grows():
    model = mlp_model("reste")
    assert len(reste_layers(model)) == len(scheduled_modules(model)) // 2 > 0
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 40)).astype(np.float32), rng.integers(0, 10, 32)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    indicators = ReSTEIndicators(x[:16], y[:16])
    history = model.fit(x, y, batch_size=16, epochs=3, callbacks=[EpochSchedule(3), indicators], verbose=0).history
    np.testing.assert_allclose(history["reste_o"], [float(annealed_exponent(e / 3, 3.0)) for e in range(3)], rtol=1e-6)
    assert history["reste_o"][0] == 1.0
    assert all(v > 0 and math.isfinite(v) for v in history["reste_estimating_error"])
    assert all(v > 0 and math.isfinite(v) for v in history["reste_gradient_stability"])
    # At o = 1 the estimator is w itself: the error is the sum over layers of ||w - sign(w)||_2.
    kernels = [layer.kernel.numpy() for layer in reste_layers(model)]
    want = sum(np.linalg.norm(w.astype(np.float64) - sign(w)) for w in kernels)
    assert estimating_error(model, 1.0) == pytest.approx(want, rel=1e-6)
    # It shrinks as o grows: |w|^(1/o) tends to 1.
    errors = [estimating_error(model, o) for o in (1.0, 2.0, 3.0, 10.0)]
    assert errors == sorted(errors, reverse=True)


def test_reste_gradient_stability_leaves_the_model_state_untouched():
    model = mlp_model("reste")
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 40)).astype(np.float32), rng.integers(0, 10, 16)
    before = [w.numpy().copy() for w in model.weights]
    callback = ReSTEIndicators(x, y)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert set(logs) == {"reste_o", "reste_estimating_error", "reste_gradient_stability"}
    for weight, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)


# ---------------------------------------------------------------- BiPer


@pytest.mark.parametrize(
    "epochs,stages", [(1, [2]), (2, [1, 2]), (3, [1, 2, 2]), (4, [1, 1, 2, 2]), (10, [1] * 5 + [2] * 5)]
)
def test_biper_switches_to_stage_two_halfway_and_always_ends_in_it(epochs, stages):
    quantizer = scheduled(BiPerSign(), shape=(3,))
    seen = []
    for epoch in range(epochs):
        quantizer.set_epoch(epoch, epochs)
        seen.append(2 if bool(quantizer.stage2) else 1)
    assert seen == stages
    assert bool(scheduled(BiPerSign(stage1_fraction=0.0), epoch=0, epochs=5).stage2)


def test_biper_weights_are_the_sine_then_its_square_wave_with_the_sine_derivative_backward():
    w = np.array([-0.3, -0.1, -0.01, 0.0, 0.02, 0.05, 0.1, 0.2, 0.4], np.float32)
    upstream = np.linspace(0.5, 1.5, w.size)
    quantizer = scheduled(BiPerSign(freq=20.0), epoch=0, epochs=4, shape=w.shape)  # stage 1
    y, grad = value_and_gradient(quantizer, w, upstream)
    np.testing.assert_allclose(y, np.sin(20 * w), atol=1e-6)
    np.testing.assert_allclose(grad, 20 * np.cos(20 * w) * upstream, rtol=1e-5, atol=1e-5)
    quantizer.set_epoch(3, 4)  # stage 2
    y, grad = value_and_gradient(quantizer, w, upstream)
    np.testing.assert_array_equal(y, sign(np.sin(20 * w)))  # exactly +-1: the square wave
    assert y[w == 0.2] == -1.0 and y[w == 0.0] == 1.0  # sin(4) < 0; sign(0) = +1
    np.testing.assert_allclose(grad, 20 * np.cos(20 * w) * upstream, rtol=1e-5, atol=1e-5)


def test_biper_quantization_error_falls_as_the_frequency_grows():
    w = np.random.default_rng(0).normal(0.0, 0.05, (3, 3, 16, 16))
    errors = [quantization_error(w, freq) for freq in (1.0, 5.0, 10.0, 20.0, 40.0)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.9
    assert quantization_error(w, 1000.0) == pytest.approx(1 - 2 / math.pi, abs=0.03)  # phases uniform


def test_std_normalised_approx_sign_backward_goes_through_the_per_sample_std():
    a = np.random.default_rng(2).normal(0.0, 0.4, (2, 3, 2, 2)).astype(np.float32)
    upstream = np.random.default_rng(3).uniform(0.5, 1.5, a.shape).astype(np.float32)
    quantizer = StdNormalizedApproxSign()
    y_train, grad_train = value_and_gradient(quantizer, a, upstream, training=True)
    y_infer, grad_infer = value_and_gradient(quantizer, a, upstream, training=False)
    np.testing.assert_array_equal(y_train, sign(a))
    np.testing.assert_array_equal(y_infer, sign(a))
    np.testing.assert_allclose(grad_infer, np.maximum(0, 2 - 2 * np.abs(a)) * upstream, rtol=1e-5)
    # Training: z = a / sigma with sigma = sqrt(Var(a) + 1e-5) per sample; d/da of sum(v * approx_sign(z)).
    sigma = per_sample_std(tf.constant(a)).numpy()
    z = a / sigma
    v = upstream * np.maximum(0, 2 - 2 * np.abs(z))
    n = a[0].size
    centred = a - a.mean(axis=(1, 2, 3), keepdims=True)
    expected = v / sigma - np.sum(v * a, axis=(1, 2, 3), keepdims=True) * centred / (n * sigma**3)
    np.testing.assert_allclose(grad_train, expected, rtol=1e-4, atol=1e-5)


def test_a_biper_resnet_has_learned_channel_scales_and_plus_minus_one_kernels():
    model = MethodRef.parse("biper").create().build(TASKS.get("digits").spec)
    binary = [layer for layer in model.layers if isinstance(layer, larq.layers.QuantConv2D)]
    assert binary and all(isinstance(layer, ScaledQuantConv2D) for layer in binary)
    assert all(isinstance(layer.kernel_quantizer, BiPerSign) for layer in binary)
    assert all(isinstance(layer.input_quantizer, StdNormalizedApproxSign) for layer in binary)
    kernel = binary[1].kernel_quantizer(tf.convert_to_tensor(binary[1].kernel)).numpy()
    assert set(np.unique(kernel)) == {-1.0, 1.0}  # a fresh (or fully trained) model is in stage 2
    rows = {row.name: row for row in count_complexity(model).layers}
    assert all((rows[layer.name].w_bits, rows[layer.name].a_bits) == (1, 1) for layer in binary)


def test_biper_trains_in_two_stages_and_logs_its_quantization_error():
    model = mlp_model("biper")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 40)).astype(np.float32), rng.integers(0, 10, 32)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=4, callbacks=[EpochSchedule(4), BiPerIndicators()], verbose=0)
    assert history.history["biper_stage"] == [1.0, 1.0, 2.0, 2.0]
    errors = history.history["biper_quantization_error"]
    assert len(errors) == 4 and all(0 < e < 1 for e in errors)


@pytest.mark.parametrize("slug", ["reste", "biper"])
def test_a_scheduled_model_saves_and_reloads_with_its_schedule(slug, tmp_path):
    model = mlp_model(slug)
    for module in scheduled_modules(model):
        module.set_epoch(3, 4)
    model.save(tmp_path / f"{slug}.keras")
    reloaded = keras.models.load_model(tmp_path / f"{slug}.keras")
    assert [float(m.progress) for m in scheduled_modules(reloaded)] == pytest.approx(
        [0.75] * len(scheduled_modules(model))
    )
    x = np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_reste_runs_through_the_runner_and_its_accuracy_record_carries_the_indicator_curves(tmp_path):
    from effbench.records import ResultStore
    from effbench.runner import execute_plan, make_plan

    store = ResultStore(tmp_path)
    jobs = make_plan([MethodRef.parse("reste")], ["mnist1d"], [0], ["accuracy"], "smoke", store)
    assert [str(job.training.method) for job in jobs] == ["mlp", "reste"]
    results = execute_plan(jobs, store, log=lambda _: None)
    assert not any(result.failures for result in results)
    record = results[1].records[0]
    metrics = {m.name: m.value for m in record.metrics}
    assert metrics["top1_relative"] == pytest.approx(metrics["top1"] / metrics["fp32_top1"])
    for name in ("reste_o", "reste_estimating_error", "reste_gradient_stability"):
        assert len(record.curves[name]) == len(record.curves["loss"]) >= 1
