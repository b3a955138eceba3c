"""BiBench's other four operators (XNOR-Net++, ReActNet, ReCU, FDA): formulas, schedules, models, save/reload."""

import math

import larq
import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.registry import TASKS, load_builtin_entries
from effbench.schedule import EpochSchedule, scheduled_modules
from effbench.tf import keras, tf
from suites.binarization._layers import ScaledQuantConv2D, ScaledQuantDense
from suites.binarization._quantizers import ChannelScaledSign
from suites.binarization.fda import (
    FDAActivationSign,
    FDAKernelSign,
    fda_noise_weight,
    fda_terms,
    fourier_gradient,
    fourier_sign,
)
from suites.binarization.reactnet import RPReLU, RSign
from suites.binarization.recu import ReCUActivationSign, ReCUWeightSign, recu_tau
from tests.conftest import assert_operator_reports_ratio_to_fp32_twin, binary_layer_names, value_and_gradient
from tracks.complexity import count_complexity

load_builtin_entries()

SLUGS = ("xnorpp", "reactnet", "recu", "fda")
# Boundary points: 0 (sign(0) = +1), |x| = 1 (the estimators still pass), just beyond, the ApproxSign kinks.
POINTS = np.array([-2.0, -1.0001, -1.0, -0.75, -0.5, -1e-7, 0.0, 1e-7, 0.25, 0.5, 1.0, 1.0001, 3.0], np.float32)
# A (kh=1, kw=2, cin=2, cout=3) kernel: output channel c holds kernel[..., c].
KERNEL = np.array([[[[0.5, -1.0, 0.0], [-0.25, 2.0, -0.1]], [[1.0, -1.5, 0.3], [-0.75, 0.5, -0.2]]]], np.float32)


def sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def ste(x):
    return (np.abs(x) <= 1).astype(np.float32)


def approx_sign_gradient(x):
    return np.maximum(0.0, 2.0 - 2.0 * np.abs(x)).astype(np.float32)


def build(slug, task="digits"):
    return MethodRef.parse(slug).create().build(TASKS.get(task).spec)


def set_schedules(model, epoch, epochs):
    for module in scheduled_modules(model):
        module.set_epoch(epoch, epochs)


@pytest.fixture(scope="module")
def binarized_models():
    return {slug: build(slug) for slug in SLUGS}


def test_xnorpp_quantizers_are_unscaled_signs_with_the_clipped_ste():
    method = MethodRef.parse("xnorpp").create()
    upstream = np.linspace(0.5, 2.0, POINTS.size).astype(np.float32)
    for quantizer in (method.input_quantizer(), method.kernel_quantizer()):
        y, grad = value_and_gradient(quantizer, POINTS, upstream)
        np.testing.assert_array_equal(y, sign(POINTS))
        np.testing.assert_array_equal(grad, ste(POINTS) * upstream)


def test_xnorpp_learns_a_rank_one_output_scale_o_h_w(binarized_models):
    model = binarized_models["xnorpp"]
    for name in binary_layer_names(model):
        layer = model.get_layer(name)
        assert isinstance(layer, ScaledQuantConv2D) and layer.output_scale == "rank1"
        _, height, width, channels = layer.output_shape
        assert [tuple(f.shape) for f in layer.scale_factors] == [(channels,), (height, 1, 1), (1, width, 1)]
    layer = model.get_layer(binary_layer_names(model)[3])
    x = np.random.default_rng(0).standard_normal((2, *layer.input_shape[1:])).astype(np.float32)
    unscaled = layer(x).numpy()  # all factors start at 1
    rng = np.random.default_rng(1)
    factors = [rng.uniform(0.5, 2.0, f.shape).astype(np.float32) for f in layer.scale_factors]
    for variable, value in zip(layer.scale_factors, factors, strict=True):
        variable.assign(value)
    o, h, w = factors
    np.testing.assert_allclose(layer(x).numpy(), unscaled * (o * h * w), rtol=1e-5, atol=1e-5)
    assert (o * h * w).shape == layer.output_shape[1:]


