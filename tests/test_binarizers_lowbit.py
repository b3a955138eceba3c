"""Low-bit binarization methods (bitnet158, ternary-nlg, pb-partial, binarydm-lmb): values, gradients, models."""

import math

import larq
import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.registry import METHODS, TASKS, load_builtin_entries
from effbench.tf import keras, tf
from suites.binarization._quantizers import ElasticQuantizer, elastic_quantize, initialize_elastic_steps
from suites.binarization.binarydm_lmb import MultiBasisBinarizer
from suites.binarization.bitnet158 import AbsMaxActivation, TernaryWeight
from suites.binarization.pb_partial import PartialBinarizer, mixed_bits
from suites.binarization.ternary_nlg import StatisticWeight
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin, value_and_gradient
from tracks.complexity import count_complexity

load_builtin_entries()

SLUGS = ("bitnet158", "ternary-nlg", "pb-partial", "binarydm-lmb")
BINARY_LAYERS = (larq.layers.QuantConv2D, larq.layers.QuantDense)
# (kh=1, kw=2, cin=2, cout=3): 12 weights; |W| sorted: 0, .1, .2, .25, .3, .5, .5, .75, 1, 1, 1.5, 2.
KERNEL = np.array([[[[0.5, -1.0, 0.0], [-0.25, 2.0, -0.1]], [[1.0, -1.5, 0.3], [-0.75, 0.5, -0.2]]]], np.float32)


def sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def upstream_for(x):
    return np.arange(1, x.size + 1, dtype=np.float32).reshape(x.shape) / x.size


def binary_layers(model):
    return [layer for layer in model.layers if isinstance(layer, BINARY_LAYERS)]


def layer_operands(model, layer, seed=0):
    x = np.random.default_rng(seed).standard_normal((4, *model.input_shape[1:])).astype(np.float32)
    activation = keras.Model(model.input, layer.input)(x)
    kernel = layer.kernel_quantizer(tf.convert_to_tensor(layer.kernel)).numpy()
    inputs = layer.input_quantizer(activation).numpy() if layer.input_quantizer else activation.numpy()
    return kernel, inputs


# --- registration --------------------------------------------------------------------------------------------


def test_the_four_methods_are_registered_with_their_kind_scale_and_bits():
    expected = {
        "bitnet158": ("operator", "full", 2, 8),
        "ternary-nlg": ("operator", "small-faithful", 2, 2),
        "pb-partial": ("compression", "small-faithful", 3, 32),
        "binarydm-lmb": ("operator", "small-faithful", 2, 4),
    }
    for slug, (kind, scale, w_bits, a_bits) in expected.items():
        spec = METHODS.get(slug).spec
        assert (spec.suite, spec.kind, spec.scale) == ("binarization", kind, scale)
        assert (spec.taxonomy.weight_bits, spec.taxonomy.activation_bits) == (w_bits, a_bits)
        assert spec.paper.url.startswith("https://arxiv.org/abs/")
        method = MethodRef.parse(slug).create()
        assert method.kernel_quantizer().precision == w_bits
        input_quantizer = method.input_quantizer()
        assert (input_quantizer.precision if input_quantizer is not None else 32) == a_bits


# --- bitnet158 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("measure", "gamma"), [("absmedian", 0.5), ("absmean", 8.1 / 12)])
def test_bitnet_kernels_are_ternary_multiples_of_gamma_with_an_identity_ste(measure, gamma):
    # 12 weights: the lower median of |W| is the 6th smallest, 0.5 (torch.median's convention).
    np.testing.assert_allclose(np.abs(KERNEL).mean(), 8.1 / 12, rtol=1e-6)
    upstream = upstream_for(KERNEL)
    y, grad = value_and_gradient(TernaryWeight(measure=measure), KERNEL, upstream)
    expected = gamma * np.clip(np.round(KERNEL / gamma), -1, 1)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert set(np.round(np.unique(y) / gamma, 5)) <= {-1.0, 0.0, 1.0}
    assert 0.0 in y and gamma == pytest.approx(y.max())
    np.testing.assert_allclose(grad, upstream, rtol=1e-6)  # identity STE, even beyond |W| = 1


def test_bitnet_activations_are_per_sample_absmax_8bit_with_an_identity_ste():
    a = np.array([[[[0.0, -1.0], [2.0, -0.5]]], [[[0.2, 0.1], [-0.05, -0.4]]]], np.float32)
    upstream = upstream_for(a)
    y, grad = value_and_gradient(AbsMaxActivation(), a, upstream)
    scale = (127.0 / np.abs(a).reshape(2, -1).max(axis=1)).reshape(2, 1, 1, 1)  # [63.5, 317.5]
    np.testing.assert_allclose(y, np.clip(np.round(a * scale), -128, 127) / scale, rtol=1e-6)
    grid = y * scale
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-4)
    assert np.abs(grid).max() == pytest.approx(127.0)
    assert y[0, 0, 0, 1] == pytest.approx(-64 / 63.5)  # -1 * 63.5 = -63.5 rounds half to even: -64
    np.testing.assert_allclose(grad, upstream, rtol=1e-6)


