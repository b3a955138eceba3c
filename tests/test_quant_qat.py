"""The hand-written quantization-aware methods (QFX, ShiftQuant, FLIQS): quantizers, gradients, search, models."""

import math

import ml_dtypes
import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.modelfile import load_keras_model
from effbench.records import ResultStore
from effbench.registry import load_builtin_entries
from effbench.tf import keras, tf
from suites.quantization._tensor_quantizers import OUTPUT_QUANTIZED, layer_tensors, quantize_outputs
from suites.quantization._uniform import ActivationQuantizer, calibrate_activation_ranges, quantize_layers
from suites.quantization.fliqs import (
    FLOAT_FORMATS,
    FORMATS,
    FloatQuantizer,
    FormatPolicy,
    calibrate_inputs,
    float_round,
    format_quantizers,
    parse_lambdas,
    relative_costs,
    searchable_model,
    set_formats,
)
from suites.quantization.qfx import (
    FixedPointQuantizer,
    best_fraction_bits,
    fixed_point_model,
    fraction_bits_facts,
    initialise_binary_points,
    scale_gradient,
)
from suites.quantization.shiftquant import (
    GAUSSIAN_MAD_PER_STD,
    L1Normalization,
    ShiftGradientQuantizer,
    shift_group_quantize,
    with_l1_normalization,
)
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin, value_and_gradient
from tracks.complexity import count_complexity

load_builtin_entries()


