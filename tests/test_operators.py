"""The operator protocol: which layers become binary, what they compute, and how they are measured."""

import re
from pathlib import Path

import larq
import numpy as np
import pytest

from effbench.config import TrainingConfig
from effbench.method import Artifact, MethodRef
from effbench.protocol import division_of
from effbench.recipe import Recipe
from effbench.records import ResultStore
from effbench.registry import METHODS, TASKS, load_builtin_entries, register_method
from effbench.tf import keras, tf
from effbench.training import TrainContext
from suites.binarization.operators import OperatorMethod, binarize, binarized_layer_names, shortcut_projection_names
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
    [record] = [record for record in ResultStore(tmp_path).records() if record.method == "toy-sign"]
    twin = TrainingConfig(MethodRef("resnet-cifar"), "digits", 0, "smoke").hash
    assert record.config["upstream"] == {"trained": twin, "twin": twin}  # started from the twin's training


# ---------------------------------------------------------------- BiBench's protocol: start, shortcuts, divisions


def test_shortcut_projections_stay_float_as_bibench_downsample_convs():
    """BiBench binarizes the two 3x3 convs of each basic block; ``downsample_conv_cfg=None`` keeps the 1x1 float."""
    digits = TASKS.get("digits").spec
    float_model = MethodRef.parse("resnet-cifar").create().build(digits.input_shape, digits.num_classes)
    projections = shortcut_projection_names(float_model)
    assert len(projections) == 2  # stages 2 and 3 double the width and halve the map
    assert {float_model.get_layer(name).kernel_size for name in projections} == {(1, 1)}
    model = binarize(float_model, "ste_sign", "ste_sign")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    binary = [layer for layer in convs if isinstance(layer, larq.layers.QuantConv2D)]
    assert [layer.kernel_size for layer in binary] == [(3, 3)] * 18  # 9 basic blocks x 2
    assert sorted(layer.name for layer in convs if layer not in binary) == sorted([convs[0].name, *projections])
    # The conv ending a residual branch is binarized, and so is a block's first conv: only the shortcut is kept.
    assert projections.isdisjoint(binarized_layer_names(float_model))


@pytest.mark.parametrize("reference", ["resnet-cifar:shortcut=A", "mobilenetv2", "vgg-small", "mlp"])
def test_identity_shortcuts_and_residual_branch_projections_are_not_shortcut_projections(reference):
    """MobileNetV2's 1x1 linear bottleneck ends a residual branch; it is binarized like any inner conv."""
    digits = TASKS.get("digits").spec
    float_model = MethodRef.parse(reference).create().build(digits.input_shape, digits.num_classes)
    assert shortcut_projection_names(float_model) == set()


def test_a_saved_and_reloaded_backbone_keeps_its_shortcut_projections_float(tmp_path):
    digits = TASKS.get("digits").spec
    float_model = MethodRef.parse("resnet-cifar:depth=8").create().build(digits.input_shape, digits.num_classes)
    float_model.save(tmp_path / "twin.keras")
    reloaded = keras.models.load_model(tmp_path / "twin.keras")
    assert shortcut_projection_names(reloaded) == shortcut_projection_names(float_model) != set()


def test_an_operator_starts_from_its_backbones_training_unless_init_is_scratch(toy_operator):
    digits = TASKS.get("digits").spec
    assert toy_operator().requires(digits) == {"trained": MethodRef("resnet-cifar")}
    assert toy_operator(backbone="vgg-small").requires(digits) == {"trained": MethodRef("vgg-small")}
    assert toy_operator(init="scratch").requires(digits) == {}
    with pytest.raises(ValueError, match="option init of 'toy-sign' is 'pretrained'; expected one of trained, scratch"):
        toy_operator(init="pretrained")
    # The trained start is the FP32 twin's own training: one training, shared.
    assert toy_operator().upstream(digits) == {"trained": MethodRef("resnet-cifar"), "twin": MethodRef("resnet-cifar")}


def test_the_trained_start_fine_tunes_and_the_scratch_start_trains_with_the_tasks_recipe(toy_operator):
    digits = TASKS.get("digits").factory
    finetune = Recipe(optimizer="sgd", learning_rate=1e-2, epochs=1, max_train_samples=64)
    digits.finetune_recipes = {"smoke": finetune}
    try:
        trained = TrainingConfig(MethodRef("toy-sign"), "digits", 0, "smoke")
        scratch = TrainingConfig(MethodRef.parse("toy-sign:init=scratch"), "digits", 0, "smoke")
        assert trained.recipe() == finetune and scratch.recipe() == digits().recipe("smoke")
        assert set(trained.as_dict()["upstream"]) == {"trained", "twin"} and set(scratch.as_dict()["upstream"]) == {
            "twin"
        }
    finally:
        del digits.finetune_recipes