def test_bitnet_layer_norm_option_standardises_each_sample_before_the_absmax():
    a = np.array([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 4.0, -4.0]], np.float32)
    y, _ = value_and_gradient(AbsMaxActivation(input_norm="layer"), a)
    mean, std = a.mean(axis=1, keepdims=True), np.sqrt(a.var(axis=1, keepdims=True) + 1e-5)
    normalised = (a - mean) / std
    scale = 127.0 / np.abs(normalised).max(axis=1, keepdims=True)
    np.testing.assert_allclose(y, np.round(normalised * scale) / scale, rtol=1e-5)
    with pytest.raises(ValueError, match="input_norm"):
        AbsMaxActivation(input_norm="batch")


# --- ternary-nlg ---------------------------------------------------------------------------------------------


def test_ternary_nlg_ternary_weights_follow_twn_statistics_with_an_identity_ste():
    delta = 0.7 * np.abs(KERNEL).mean()  # 0.4725
    kept = np.abs(KERNEL) > delta  # |W| in {.5, .5, .75, 1, 1, 1.5, 2}
    alpha = np.abs(KERNEL)[kept].mean()
    assert kept.sum() == 7 and alpha == pytest.approx(7.25 / 7)
    upstream = upstream_for(KERNEL)
    y, grad = value_and_gradient(StatisticWeight("ternary"), KERNEL, upstream)
    np.testing.assert_allclose(y, alpha * np.sign(KERNEL) * kept, rtol=1e-6)
    np.testing.assert_allclose(grad, upstream, rtol=1e-6)


def test_ternary_nlg_binary_weights_are_mean_abs_times_the_mean_centred_sign():
    mean = KERNEL.mean()  # 0.1 / 12 > 0, so the zero weight maps to -alpha
    upstream = upstream_for(KERNEL)
    y, grad = value_and_gradient(StatisticWeight("binary"), KERNEL, upstream)
    np.testing.assert_allclose(y, np.abs(KERNEL).mean() * sign(KERNEL - mean), rtol=1e-6)
    assert y[0, 0, 0, 2] < 0
    np.testing.assert_allclose(grad, upstream, rtol=1e-6)


POINTS = np.array([[-3.0, -1.3, -0.6, -0.2, 0.0, 0.3, 0.5, 0.9, 1.6, 5.0]], np.float32)


def elastic_reference(v, alpha, bits):
    low, high = (-1, 1) if bits <= 2 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    u = v / alpha
    q = sign(v) if bits == 1 else np.clip(np.round(u), low, high)
    middle = ((u >= low) & (u <= high)).astype(np.float32)
    local = q if bits == 1 else np.where(u < low, low, np.where(u > high, high, np.round(u) - u))
    return alpha * q, middle, local / math.sqrt(v.size * high)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_elastic_quantizer_values_and_lsq_gradients_match_the_formulas(bits):
    alpha = 0.8
    upstream = upstream_for(POINTS)
    x, step = tf.constant(POINTS), tf.constant(alpha)
    with tf.GradientTape() as tape:
        tape.watch([x, step])
        y = elastic_quantize(x, step, bits)
    grad_x, grad_step = tape.gradient(y, [x, step], output_gradients=tf.constant(upstream))
    expected, middle, local = elastic_reference(POINTS, alpha, bits)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(grad_x.numpy(), middle * upstream, rtol=1e-6)
    assert grad_step.numpy() == pytest.approx(float((local * upstream).sum()), rel=1e-5)


def test_elastic_quantizer_learns_a_shift_and_initialises_its_step_from_data():
    quantizer = ElasticQuantizer(bits=2, shift=True)
    x = tf.constant(np.array([[0.5, -1.0], [2.0, 0.1]], np.float32))
    quantizer(x)
    quantizer.offset.assign([0.5, -0.5])
    quantizer.step.assign(0.4)
    with tf.GradientTape() as tape:
        y = quantizer(x)
    grad_offset = tape.gradient(y, quantizer.offset).numpy()
    centred = x.numpy() - [0.5, -0.5]  # [[0, -0.5], [1.5, 0.6]] / 0.4 -> [[0, -1.25], [3.75, 1.5]]
    np.testing.assert_allclose(y.numpy(), 0.4 * np.clip(np.round(centred / 0.4), -1, 1), rtol=1e-6)
    np.testing.assert_allclose(grad_offset, [-1.0, 0.0])  # only the first column's in-range entry passes
    assert quantizer.initial_step(x).numpy() == pytest.approx(2 * np.abs(centred).mean())