def tiny_residual_model() -> keras.Model:
    """conv-BN-ReLU, conv-BN, a residual Add, ReLU, global pooling, a dense head: every layer kind in play."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(x)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = keras.layers.ReLU()(keras.layers.Add(name="add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    rng = np.random.default_rng(0)
    for name in ("bn1", "bn2"):  # trained-looking statistics
        bn = model.get_layer(name)
        bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 0.3, 4), rng.normal(0, 0.5, 4), rng.uniform(0.2, 3, 4)])
    return model


def inputs(count: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, 6, 6, 2)).astype(np.float32)


def assert_reloads(model: keras.Model, path) -> keras.Model:
    """Saved as .keras and loaded through effbench.modelfile, ``model`` predicts the same; the copy."""
    model.save(path)
    reloaded = load_keras_model(path)
    x = inputs(8, seed=2)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    return reloaded


def conv_dense_rows(model: keras.Model) -> dict:
    return {row.name: row for row in count_complexity(model).layers if row.macs}


# ---------------------------------------------------------------- QFX


def fixed_point(bits: int, fraction_bits: float, signed: bool) -> FixedPointQuantizer:
    quantizer = FixedPointQuantizer(bits)
    quantizer.build(tf.TensorShape([None]))
    quantizer.calibrated_fraction_bits.assign(fraction_bits)
    quantizer.signed.assign(float(signed))
    return quantizer


def test_fixed_point_values_on_a_hand_computed_grid():
    # B = 4, f = 1.7 -> F = 2: step 1/4; signed integers -7..7, unsigned 0..15.
    x = [-3.0, -1.8, -0.3, 0.1, 0.6, 1.74, 5.0]
    np.testing.assert_allclose(fixed_point(4, 1.7, True)(tf.constant(x)).numpy(),
                               [-1.75, -1.75, -0.25, 0.0, 0.5, 1.75, 1.75])  # fmt: skip
    x = [-0.5, 0.3, 2.0, 4.1, 3.6]
    np.testing.assert_allclose(fixed_point(4, 2.2, False)(tf.constant(x)).numpy(), [0.0, 0.25, 2.0, 3.75, 3.5])


def test_fixed_point_gradients_are_the_ste_and_lsq_through_the_rounded_binary_point():
    quantizer = fixed_point(4, 2.0, True)  # step s = 1/4, integers -7..7
    # x / s = -12, -1.2, 0.4, 2.4, 6.96, 7.2, 20: inside where round(x / s) is on the grid (7.2 rounds to 7).
    x = tf.constant([-3.0, -0.3, 0.1, 0.6, 1.74, 1.8, 5.0])
    upstream = tf.constant([0.5, 1.0, -2.0, 3.0, 1.5, 0.25, -1.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = quantizer(x)
    grad_x = tape.gradient(y, x, output_gradients=upstream).numpy()
    grad_f = float(tape.gradient(y, quantizer.fraction_delta, output_gradients=upstream))
    scaled = x.numpy() / 0.25
    inside = np.abs(np.round(scaled)) <= 7
    np.testing.assert_allclose(grad_x, upstream.numpy() * inside)
    step_gradient = np.where(inside, np.round(scaled) - scaled, np.sign(scaled) * 7)
    g = 1 / math.sqrt(7 * 7)  # N = 7 elements, q_max = 7
    expected = g * np.sum(upstream.numpy() * step_gradient) * (-math.log(2) * 0.25)
    assert grad_f == pytest.approx(expected, rel=1e-5)
    assert expected != 0


def test_scale_gradient_is_the_identity_forward_and_scales_backward():
    x = tf.constant([1.0, -2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = scale_gradient(x, 0.25)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(y, x, output_gradients=tf.constant([4.0, 8.0])).numpy(), [1.0, 2.0])


def test_the_start_binary_point_has_the_least_squared_error_among_the_four_candidates():
    # One outlier at 1.0 and a hundred 0.1s, B = 4 signed (q_max 7): F_c = floor(log2 7) = 2. Squared errors:
    # F=2 (step 1/4): 100 x 0.1^2 = 1.0; F=3 (1/8): 100 x 0.025^2 + (1 - 0.875)^2 = 0.078;
    # F=4 (1/16): 100 x 0.025^2 + (1 - 0.4375)^2 = 0.379; F=5 (1/32): 100 x 0.00625^2 + (1 - 0.21875)^2 = 0.61.
    values = np.array([1.0] + [0.1] * 100, np.float32)
    assert best_fraction_bits(values, 4, True) == 3
    assert best_fraction_bits(np.linspace(-0.99, 0.99, 51), 8, True) == 7  # F_c = floor(log2(127 / 0.99)) = 7
    assert best_fraction_bits(np.zeros(4), 8, True) == 7


@pytest.mark.parametrize(("start", "direction"), [(2.0, 1), (10.0, -1)])
def test_the_learned_binary_point_moves_toward_the_values_on_a_toy_problem(start, direction):
    """Too coarse a start (step 1/4 on values within 0.5) gains fractional bits; one that clips loses them."""
    x = tf.constant(np.random.default_rng(0).uniform(-0.5, 0.5, 256).astype(np.float32))
    quantizer = fixed_point(8, start, True)
    optimizer = keras.optimizers.Adam(0.1)
    for _ in range(60):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(quantizer(x) - x))
        optimizer.apply_gradients([(tape.gradient(loss, quantizer.fraction_delta), quantizer.fraction_delta)])
    moved = float(quantizer.fraction_bits) - start
    assert direction * moved > 2.0


def test_qfx_quantizes_kernels_inputs_and_elementwise_outputs_and_counts_bits(tmp_path):
    float_model = tiny_residual_model()
    model = fixed_point_model(float_model, 4)
    for name in ("bn1", "bn2", "add", "pool"):
        assert isinstance(model.get_layer(name).output_quantizer, FixedPointQuantizer)
    for name in ("stem", "conv", "head"):
        layer = model.get_layer(name)
        assert isinstance(layer.kernel_quantizer, FixedPointQuantizer)
        assert isinstance(layer.input_quantizer, FixedPointQuantizer)
    x = inputs()
    initialise_binary_points(model, float_model, x)
    tensors = layer_tensors(float_model, x, inputs_of=["conv"], outputs_of=["bn2"])
    conv = model.get_layer("conv")
    assert float(conv.input_quantizer.signed) == 0.0  # post-ReLU: unsigned
    assert float(model.get_layer("bn2").output_quantizer.signed) == 1.0
    facts = fraction_bits_facts(model)
    assert facts["conv/input"] == best_fraction_bits(tensors[("conv", "input")], 4, False)
    assert facts["bn2/output"] == best_fraction_bits(tensors[("bn2", "output")], 4, True)
    assert facts["conv/kernel"] == best_fraction_bits(conv.kernel.numpy(), 4, True)
    rows = conv_dense_rows(model)
    assert set(rows) == {"stem", "conv", "head"}
    for row in rows.values():
        assert (row.w_bits, row.a_bits, row.bops) == (4, 4, row.macs * 16)
    assert rows["conv"].size_bits == 3 * 3 * 4 * 4 * 4 + 2 * 32  # the kernel at 4 bits, two learned binary points
    reloaded = assert_reloads(model, tmp_path / "qfx.keras")
    assert fraction_bits_facts(reloaded) == facts
    assert type(reloaded.get_layer("add")) is OUTPUT_QUANTIZED[keras.layers.Add]


def test_quantize_outputs_refuses_a_layer_it_has_no_class_for():
    with pytest.raises(ValueError, match="cannot take an output quantizer"):
        quantize_outputs(tiny_residual_model(), {"stem": FixedPointQuantizer(8)})


# ---------------------------------------------------------------- ShiftQuant

# Channel peaks 1.0, 0.3 and 0.05 of a 4-bit gradient (q_max 7), K = 3 groups: shifts floor(log2(1/m_c)) = 0, 1,
# and 4 clipped to 2, so steps 1/7, 1/14, 1/28.
GRADIENT = np.array([[1.0, 0.3, 0.05], [-0.4, -0.1, 0.01]], np.float32)
NEAREST = np.array([[7 / 7, 4 / 14, 1 / 28], [-3 / 7, -1 / 14, 0.0]], np.float32)


def test_shiftquant_gradient_is_identity_forward_and_shift_grouped_backward():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y, grad = value_and_gradient(ShiftGradientQuantizer(4, groups=3, rounding="nearest"), x, GRADIENT)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_allclose(grad, NEAREST, rtol=1e-6)


def test_shiftquant_stochastic_rounding_lands_on_the_two_neighbours_and_is_unbiased():
    tf.random.set_seed(0)
    gradient = np.full((20000, 1), 0.3, np.float32)
    gradient[0] = 1.0  # step 1/7: 0.3 = 2.1 steps
    quantized = shift_group_quantize(tf.constant(gradient), 4, 8, stochastic=True).numpy()[1:, 0]
    np.testing.assert_allclose(np.unique(quantized), [2 / 7, 3 / 7], rtol=1e-6)
    assert quantized.mean() == pytest.approx(0.3, abs=3e-3)


def test_shiftquant_quantizes_the_gradient_reaching_the_layer_output():
    """dW = X^T Q(dY): the quantizer sits on the dense layer's output."""
    inputs_ = keras.Input((2,))
    dense = keras.layers.Dense(3, use_bias=False, name="dense")
    model = quantize_outputs(quantize_layers(keras.Model(inputs_, dense(inputs_)), {"dense": (32, 32)}),
                             {"dense": ShiftGradientQuantizer(4, groups=3, rounding="nearest")})  # fmt: skip
    x = tf.constant([[1.0, -2.0], [0.5, 3.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) * GRADIENT)
    kernel = model.get_layer("dense").kernel
    np.testing.assert_allclose(tape.gradient(loss, kernel).numpy(), x.numpy().T @ NEAREST, rtol=1e-6)


def test_l1_normalization_is_its_definition_in_training_and_inference():
    layer = L1Normalization(momentum=0.9, epsilon=1e-3)
    x = np.random.default_rng(0).normal(1.0, 2.0, (16, 3, 3, 4)).astype(np.float32)
    layer.build(x.shape)
    gamma, beta = np.array([1.0, 2.0, 0.5, -1.0]), np.array([0.0, 0.1, -0.2, 0.3])
    layer.set_weights([gamma, beta, np.full(4, 0.5), np.full(4, 1.5)])
    mean = x.mean(axis=(0, 1, 2))
    mad = np.abs(x - mean).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(layer(x, training=True).numpy(), gamma * (x - mean) / (mad + 1e-3) + beta, rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.9 * 0.5 + 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mad.numpy(), 0.9 * 1.5 + 0.1 * mad, rtol=1e-5)
    moving_mean, moving_mad = layer.moving_mean.numpy(), layer.moving_mad.numpy()
    expected = gamma * (x - moving_mean) / (moving_mad + 1e-3) + beta
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_l1_layers_start_from_the_batch_norm_statistics_and_compute_what_it_did():
    float_model = tiny_residual_model()
    model = with_l1_normalization(float_model)
    bn, l1 = float_model.get_layer("bn2"), model.get_layer("bn2")
    assert isinstance(l1, L1Normalization)
    np.testing.assert_allclose(l1.moving_mad.numpy(), GAUSSIAN_MAD_PER_STD * np.sqrt(bn.moving_variance.numpy() + 1e-3),
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(l1.moving_mean.numpy(), bn.moving_mean.numpy())
    x = inputs()
    np.testing.assert_allclose(model.predict(x, verbose=0), float_model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    # For Gaussian activations the L1 layer's batch statistic matches the BN's: sqrt(2/pi) sigma.
    gaussian = np.random.default_rng(3).normal(0, 2.0, (4000, 1, 1, 1)).astype(np.float32)
    probe = L1Normalization(momentum=0.0)
    probe(gaussian, training=True)
    assert float(probe.moving_mad[0]) == pytest.approx(GAUSSIAN_MAD_PER_STD * 2.0, rel=0.03)


def test_shiftquant_model_counts_at_its_bits_and_reloads(tmp_path):
    method = MethodRef.parse("shiftquant").create()
    model = method.integer_training_model(tiny_residual_model())
    calibrate_activation_ranges(model, inputs())
    rows = conv_dense_rows(model)
    for row in rows.values():
        assert (row.w_bits, row.a_bits, row.bops) == (4, 4, row.macs * 16)
        assert isinstance(model.get_layer(row.name).output_quantizer, ShiftGradientQuantizer)
    l1_row = next(row for row in count_complexity(model).layers if row.name == "bn1")
    assert l1_row.flops == 2 * 6 * 6 * 4
    reloaded = assert_reloads(model, tmp_path / "shiftquant.keras")
    assert isinstance(reloaded.get_layer("bn1"), L1Normalization)
    assert reloaded.get_layer("conv").output_quantizer.get_config()["groups"] == 8


# ---------------------------------------------------------------- FLIQS


def representable(dtype) -> np.ndarray:
    """Every finite value of an ml_dtypes format, from all its bit patterns (a float4 takes a byte's low 4 bits)."""
    bits = 8 if dtype == ml_dtypes.float8_e4m3fn else 4
    values = np.arange(2**bits, dtype=np.uint8).view(dtype).astype(np.float32)
    return np.unique(values[np.isfinite(values)])


@pytest.mark.parametrize(("name", "dtype"), [("fp4", ml_dtypes.float4_e2m1fn), ("fp8", ml_dtypes.float8_e4m3fn)])
def test_float_rounding_gives_exactly_the_values_of_e2m1_and_e4m3(name, dtype):
    form, values = FLOAT_FORMATS[name], representable(dtype)
    if name == "fp4":  # E2M1 by hand
        np.testing.assert_array_equal(values[values >= 0], [0, 0.5, 1, 1.5, 2, 3, 4, 6])
    assert form.max_value == values.max()
    np.testing.assert_array_equal(float_round(tf.constant(values), form).numpy(), values)  # each one is kept
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1, 1, 20000) * form.max_value, rng.normal(0, 1, 20000) * 2.0**-5])
    x = x.astype(np.float32)
    rounded = float_round(tf.constant(x), form).numpy()
    assert set(np.unique(rounded)) <= set(values)
    np.testing.assert_array_equal(rounded, x.astype(dtype).astype(np.float32))  # nearest, ties to even
    beyond = float_round(tf.constant([form.max_value * 1.5, -form.max_value * 4]), form).numpy()
    np.testing.assert_array_equal(beyond, [form.max_value, -form.max_value])  # saturates