def test_xnorpp_dense_layers_have_only_the_channel_factor():
    model = build("xnorpp", "mnist1d")
    (name,) = binary_layer_names(model)
    layer = model.get_layer(name)
    assert isinstance(layer, ScaledQuantDense) and [tuple(f.shape) for f in layer.scale_factors] == [(256,)]


# ---------------------------------------------------------------- ReActNet


def test_rsign_shifts_per_channel_with_the_approx_sign_gradient_to_input_and_shift():
    quantizer = RSign()
    x = np.stack([POINTS, POINTS[::-1]], axis=1)  # (13, 2): two channels
    quantizer.build(tf.TensorShape(x.shape))
    assert quantizer.shift.numpy().tolist() == [0.0, 0.0]  # initialised to 0
    shift = np.array([0.25, -0.5], np.float32)
    quantizer.shift.assign(shift)
    upstream = np.arange(1, x.size + 1, dtype=np.float32).reshape(x.shape)
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        y = quantizer(x_t)
    grad_x, grad_shift = tape.gradient(y, [x_t, quantizer.shift], output_gradients=tf.constant(upstream))
    np.testing.assert_array_equal(y.numpy(), sign(x + shift))
    expected = approx_sign_gradient(x + shift) * upstream
    np.testing.assert_allclose(grad_x.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(grad_shift.numpy(), expected.sum(axis=0), rtol=1e-5)
    assert grad_shift.numpy()[0] != 0.0


def test_reactnet_weights_are_the_bi_real_scaled_sign():
    assert isinstance(MethodRef.parse("reactnet").create().kernel_quantizer(), ChannelScaledSign)


def test_rprelu_is_a_shifted_prelu_per_channel():
    layer = RPReLU()
    x = np.array([[-2.0, 0.0, 1.0], [0.5, -0.5, 3.0]], np.float32)
    layer.build(tf.TensorShape(x.shape))
    np.testing.assert_allclose(layer(x).numpy(), np.where(x >= 0, x, 0.25 * x), rtol=1e-6)  # initial: PReLU(0.25)
    gamma, beta, zeta = [np.array(v, np.float32) for v in ([0.5, -1.0, 0.0], [0.1, 0.2, 0.3], [1.0, 0.0, -2.0])]
    layer.set_weights([gamma, beta, zeta])
    shifted = x - gamma
    np.testing.assert_allclose(layer(x).numpy(), np.where(shifted >= 0, shifted, beta * shifted) + zeta, rtol=1e-6)


def test_reactnet_is_rsign_and_bi_real_weights_on_the_common_hard_tanh_backbone(binarized_models):
    """BiBench's react operator: no RPReLU, the backbone's ReLUs become hard tanh as for every operator."""
    model, bnn = binarized_models["reactnet"], build("bnn")
    assert not any(isinstance(layer, RPReLU) for layer in model.layers)
    activations = [layer.activation.__name__ for layer in model.layers if type(layer) is keras.layers.Activation]
    assert activations == [layer.activation.__name__ for layer in bnn.layers if type(layer) is keras.layers.Activation]
    assert set(activations) == {"hard_tanh"} and len(activations) == 19  # the stem's and two per basic block
    assert all(isinstance(model.get_layer(n).input_quantizer, RSign) for n in binary_layer_names(model))
    assert [type(layer) for layer in model.layers] == [type(layer) for layer in bnn.layers]


def test_reactnet_rprelu_option_replaces_relu_layers_by_rprelu_but_not_embedded_relus():
    model = build("reactnet:rprelu=true")
    assert not any(type(layer) is keras.layers.ReLU for layer in model.layers)
    assert not any(type(layer) is keras.layers.Activation for layer in model.layers)  # no hard tanh layers
    assert sum(isinstance(layer, RPReLU) for layer in model.layers) > 5
    assert all(isinstance(model.get_layer(n).input_quantizer, RSign) for n in binary_layer_names(model))
    rows = {row.name: row for row in count_complexity(model).layers}
    assert all(rows[layer.name].flops > 0 for layer in model.layers if isinstance(layer, RPReLU))
    mlp = build("reactnet:rprelu=true", "mnist1d")  # Dense(activation="relu"): binarize's hard tanh, no RPReLU
    assert not any(isinstance(layer, RPReLU) for layer in mlp.layers)
    assert [layer.activation.__name__ for layer in mlp.layers if isinstance(layer, keras.layers.Dense)] == [
        "hard_tanh",
        "hard_tanh",
        "linear",
    ]


# ---------------------------------------------------------------- ReCU


def test_recu_tau_grows_exponentially_from_0_85_to_0_99():
    assert recu_tau(0.0) == pytest.approx(0.85) and recu_tau(1.0) == pytest.approx(0.99)
    a = 0.14 / (math.e - 1)
    assert recu_tau(0.5) == pytest.approx(a * math.exp(0.5) + 0.85 - a)
    quantizer = ReCUWeightSign()
    quantizer.build(tf.TensorShape(KERNEL.shape))
    quantizer.set_epoch(0, 10)
    assert float(quantizer.tau) == pytest.approx(0.85)
    quantizer.set_epoch(9, 10)
    assert float(quantizer.tau) == pytest.approx(recu_tau(0.9), rel=1e-6)
    assert 0.96 < float(quantizer.tau) < 0.99


def recu_reference(kernel, tau):
    """w1 and Q_tau in NumPy (unbiased variance, as torch.var)."""
    flat = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    w1 = centred / (np.sqrt(centred.var(axis=0, ddof=1) + 1e-5) / (2 * np.sqrt(2)))
    return w1.reshape(kernel.shape), -np.abs(w1).mean() * np.log(2 - 2 * tau)


@pytest.mark.parametrize("epoch", [0, 9])
def test_recu_weights_are_standardised_clamped_at_q_tau_and_signed_with_an_identity_ste(epoch):
    kernel = (0.1 * np.random.default_rng(0).standard_normal((3, 3, 4, 2))).astype(np.float32)
    kernel[0, 0, 0, 1] = 1.0  # an outlier beyond Q_tau; n = 36 weights per output channel
    quantizer = ReCUWeightSign()
    quantizer.build(tf.TensorShape(kernel.shape))
    quantizer.set_epoch(epoch, 10)
    w1, q = recu_reference(kernel, recu_tau(epoch / 10))
    assert float(quantizer.clamp_value(quantizer.standardise(tf.constant(kernel)))) == pytest.approx(q, rel=1e-4)
    np.testing.assert_allclose(quantizer.standardise(tf.constant(kernel)).numpy(), w1, rtol=1e-4, atol=1e-5)
    assert 0 < np.sum(np.abs(w1) > q) < w1.size / 2  # the clamp is active on the tail
    upstream = np.arange(1, kernel.size + 1, dtype=np.float32).reshape(kernel.shape)
    y, grad = value_and_gradient(quantizer, kernel, upstream)
    np.testing.assert_array_equal(y, sign(np.clip(w1, -q, q)).astype(np.float32))
    # Identity STE: the gradient is that of clip(standardise(W), -Q, Q) (Q constant), through mean and std.
    x = tf.constant(kernel)
    with tf.GradientTape() as tape:
        tape.watch(x)
        axes = [0, 1, 2]
        centred = x - tf.reduce_mean(x, axis=axes, keepdims=True)
        std = tf.sqrt(tf.math.reduce_variance(centred, axis=axes, keepdims=True) * 36 / 35 + 1e-5)
        reference = tf.clip_by_value(centred / (std / (2 * np.sqrt(2))), -q, q)
    expected = tape.gradient(reference, x, output_gradients=tf.constant(upstream)).numpy()
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-4)