# --- pb-partial ----------------------------------------------------------------------------------------------


def test_pb_partial_keeps_salient_weights_at_8_bits_frozen_and_binarizes_the_rest():
    quantizer = PartialBinarizer(salient=0.25)  # round(0.25 * 12) = 3 salient: |W| in {2, 1.5, 1, 1} -> ties: 4
    upstream = upstream_for(KERNEL)
    y, grad = value_and_gradient(quantizer, KERNEL, upstream)
    salient = np.abs(KERNEL) >= 1.0
    assert salient.sum() == 4
    step = 2.0 / 127
    binary = ~salient
    flat_binary, flat_abs = binary.reshape(-1, 3), np.abs(KERNEL).reshape(-1, 3)
    alpha = (flat_abs * flat_binary).sum(axis=0) / flat_binary.sum(axis=0)
    np.testing.assert_allclose(alpha, [0.5, 0.5, 0.15], rtol=1e-6)
    expected = np.where(salient, step * np.round(KERNEL / step), alpha * sign(KERNEL))
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, np.where(salient, 0.0, alpha * (np.abs(KERNEL) <= 1) * upstream), rtol=1e-6)
    assert quantizer.average_bits == pytest.approx(0.75 + 2 + 1) and quantizer.precision == 4


def test_pb_partial_bit_convention():
    assert mixed_bits(0.1) == pytest.approx(2.7) and PartialBinarizer(0.1).precision == 3
    assert PartialBinarizer(0.0).precision == 1 and PartialBinarizer(1.0).precision == 8
    y, _ = value_and_gradient(PartialBinarizer(0.0), KERNEL)
    np.testing.assert_allclose(y, np.abs(KERNEL).reshape(-1, 3).mean(axis=0) * sign(KERNEL), rtol=1e-6)


# --- binarydm-lmb --------------------------------------------------------------------------------------------


def test_lmb_is_two_learned_bases_on_the_sign_and_its_residual():
    quantizer = MultiBasisBinarizer()
    quantizer(tf.constant(KERNEL))
    quantizer.initialize(tf.constant(KERNEL))
    flat = KERNEL.reshape(-1, 3)
    sigma1 = np.abs(flat).mean(axis=0)
    sigma2 = np.abs(flat - sigma1 * sign(flat)).mean(axis=0)
    np.testing.assert_allclose(quantizer.sigma1.numpy(), sigma1, rtol=1e-6)
    np.testing.assert_allclose(quantizer.sigma2.numpy(), sigma2, rtol=1e-6)
    upstream = upstream_for(KERNEL)
    x = tf.constant(KERNEL)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
    grad_x, grad_s1, grad_s2 = tape.gradient(y, [x, quantizer.sigma1, quantizer.sigma2], upstream)
    residual = KERNEL - sigma1 * sign(KERNEL)
    np.testing.assert_allclose(y.numpy(), sigma1 * sign(KERNEL) + sigma2 * sign(residual), rtol=1e-6)
    ste = sigma1 * (np.abs(KERNEL) <= 1) + sigma2 * (np.abs(residual) <= 1)
    np.testing.assert_allclose(grad_x.numpy(), ste * upstream, rtol=1e-6)
    np.testing.assert_allclose(grad_s1.numpy(), (sign(KERNEL) * upstream).reshape(-1, 3).sum(0), rtol=1e-6)
    np.testing.assert_allclose(grad_s2.numpy(), (sign(residual) * upstream).reshape(-1, 3).sum(0), rtol=1e-6)


# --- models ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models():
    digits = TASKS.get("digits").spec
    built = {slug: MethodRef.parse(slug).create().build(digits) for slug in SLUGS}
    built["ternary-nlg:weights=binary"] = MethodRef.parse("ternary-nlg:weights=binary").create().build(digits)
    x = np.random.default_rng(2).standard_normal((8, *digits.input_shape)).astype(np.float32)
    for slug in ("ternary-nlg", "ternary-nlg:weights=binary", "binarydm-lmb"):
        initialize_elastic_steps(built[slug], x)
    return built


def test_bitnet_layers_see_ternary_kernels_and_8bit_activations(models):
    model = models["bitnet158"]
    assert model.get_layer(binary_layers(model)[0].name).kernel_constraint is None
    for layer in binary_layers(model)[:3]:
        kernel, inputs = layer_operands(model, layer)
        gamma = np.abs(kernel).max()
        assert set(np.unique(np.round(kernel / gamma, 5))) <= {-1.0, 0.0, 1.0}
        grid = inputs * (127.0 / np.abs(inputs).reshape(4, -1).max(axis=1)).reshape(4, 1, 1, 1)
        np.testing.assert_allclose(grid, np.round(grid), atol=1e-3)


