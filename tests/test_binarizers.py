"""The binarization suite's operators: forward values, pseudo-gradients, binarized models, save/reload, runner."""

import larq
import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.registry import METHODS, TASKS, load_builtin_entries
from effbench.tf import keras, tf
from suites.binarization._quantizers import ChannelScaledSign, SampleScaledSign
from tests.conftest import (
    assert_operator_reports_ratio_to_fp32_twin,
    assert_saves_and_reloads,
    binary_layer_names,
    value_and_gradient,
)
from tracks.complexity import count_complexity

load_builtin_entries()

SLUGS = ("bnn", "xnor", "dorefa", "bireal")
# Boundary points: 0 (sign(0) = +1), |x| = 1 (the STE still passes), just beyond, and the ApproxSign kinks.
POINTS = np.array([-2.0, -1.0001, -1.0, -0.75, -0.5, -1e-7, 0.0, 1e-7, 0.25, 0.5, 1.0, 1.0001, 3.0], np.float32)


def sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def ste(x):
    return (np.abs(x) <= 1).astype(np.float32)


def approx_sign_gradient(x):
    return np.where((x >= -1) & (x < 0), 2 + 2 * x, np.where((x >= 0) & (x < 1), 2 - 2 * x, 0.0)).astype(np.float32)


def bibench_binary_operand(x, scale_axes):
    """BiBench's binary operand and its gradient (``XNORConv2d``, ``DoReFaConv2d``, ``BiRealConv2d``), transcribed:

        binary = scale.detach() * torch.sign(x)
        out = binary.detach() - torch.clamp(x, -1, 1).detach() + torch.clamp(x, -1, 1)

    with scale = mean|x| over ``scale_axes``. Returns (out, d out / d x) for an upstream gradient of ones.
    torch.sign(0) is 0; larq's sign, used here, gives +1 there (what Larq Compute Engine computes).
    """
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scale = tf.reduce_mean(tf.abs(x), axis=scale_axes, keepdims=True)
        binary = tf.stop_gradient(scale) * tf.sign(x)
        clipped = tf.clip_by_value(x, -1.0, 1.0)
        out = tf.stop_gradient(binary) - tf.stop_gradient(clipped) + clipped
    return out.numpy(), tape.gradient(out, x).numpy()


def quantizers_of(slug):
    method = MethodRef.parse(slug).create()
    return method.input_quantizer(), method.kernel_quantizer()


# BiBench's eight operators: registered as 1-bit operators of the suite, with 1-bit quantizers.
BIBENCH_OPERATORS = (*SLUGS, "xnorpp", "reactnet", "recu", "fda")


def test_the_bibench_operators_are_registered_in_the_binarization_suite_at_one_bit():
    for slug in BIBENCH_OPERATORS:
        spec = METHODS.get(slug).spec
        assert (spec.suite, spec.kind) == ("binarization", "operator")
        assert (spec.taxonomy.weight_bits, spec.taxonomy.activation_bits) == (1, 1)
        assert spec.paper.url.startswith("https://arxiv.org/abs/")
        assert all(q.precision == 1 for q in quantizers_of(slug))


@pytest.mark.parametrize("slug", ["bnn", "dorefa"])
def test_clipped_ste_sign_matches_the_formula_and_larq_ste_sign(slug):
    input_quantizer, _ = quantizers_of(slug)
    upstream = np.linspace(0.5, 2.0, POINTS.size).astype(np.float32)
    y, grad = value_and_gradient(input_quantizer, POINTS, upstream)
    np.testing.assert_array_equal(y, sign(POINTS))
    np.testing.assert_array_equal(grad, ste(POINTS) * upstream)
    y_larq, grad_larq = value_and_gradient(larq.quantizers.SteSign(clip_value=1.0), POINTS, upstream)
    np.testing.assert_array_equal(y, y_larq)
    np.testing.assert_array_equal(grad, grad_larq)