def test_recu_activations_are_standardised_per_sample_in_training_only_then_approx_sign():
    quantizer = ReCUActivationSign()
    a = np.stack([POINTS, 3 * POINTS[::-1]]).astype(np.float32)  # two samples
    upstream = np.linspace(0.5, 2.0, a.size).astype(np.float32).reshape(a.shape)
    y, grad = value_and_gradient(quantizer, a, upstream, training=False)
    np.testing.assert_array_equal(y, sign(a))
    np.testing.assert_allclose(grad, approx_sign_gradient(a) * upstream, atol=1e-6)
    y, grad = value_and_gradient(quantizer, a, upstream, training=True)
    np.testing.assert_array_equal(y, sign(a))  # a positive divisor keeps the sign
    x = tf.constant(a)
    with tf.GradientTape() as tape:
        tape.watch(x)
        variance = tf.math.reduce_variance(x, axis=1, keepdims=True) * 13 / 12
        reference = larq.quantizers.approx_sign(x / tf.sqrt(variance + 1e-5))
    expected = tape.gradient(reference, x, output_gradients=tf.constant(upstream)).numpy()
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(grad, approx_sign_gradient(a) * upstream)


def test_recu_layers_have_a_channel_alpha_and_no_weight_clip(binarized_models):
    model = binarized_models["recu"]
    for name in binary_layer_names(model):
        layer = model.get_layer(name)
        assert isinstance(layer, ScaledQuantConv2D) and layer.output_scale == "channel"
        assert [tuple(f.shape) for f in layer.scale_factors] == [(layer.output_shape[-1],)]
        assert layer.kernel_constraint is None