def test_float_quantizer_scales_per_tensor_with_the_clipped_ste():
    quantizer = FloatQuantizer("fp4", calibrated=True)
    quantizer.build(tf.TensorShape([None]))
    quantizer.peak.assign(3.0)  # scale 3 / 6 = 0.5: representable values x 0.5
    x = np.array([-4.0, -0.6, 0.2, 1.1, 2.9, 3.2], np.float32)
    y, grad = value_and_gradient(quantizer, x, np.full(6, 2.0, np.float32))
    np.testing.assert_allclose(y, [-3.0, -0.5, 0.25, 1.0, 3.0, 3.0])
    np.testing.assert_array_equal(grad, [0.0, 2.0, 2.0, 2.0, 2.0, 0.0])


def test_format_quantizers_follow_the_choice_and_declare_its_width(tmp_path):
    float_model = tiny_residual_model()
    model = searchable_model(float_model)
    x = inputs()
    calibrate_inputs(model, float_model, x)
    quantizers = format_quantizers(model)
    assert list(quantizers) == ["stem", "conv", "head"]
    head_input = quantizers["head"][1]
    int8 = head_input.candidates[FORMATS.index("int8")]
    assert isinstance(int8, ActivationQuantizer) and float(int8.high) > 0
    outputs = {}
    for index, name in enumerate(FORMATS):
        set_formats(quantizers, [index] * 3)
        outputs[name] = model.predict(x, verbose=0)
        assert head_input.precision == (4 if name.endswith("4") else 8)
    assert len({round(float(v.sum()), 5) for v in outputs.values()}) == 4  # four different formats
    set_formats(quantizers, [FORMATS.index("fp4"), FORMATS.index("int8"), FORMATS.index("fp8")])
    rows = conv_dense_rows(model)
    assert [(rows[n].w_bits, rows[n].a_bits) for n in ("stem", "conv", "head")] == [(4, 4), (8, 8), (8, 8)]
    assert rows["stem"].bops == rows["stem"].macs * 16 and rows["stem"].size_bits == 3 * 3 * 2 * 4 * 4
    reloaded = assert_reloads(model, tmp_path / "fliqs.keras")
    assert [q.chosen for q, _ in format_quantizers(reloaded).values()] == ["fp4", "int8", "fp8"]