def test_bnn_kernels_are_plain_signs_with_the_clipped_ste():
    _, kernel_quantizer = quantizers_of("bnn")
    y, grad = value_and_gradient(kernel_quantizer, POINTS.reshape(13, 1))
    np.testing.assert_array_equal(y, sign(POINTS).reshape(13, 1))
    np.testing.assert_array_equal(grad, ste(POINTS).reshape(13, 1))


def test_bireal_activations_use_approx_sign_and_match_larq():
    input_quantizer, _ = quantizers_of("bireal")
    y, grad = value_and_gradient(input_quantizer, POINTS)
    np.testing.assert_array_equal(y, sign(POINTS))
    np.testing.assert_allclose(grad, approx_sign_gradient(POINTS), atol=1e-6)
    assert grad[POINTS == 0.0] == pytest.approx(2.0) and grad[POINTS == -0.5] == pytest.approx(1.0)
    assert grad[POINTS == 1.0] == 0.0 and grad[POINTS == -1.0] == 0.0
    y_larq, grad_larq = value_and_gradient(larq.quantizers.ApproxSign(), POINTS)
    np.testing.assert_array_equal(y, y_larq)
    np.testing.assert_array_equal(grad, grad_larq)


# A (kh=1, kw=2, cin=2, cout=3) kernel: output channel c holds kernel[..., c].
KERNEL = np.array([[[[0.5, -1.0, 0.0], [-0.25, 2.0, -0.1]], [[1.0, -1.5, 0.3], [-0.75, 0.5, -0.2]]]], np.float32)


@pytest.mark.parametrize("slug", ["xnor", "dorefa", "bireal", "reactnet"])
def test_kernels_are_per_output_channel_mean_abs_times_sign_with_bibench_unscaled_clipped_ste(slug):
    _, kernel_quantizer = quantizers_of(slug)
    assert isinstance(kernel_quantizer, ChannelScaledSign)
    alpha = np.abs(KERNEL).reshape(-1, 3).mean(axis=0)  # [0.625, 1.25, 0.15]
    np.testing.assert_allclose(alpha, [0.625, 1.25, 0.15], rtol=1e-6)
    upstream = np.arange(1, KERNEL.size + 1, dtype=np.float32).reshape(KERNEL.shape)
    y, grad = value_and_gradient(kernel_quantizer, KERNEL, upstream)
    np.testing.assert_allclose(y, alpha * sign(KERNEL), rtol=1e-6)
    assert y[0, 0, 0, 2] == pytest.approx(0.15)  # sign(0) = +1
    # BiBench's detach trick: the gradient is that of clamp(W, -1, 1), 1[|W| <= 1] * upstream, without alpha.
    np.testing.assert_array_equal(grad, ste(KERNEL) * upstream)
    assert grad[0, 1, 0, 0] == upstream[0, 1, 0, 0]  # |W| = 1 passes, unscaled (alpha_0 = 0.625)
    assert grad[0, 0, 1, 1] == 0.0  # |W| = 2 does not
    reference, reference_grad = bibench_binary_operand(KERNEL, scale_axes=[0, 1, 2])
    np.testing.assert_array_equal(grad, reference_grad * upstream)
    nonzero = KERNEL != 0
    np.testing.assert_allclose(y[nonzero], reference[nonzero], rtol=1e-6)