# ---------------------------------------------------------------- FDA


def closed_form_fourier_gradient(x, n, omega=0.1):
    """(4 w / pi) sum_{i=0..n} cos((2i+1) w x) = (2 w / pi) sin(2 (n+1) w x) / sin(w x), zero where |x| > 1."""
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(x == 0, 2 * (n + 1), np.sin(2 * (n + 1) * omega * x) / np.sin(omega * x))
    return np.where(np.abs(x) <= 1, 2 * omega / np.pi * ratio, 0.0)


@pytest.mark.parametrize("n", [9, 13, 17, 18])
def test_the_fourier_gradient_matches_its_closed_form(n):
    x = np.concatenate([POINTS, np.linspace(-1, 1, 41, dtype=np.float32)])
    np.testing.assert_allclose(
        fourier_gradient(tf.constant(x), float(n)).numpy(), closed_form_fourier_gradient(x, n), rtol=1e-5, atol=1e-6
    )
    upstream = np.linspace(0.5, 2.0, x.size).astype(np.float32)
    y, grad = value_and_gradient(lambda v: fourier_sign(v, tf.constant(float(n))), x, upstream)
    np.testing.assert_array_equal(y, sign(x))
    np.testing.assert_allclose(grad, closed_form_fourier_gradient(x, n) * upstream, rtol=1e-5, atol=1e-6)
    assert grad[10] != 0.0 and grad[11] == 0.0  # POINTS[10] = 1 passes, POINTS[11] = 1.0001 does not
    assert grad[6] == pytest.approx(4 * 0.1 / np.pi * (n + 1) * upstream[6], rel=1e-5)  # POINTS[6] = 0