def test_relative_costs_are_bops_or_size_over_the_int8_model():
    inputs_ = keras.Input((8,))
    hidden = keras.layers.Dense(4, name="a")(inputs_)
    model = searchable_model(keras.Model(inputs_, keras.layers.Dense(2, name="b")(hidden)))
    # MACs 32 and 8; int8 BOPs 32 x 64 + 8 x 64 = 2560; kernel bits at int8 (32 + 8) x 8 = 320.
    bops = relative_costs(model, ["a", "b"], "bops")
    np.testing.assert_allclose(bops[:, FORMATS.index("int4")], [32 * 16 / 2560, 8 * 16 / 2560])
    np.testing.assert_allclose(bops[:, FORMATS.index("fp8")], [32 * 64 / 2560, 8 * 64 / 2560])
    np.testing.assert_allclose(relative_costs(model, ["a", "b"], "size")[:, FORMATS.index("fp4")], [0.4, 0.1])


def test_the_policy_shifts_toward_the_cheap_formats_as_lambda_grows():
    """A toy table: per-format accuracy and relative cost, three layers, reward = mean accuracy - lambda cost."""
    accuracy = np.array([0.90, 0.99, 0.94, 0.97])  # int4, int8, fp4, fp8
    cost = np.array([0.25, 1.0, 0.25, 1.0]) / 3  # per layer, of the int8 model's total
    # int8 beats fp4 by 0.05 / 3 in accuracy and loses 0.75 lambda / 3 in cost: the break-even lambda is 1/15.
    cheap = np.array([name.endswith("4") for name in FORMATS])
    shares, argmaxes = [], []
    for penalty in (0.0, 0.07, 1.0):
        rng = np.random.default_rng(0)
        policy = FormatPolicy(3, 4, learning_rate=0.05)
        for _ in range(400):
            choice = policy.sample(rng)
            policy.update(choice, accuracy[choice].mean() - penalty * cost[choice].sum())
        shares.append(policy.probabilities()[:, cheap].sum(axis=1).mean())
        argmaxes.append([FORMATS[i] for i in policy.argmax()])
    assert shares[0] < 0.1 < shares[1] < shares[2]
    assert argmaxes[0] == ["int8"] * 3 and all(name.endswith("4") for name in argmaxes[2])