def test_the_binarized_start_carries_the_trained_twins_weights_over(toy_operator):
    task = TASKS.get("digits").factory()
    twin = MethodRef.parse("resnet-cifar:depth=8").create().build(task.spec.input_shape, task.spec.num_classes)
    rng = np.random.default_rng(0)
    for weight in twin.weights:  # "trained": anything but the initialisation
        weight.assign(rng.uniform(-0.5, 0.5, weight.shape).astype(np.float32))
    context = TrainContext(task, splits=None, recipe=None, seed=0, budget="smoke", upstream={"trained": Artifact(twin)})
    model = toy_operator(backbone="resnet-cifar:depth=8").initial_model(context)
    binary = set(binarized_layer_names(twin))
    assert {layer.name for layer in model.layers if isinstance(layer, larq.layers.QuantConv2D)} == binary
    for layer in twin.layers:
        for before, after in zip(layer.weights, model.get_layer(layer.name).weights, strict=True):
            np.testing.assert_array_equal(before.numpy(), after.numpy())
    fresh = toy_operator(backbone="resnet-cifar:depth=8", init="scratch").initial_model(context)
    kernels = [[layer.kernel.numpy() for layer in m.layers if hasattr(layer, "kernel")] for m in (model, fresh)]
    assert [k.shape for k in kernels[0]] == [k.shape for k in kernels[1]]
    assert not any(np.array_equal(trained, initial) for trained, initial in zip(*kernels, strict=True))


DIVISIONS = {
    "bnn": "closed",
    "bnn:backbone=vgg-small": "closed",  # BiBench's second CNN backbone
    "bnn:backbone=resnet-cifar": "closed",
    "bnn:backbone=resnet-cifar:depth=56": "open",  # a backbone the protocol does not fix
    "bnn:backbone=mlp": "open",
    "bnn:init=scratch": "open",  # not BiBench's start
    "bnn:init=trained": "closed",  # the default, written out
    "reactnet": "closed",
    "reactnet:rprelu=true": "open",  # RPReLU is an architecture change
    "reactnet:backbone=vgg-small,rprelu=false": "closed",
    "pb-partial:backbone=vgg-small": "open",  # compressions stay open on every backbone
    "mst:backbone=vgg-small": "open",
}


@pytest.mark.parametrize(("reference", "division"), DIVISIONS.items())
def test_the_closed_division_takes_the_protocol_backbones_and_start_only(reference, division):
    assert division_of(MethodRef.parse(reference)) == division


def test_the_binarization_sweep_runs_every_cnn_method_on_vgg_small_in_the_closed_division_where_it_is_an_operator():
    """The Makefile's second backbone sweep: every method that binarizes the task's backbone, and no other."""
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    listed = re.search(r"^BINARIZATION_CNN_METHODS := ((?:.*\\\n)*.*)$", makefile, re.MULTILINE).group(1)
    swept = listed.replace("\\\n", " ").split()
    load_builtin_entries()
    suite = [entry for entry in METHODS.select(suite="binarization")]
    on_task_backbone = sorted(e.spec.slug for e in suite if e.factory.default_options.get("backbone", "") is None)
    assert sorted(swept) == on_task_backbone and len(swept) == 15
    assert "$(addsuffix :backbone=vgg-small,$(BINARIZATION_CNN_METHODS)) --task digits" in makefile
    for slug in swept:
        expected = "closed" if METHODS.get(slug).spec.kind == "operator" else "open"
        assert division_of(MethodRef.parse(f"{slug}:backbone=vgg-small")) == expected


def test_vgg_small_is_binarized_between_its_float_first_conv_and_classifier(toy_operator):
    digits = TASKS.get("digits").spec
    method = toy_operator(backbone="vgg-small")
    model = method.build(digits)
    kinds = [type(layer) for layer in model.layers if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)]
    assert kinds == [keras.layers.Conv2D, *[larq.layers.QuantConv2D] * 5, keras.layers.Dense]
    assert method.fp32_twin(digits.default_backbone) == "vgg-small"
    # On 8x8: float 3*3*1*128*64 + 2048*10 MACs; binary 9*(128*128*64 + (128*256 + 256*256)*16 + (256*512 +
    # 512*512)*4) = 37,748,736 MACs at 1/64 OP each.
    report = count_complexity(model)
    assert report.macs == 73_728 + 20_480 + 37_748_736
    assert report.ops == 73_728 + 20_480 + 37_748_736 / 64 == 684_032