def test_fda_schedules_grow_the_terms_9_to_17_and_decay_the_noise_weight_to_zero():
    assert [int(fda_terms(e, 10.0)) for e in range(10)] == [9 + (9 * e) // 10 for e in range(10)]
    assert [int(fda_terms(e, 3.0)) for e in range(3)] == [9, 12, 15]
    weights = [float(fda_noise_weight(float(e), 10.0)) for e in range(10)]
    assert weights[0] == pytest.approx(0.05 * (1 + math.cos(math.pi / 10)))
    assert weights[-1] == pytest.approx(0.0, abs=1e-7)
    assert all(a > b for a, b in zip(weights, weights[1:], strict=False))


def noise_reference(quantizer, vectors):
    hidden = np.maximum(vectors @ quantizer.noise_in.numpy(), 0.0)
    return hidden @ quantizer.noise_out.numpy() + 0.1 * np.sin(vectors)


def test_fda_kernels_are_scaled_signs_plus_the_decaying_noise_in_training_only():
    quantizer = FDAKernelSign()
    quantizer.build(tf.TensorShape(KERNEL.shape))
    assert tuple(quantizer.noise_in.shape) == (4, 1) and tuple(quantizer.noise_out.shape) == (1, 4)  # d = 1*2*2
    quantizer.set_epoch(2, 10)
    alpha = float(fda_noise_weight(2.0, 10.0))
    scale = np.abs(KERNEL).reshape(-1, 3).mean(axis=0)
    y, grad = value_and_gradient(quantizer, KERNEL, training=False)
    np.testing.assert_allclose(y, scale * sign(KERNEL), rtol=1e-6)
    np.testing.assert_allclose(grad, scale * closed_form_fourier_gradient(KERNEL, 10), rtol=1e-5, atol=1e-6)
    y, _ = value_and_gradient(quantizer, KERNEL, training=True)
    noise = noise_reference(quantizer, KERNEL.reshape(-1, 3).T).T.reshape(KERNEL.shape)
    np.testing.assert_allclose(y, scale * (sign(KERNEL) + alpha * noise), rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:
        out = quantizer(tf.constant(KERNEL), training=True)
    assert all(g is not None and np.any(g.numpy()) for g in tape.gradient(out, quantizer.trainable_weights))


def test_fda_activations_add_the_channel_mlp_noise_in_training_only():
    quantizer = FDAActivationSign()
    a = np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype(np.float32)
    quantizer.build(tf.TensorShape(a.shape))
    quantizer.set_epoch(0, 4)
    alpha = 0.05 * (1 + math.cos(math.pi / 4))
    np.testing.assert_array_equal(quantizer(a, training=False).numpy(), sign(a))
    np.testing.assert_allclose(
        quantizer(a, training=True).numpy(), sign(a) + alpha * noise_reference(quantizer, a), rtol=1e-5, atol=1e-6
    )
    quantizer.set_epoch(3, 4)  # alpha = 0 in the last epoch
    np.testing.assert_allclose(quantizer(a, training=True).numpy(), sign(a), atol=1e-7)


# ---------------------------------------------------------------- models, schedules, save/reload


def test_the_fda_noise_mlp_is_trained_but_not_deployed(binarized_models):
    fda = binarized_models["fda"]
    noise = [w for w in fda.trainable_weights if "noise_" in w.name]
    assert noise
    deployed = count_complexity(fda)
    bnn = count_complexity(MethodRef.parse("bnn").create().build(TASKS.get("digits").spec))
    assert (deployed.params, deployed.size_bits) == (bnn.params, bnn.size_bits)


@pytest.mark.parametrize("slug", SLUGS)
def test_inner_convolutions_of_a_binarized_resnet_see_only_plus_minus_one_times_a_positive_scale(
    slug, binarized_models
):
    model = binarized_models[slug]
    names = binary_layer_names(model)
    assert len(names) > 2 and all(isinstance(model.get_layer(n), larq.layers.QuantConv2D) for n in names)
    float_linear = [type(layer) for layer in model.layers if type(layer) in (keras.layers.Conv2D, keras.layers.Dense)]
    assert float_linear == [keras.layers.Conv2D] * 3 + [keras.layers.Dense]  # stem, 2 shortcut projections, logits
    layer = model.get_layer(names[1])
    x = np.random.default_rng(0).standard_normal((4, *model.input_shape[1:])).astype(np.float32)
    activation = keras.Model(model.input, layer.input)(x)
    kernel = layer.kernel_quantizer(tf.convert_to_tensor(layer.kernel)).numpy()
    inputs = layer.input_quantizer(activation).numpy()
    assert set(np.unique(inputs)) <= {-1.0, 1.0}
    per_channel = np.abs(kernel).reshape(-1, kernel.shape[-1])
    np.testing.assert_allclose(per_channel, per_channel[:1].repeat(len(per_channel), 0), rtol=1e-6)
    if slug in ("xnorpp", "recu"):
        assert set(np.unique(kernel)) == {-1.0, 1.0}
    rows = {row.name: row for row in count_complexity(model).layers}
    assert all((rows[n].w_bits, rows[n].a_bits) == (1, 1) for n in names)


@pytest.mark.parametrize("slug", SLUGS)
def test_a_binarized_model_saves_and_reloads_with_its_schedule(slug, binarized_models, tmp_path):
    model = binarized_models[slug]
    set_schedules(model, 3, 7)
    path = tmp_path / f"{slug}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = np.random.default_rng(1).standard_normal((3, *model.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    name = binary_layer_names(model)[1]
    for attribute in ("kernel_quantizer", "input_quantizer"):
        assert type(getattr(reloaded.get_layer(name), attribute)) is type(getattr(model.get_layer(name), attribute))
    progress = [float(m.progress) for m in scheduled_modules(reloaded)]
    assert len(progress) == len(scheduled_modules(model)) and progress == pytest.approx([3 / 7] * len(progress))
    if slug in ("recu", "fda"):
        assert progress  # the scheduled quantizers survive the round trip
    if slug == "fda":
        quantizer = reloaded.get_layer(name).kernel_quantizer
        assert float(quantizer.terms) == 9 + (9 * 3) // 7 and float(quantizer.noise_weight) > 0


@pytest.mark.parametrize("slug", ["recu", "fda"])
def test_the_epoch_schedule_callback_advances_the_quantizers_during_fit(slug):
    model = build(slug, "mnist1d")
    modules = scheduled_modules(model)
    # One binary Dense: ReCU schedules its kernel quantizer, FDA both of its quantizers.
    assert len(modules) == {"recu": 1, "fda": 2}[slug]
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).standard_normal((8, *model.input_shape[1:])).astype(np.float32)
    y = np.arange(8) % 10
    model.fit(x, y, batch_size=4, epochs=3, callbacks=[EpochSchedule(3)], verbose=0)
    assert [(float(m.schedule_epoch), float(m.schedule_epochs)) for m in modules] == [(2.0, 3.0)] * len(modules)
    if slug == "recu":
        assert float(modules[0].tau) == pytest.approx(recu_tau(2 / 3), rel=1e-6)
    else:
        assert [float(m.terms) for m in modules] == [15.0, 15.0]
        assert [float(m.noise_weight) for m in modules] == pytest.approx([0.0, 0.0], abs=1e-7)


def test_recu_runs_through_the_runner_and_reports_its_ratio_to_the_fp32_twin(tmp_path):
    assert_operator_reports_ratio_to_fp32_twin("recu", tmp_path)


def test_every_binarization_operator_deploys_as_its_lce_flatbuffer():
    from effbench.registry import METHODS
    from effbench.track import MeasureContext, Metric
    from tracks import edge

    operators = METHODS.select(suite="binarization")
    assert len(operators) == 19 and {entry.factory.deployment for entry in operators} == {"lce"}
    measured = [Metric("size_bytes", 900, "bytes", "lce"), Metric("size_bytes", 4000, "bytes", "float32")]
    repeated = edge.deployed_metrics(measured, MeasureContext(model=None, deployment="lce"), None)
    expected = [("deployment", "lce", ""), ("size_bytes", 900, "deployed")]
    assert [(m.name, m.value, m.scope) for m in repeated] == expected