def test_lambdas_option():
    assert parse_lambdas("0.05/0.2/1") == (0.05, 0.2, 1.0) and parse_lambdas(0.5) == (0.5,)
    assert MethodRef.parse("fliqs:lambdas=0.1/2").create().deployable_names() == ("", "lambda=2")
    with pytest.raises(ValueError, match="non-negative"):
        parse_lambdas("0.1/-1")


# ---------------------------------------------------------------- through the runner


@pytest.mark.parametrize("slug", ["qfx:bits=4", "shiftquant"])
def test_method_runs_through_the_runner(slug, tmp_path):
    # The runner's plumbing, on mnist1d's mlp: resnet-cifar's fake-quantized graph takes a minute to trace here.
    metrics = assert_operator_reports_ratio_to_fp32_twin(slug, tmp_path, twin="mlp", task="mnist1d")
    assert 0.0 <= metrics["top1"] <= 1.0


def test_fliqs_runs_through_the_runner_with_one_deployable_per_lambda(tmp_path):
    """On mnist1d's mlp: two searches and two fine-tunes of resnet-cifar would take minutes to trace here."""
    assert_operator_reports_ratio_to_fp32_twin("fliqs:lambdas=0.1/1", tmp_path, twin="mlp", task="mnist1d")
    records = {r.deployable: r for r in ResultStore(tmp_path).records() if r.method == "fliqs"}
    assert set(records) == {"", "lambda=1"}
    for deployable, penalty in (("", 0.1), ("lambda=1", 1.0)):
        facts = records[deployable].facts
        assert facts["simulated"] is True and facts["lambda"] == penalty
        assert set(facts["formats"].values()) <= set(FORMATS)
        assert {tuple(bits) for bits in facts["bit_widths"].values()} <= {(4, 4), (8, 8)}