def test_dense_kernels_are_scaled_per_output_unit():
    kernel = np.array([[0.5, -2.0], [-1.5, 0.0]], np.float32)
    y, grad = value_and_gradient(ChannelScaledSign(), kernel)
    np.testing.assert_allclose(y, [[1.0, -1.0], [-1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(grad, [[1.0, 0.0], [0.0, 1.0]], rtol=1e-6)


def test_xnor_activations_are_per_sample_mean_abs_times_sign_with_bibench_unscaled_clipped_ste():
    input_quantizer, _ = quantizers_of("xnor")
    assert isinstance(input_quantizer, SampleScaledSign)
    # Two samples of shape (H=1, W=2, C=2).
    a = np.array([[[[0.0, -1.0], [2.0, -0.5]]], [[[0.2, 0.2], [-0.2, -1.4]]]], np.float32)
    beta = np.array([0.875, 0.5], np.float32).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(np.abs(a).mean(axis=(1, 2, 3)).reshape(2, 1, 1, 1), beta, rtol=1e-6)
    upstream = np.arange(1, a.size + 1, dtype=np.float32).reshape(a.shape)
    y, grad = value_and_gradient(input_quantizer, a, upstream)
    np.testing.assert_allclose(y, beta * sign(a), rtol=1e-6)
    assert y[0, 0, 0, 0] == pytest.approx(0.875)  # sign(0) = +1
    np.testing.assert_array_equal(grad, ste(a) * upstream)
    assert grad[0, 0, 0, 1] == 2.0  # |a| = 1 passes, unscaled (beta_0 = 0.875)
    assert grad[0, 0, 1, 0] == 0.0 and grad[1, 0, 1, 1] == 0.0  # |a| > 1 does not
    reference, reference_grad = bibench_binary_operand(a, scale_axes=[1, 2, 3])  # XNORConv2d's input
    np.testing.assert_array_equal(grad, reference_grad * upstream)
    nonzero = a != 0
    np.testing.assert_allclose(y[nonzero], reference[nonzero], rtol=1e-6)


@pytest.fixture(scope="module")
def binarized_models():
    digits = TASKS.get("digits").spec
    return {slug: MethodRef.parse(slug).create().build(digits) for slug in SLUGS}


@pytest.mark.parametrize("slug", SLUGS)
def test_inner_convolutions_of_a_binarized_resnet_see_only_scaled_plus_minus_one(slug, binarized_models):
    model = binarized_models[slug]
    names = binary_layer_names(model)
    assert len(names) > 2 and all(isinstance(model.get_layer(n), larq.layers.QuantConv2D) for n in names)
    float_linear = [type(layer) for layer in model.layers if type(layer) in (keras.layers.Conv2D, keras.layers.Dense)]
    # The stem, the two 1x1 shortcut projections (BiBench's float downsample) and the classifier stay float.
    assert float_linear == [keras.layers.Conv2D] * 3 + [keras.layers.Dense]
    layer = model.get_layer(names[1])
    x = np.random.default_rng(0).standard_normal((4, *model.input_shape[1:])).astype(np.float32)
    activation = keras.Model(model.input, layer.input)(x)
    kernel = layer.kernel_quantizer(tf.convert_to_tensor(layer.kernel)).numpy()
    inputs = layer.input_quantizer(activation).numpy()
    np.testing.assert_array_equal(np.sign(kernel), sign(layer.kernel.numpy()))
    np.testing.assert_array_equal(np.sign(inputs), sign(activation.numpy()))
    per_channel = np.abs(kernel).reshape(-1, kernel.shape[-1])
    per_sample = np.abs(inputs).reshape(inputs.shape[0], -1)
    np.testing.assert_allclose(per_channel, per_channel[:1].repeat(len(per_channel), 0), rtol=1e-6)
    np.testing.assert_allclose(per_sample, per_sample[:, :1].repeat(per_sample.shape[1], 1), rtol=1e-6)
    if slug == "bnn":
        assert set(np.unique(kernel)) == {-1.0, 1.0}
    if slug != "xnor":
        assert set(np.unique(inputs)) <= {-1.0, 1.0}
    rows = {row.name: row for row in count_complexity(model).layers}
    assert all((rows[n].w_bits, rows[n].a_bits) == (1, 1) for n in names)


@pytest.mark.parametrize("slug", SLUGS)
def test_a_binarized_model_saves_and_reloads(slug, binarized_models, tmp_path):
    model = binarized_models[slug]
    reloaded = assert_saves_and_reloads(model, tmp_path / f"{slug}.keras")
    name = binary_layer_names(model)[1]
    expected = type(model.get_layer(name).kernel_quantizer), type(model.get_layer(name).input_quantizer)
    got = type(reloaded.get_layer(name).kernel_quantizer), type(reloaded.get_layer(name).input_quantizer)
    assert got == expected


def test_xnor_runs_through_the_runner_and_reports_its_ratio_to_the_fp32_twin(tmp_path):
    assert_operator_reports_ratio_to_fp32_twin("xnor", tmp_path)
