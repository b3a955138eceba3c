"""The operator protocol: which layers become binary, what they compute, and how they are measured."""

import larq
import numpy as np
import pytest

from effbench.registry import METHODS, TASKS, register_method
from effbench.tf import keras, tf
from suites.binarization.operators import OperatorMethod, binarize, binarized_layer_names
from tests.conftest import TOY_PAPER, assert_operator_reports_ratio_to_fp32_twin
from tracks.complexity import count_complexity


def small_float_model() -> keras.Model:
    """Every layer kind the protocol touches: conv, depthwise, dense, ReLU layers and relu arguments."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="inner_conv")(x)
    x = keras.layers.BatchNormalization(name="inner_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="inner_relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", name="depthwise")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_first_and_last_stay_float_and_every_other_conv_or_dense_becomes_a_larq_layer():
    float_model = small_float_model()
    kernel_quantizer = larq.quantizers.SteSign(clip_value=1.0)
    model = binarize(float_model, "ste_sign", kernel_quantizer)
    kinds = {layer.name: type(layer) for layer in model.layers}
    assert kinds["stem"] is keras.layers.Conv2D and kinds["logits"] is keras.layers.Dense
    assert binarized_layer_names(float_model) == ["inner_conv", "depthwise", "hidden"]
    assert kinds["inner_conv"] is larq.layers.QuantConv2D
    assert kinds["depthwise"] is larq.layers.QuantDepthwiseConv2D
    assert kinds["hidden"] is larq.layers.QuantDense
    quantizers = [model.get_layer(n).kernel_quantizer for n in ("inner_conv", "hidden")]
    quantizers.append(model.get_layer("depthwise").depthwise_quantizer)
    assert all(isinstance(q, larq.quantizers.SteSign) and q is not kernel_quantizer for q in quantizers)
    assert len({id(q) for q in quantizers}) == 3  # one quantizer object per layer, none shared
    inputs_quantized = [model.get_layer(n).input_quantizer for n in ("inner_conv", "depthwise", "hidden")]
    assert all(isinstance(q, larq.quantizers.SteSign) for q in inputs_quantized)
    assert model.get_layer("inner_conv").pad_values == 1.0
    assert model.get_layer("hidden").activation is larq.activations.hard_tanh
    assert all(type(model.get_layer(n)) is keras.layers.Activation for n in ("stem_relu", "inner_relu6"))
    for before, after in zip(float_model.weights, model.weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())


def test_inner_convolutions_see_only_plus_minus_one_weights_and_inputs():
    model = binarize(small_float_model(), "ste_sign", "ste_sign")
    layer = model.get_layer("inner_conv")
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    activation = keras.Model(model.input, layer.input)(x)
    binary_kernel = layer.kernel_quantizer(tf.convert_to_tensor(layer.kernel))
    binary_input = layer.input_quantizer(activation)
    assert set(np.unique(binary_kernel)) == {-1.0, 1.0}
    assert set(np.unique(binary_input)) == {-1.0, 1.0}
    # 'same' padding adds +1 borders: the layer equals a valid conv of the one-padded binary input.
    padded = tf.pad(binary_input, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=1.0)
    expected = tf.nn.conv2d(padded, binary_kernel, strides=1, padding="VALID")
    np.testing.assert_allclose(layer(activation), expected, atol=1e-5)


def test_a_binarized_model_saves_and_reloads(tmp_path):
    model = binarize(small_float_model(), "ste_sign", "ste_sign")
    path = tmp_path / "binary.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = np.random.default_rng(1).standard_normal((3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert type(reloaded.get_layer("depthwise")) is larq.layers.QuantDepthwiseConv2D


def test_complexity_counts_binary_layers_at_one_bit():
    report = count_complexity(binarize(small_float_model(), "ste_sign", "ste_sign"))
    rows = {row.name: row for row in report.layers}
    for name in ("inner_conv", "depthwise", "hidden"):
        assert (rows[name].w_bits, rows[name].a_bits) == (1, 1) and rows[name].bops == rows[name].macs
        assert rows[name].size_bits == rows[name].kernel_params + 32 * (rows[name].params - rows[name].kernel_params)
    for name in ("stem", "logits"):
        assert (rows[name].w_bits, rows[name].a_bits) == (32, 32) and rows[name].bops == 1024 * rows[name].macs


def test_layers_without_a_binary_counterpart_and_too_small_models_are_errors():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.Conv2DTranspose(4, 3, name="upsample")(x)
    x = keras.layers.Conv2D(4, 3)(x)
    with pytest.raises(ValueError, match="'upsample' \\(Conv2DTranspose\\) holds a kernel"):
        binarize(keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x))), "ste_sign", "ste_sign")
    two_layers = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))))
    with pytest.raises(ValueError, match="2 conv/dense layer.*nothing would be binarized"):
        binarize(two_layers, "ste_sign", "ste_sign")


@pytest.fixture
def toy_operator():
    @register_method("toy-sign", suite="toys", kind="operator", paper=TOY_PAPER, summary="sign with the STE")
    class ToySign(OperatorMethod):
        def input_quantizer(self):
            return "ste_sign"

        def kernel_quantizer(self):
            return "ste_sign"

    yield ToySign
    METHODS.remove("toy-sign")


def test_the_backbone_option_picks_what_is_binarized_and_is_the_fp32_twin(toy_operator):
    digits = TASKS.get("digits").spec
    default, mlp = toy_operator(), toy_operator(backbone="mlp")
    assert default.fp32_twin(digits.default_backbone) == "resnet-cifar"
    assert mlp.fp32_twin(digits.default_backbone) == "mlp"
    assert [type(layer) for layer in mlp.build(digits).layers if "Dense" in type(layer).__name__] == [
        keras.layers.Dense, larq.layers.QuantDense, keras.layers.Dense
    ]  # fmt: skip


def test_an_operator_runs_through_the_runner_and_reports_its_ratio_to_the_fp32_twin(tmp_path, toy_operator):
    assert_operator_reports_ratio_to_fp32_twin("toy-sign", tmp_path)