@pytest.mark.parametrize(("slug", "kernel_levels", "input_levels"), [
    ("ternary-nlg", {-1.0, 0.0, 1.0}, {-1.0, 0.0, 1.0}),
    ("ternary-nlg:weights=binary", {-1.0, 1.0}, {-1.0, 1.0}),
])  # fmt: skip
def test_ternary_nlg_layers_see_only_scaled_ternary_or_binary_values(models, slug, kernel_levels, input_levels):
    model = models[slug]
    for layer in binary_layers(model)[:3]:
        kernel, inputs = layer_operands(model, layer)
        assert set(np.unique(np.round(kernel / np.abs(kernel).max(), 5))) <= kernel_levels
        step = layer.input_quantizer.step.numpy()
        assert set(np.unique(np.round(inputs / step, 5))) <= input_levels


def test_pb_partial_layers_hold_8bit_salient_and_binary_weights_and_keep_float_activations(models):
    model = models["pb-partial"]
    assert any(type(layer) is keras.layers.ReLU for layer in model.layers)  # activations stay float
    for layer in binary_layers(model)[:3]:
        assert layer.input_quantizer is None and layer.pad_values == 0.0
        latent = layer.kernel.numpy()
        kernel, _ = layer_operands(model, layer)
        salient = np.abs(latent) >= np.sort(np.abs(latent).ravel())[-round(0.1 * latent.size)]
        step = np.abs(latent).max() / 127
        np.testing.assert_allclose(kernel[salient] / step, np.round(kernel[salient] / step), atol=1e-3)
        binary = np.where(salient, np.nan, np.abs(kernel)).reshape(-1, kernel.shape[-1])
        spread = np.nanmax(binary, axis=0) - np.nanmin(binary, axis=0)
        np.testing.assert_allclose(spread, 0.0, atol=1e-6)  # one magnitude per output channel


def test_binarydm_layers_see_two_basis_kernels_and_4bit_activations(models):
    model = models["binarydm-lmb"]
    for layer in binary_layers(model)[:3]:
        kernel, inputs = layer_operands(model, layer)
        q = layer.kernel_quantizer
        s1, s2 = q.sigma1.numpy(), q.sigma2.numpy()
        np.testing.assert_allclose(s1, np.abs(layer.kernel.numpy()).reshape(-1, s1.size).mean(0), rtol=1e-5)
        levels = np.stack([s1 + s2, s1 - s2, -s1 + s2, -s1 - s2])
        flat = kernel.reshape(-1, s1.size)
        assert np.all(np.min(np.abs(flat[None] - levels[:, None]), axis=0) < 1e-6)
        units = inputs / q_step(layer)
        np.testing.assert_allclose(units, np.round(units), atol=1e-4)
        assert units.min() >= -8 and units.max() <= 7


def q_step(layer):
    return layer.input_quantizer.step.numpy()


@pytest.mark.parametrize(("slug", "bits"), [
    ("bitnet158", (2, 8)), ("ternary-nlg", (2, 2)), ("pb-partial", (3, 32)), ("binarydm-lmb", (2, 4)),
])  # fmt: skip
def test_complexity_counts_the_binary_layers_at_the_reported_bits(models, slug, bits):
    model = models[slug]
    rows = {row.name: row for row in count_complexity(model).layers}
    names = [layer.name for layer in binary_layers(model)]
    assert len(names) > 2 and all((rows[n].w_bits, rows[n].a_bits) == bits for n in names)
    assert rows[names[0]].bops == rows[names[0]].macs * bits[0] * bits[1]


@pytest.mark.parametrize("slug", SLUGS)
def test_a_model_saves_and_reloads_without_custom_objects(slug, models, tmp_path):
    model = models[slug]
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = np.random.default_rng(1).standard_normal((3, *model.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    name = binary_layers(model)[1].name
    original, loaded = model.get_layer(name), reloaded.get_layer(name)
    assert type(loaded.kernel_quantizer) is type(original.kernel_quantizer)
    assert type(loaded.input_quantizer) is type(original.input_quantizer)
    assert loaded.kernel_quantizer.get_config() == original.kernel_quantizer.get_config()


def test_mlp_backbone_is_binarized_too():
    mnist1d = TASKS.get("mnist1d").spec
    for slug in SLUGS:
        model = MethodRef.parse(slug).create().build(mnist1d)
        layers = binary_layers(model)
        assert layers and all(isinstance(layer, larq.layers.QuantDense) for layer in layers)


@pytest.mark.parametrize("slug", SLUGS)
def test_runs_end_to_end_and_reports_the_ratio_to_the_fp32_twin(slug, tmp_path):
    metrics = assert_operator_reports_ratio_to_fp32_twin(slug, tmp_path)
    assert 0.0 <= metrics["top1"] <= 1.0
