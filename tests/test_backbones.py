"""Specifications of the reference backbones in ``suites/architectures``."""

from __future__ import annotations

import functools
import importlib

import numpy as np
import pytest

from effbench.method import MethodRef
from effbench.registry import METHODS, RegistryError
from effbench.tf import keras
from suites.architectures._layers import Geometry

BACKBONES = ("mlp", "mobilenetv2", "resnet-cifar", "simplenet", "vgg-small")

# Importing our modules directly registers the backbones even when a module of another package
# that the registry walks is broken.
for _module in ("mlp", "mobilenetv2", "resnet_cifar", "simplenet", "vgg_small"):
    importlib.import_module(f"suites.architectures.{_module}")


def architecture_slugs() -> list[str]:
    try:
        return [entry.spec.slug for entry in METHODS.select(suite="architectures")]
    except Exception:  # another package failed to import; ours are registered above
        return list(BACKBONES)


SLUGS = architecture_slugs()

# (input shape, classes) of the tasks every backbone must serve: digits, mnist1d, CIFAR-10/100.
TASK_SHAPES = [((8, 8, 1), 10), ((40,), 10), ((32, 32, 3), 10), ((32, 32, 3), 100)]


# Building dominates the run time, so tests share models; the tests that train one only move its
# weights, which no other test looks at.
@functools.cache
def build(reference: str, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    return MethodRef.parse(reference).create().build(input_shape, num_classes)


def batch(input_shape: tuple[int, ...], num_classes: int, size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(size, *input_shape)).astype("float32")
    return x, rng.integers(0, num_classes, size=size)


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def train_one_step(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    # Eagerly: tracing a train function costs seconds and one step never pays it back.
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    return model.train_on_batch(x, y)


def assert_round_trips(model: keras.Model, x: np.ndarray, path) -> None:
    """Saved as .keras and loaded without custom objects, the model predicts exactly the same."""
    model.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    assert reloaded.name == model.name
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), rtol=1e-6, atol=1e-6)


def test_registry_lists_the_five_backbones():
    assert set(BACKBONES) <= set(SLUGS)


@pytest.mark.parametrize("slug", SLUGS)
@pytest.mark.parametrize("input_shape,num_classes", TASK_SHAPES)
def test_builds_logits_and_trains_for_every_task_shape(slug, input_shape, num_classes):
    model = build(slug, input_shape, num_classes)
    assert model.input_shape == (None, *input_shape)
    assert model.output_shape == (None, num_classes)
    logits = model.layers[-1]
    assert logits.name == "logits" and isinstance(logits, keras.layers.Dense)
    assert logits.get_config()["activation"] == "linear"
    assert model.name.startswith(slug)
    assert np.isfinite(train_one_step(model, *batch(input_shape, num_classes)))


@pytest.mark.parametrize("slug", SLUGS)
def test_trained_model_round_trips_through_keras_file(slug, tmp_path):
    model = build(slug, (40,), 10)
    x, y = batch((40,), 10)
    # A training step moves the batch-norm statistics away from their initial values.
    train_one_step(model, x, y)
    assert_round_trips(model, x, tmp_path / "m.keras")


def test_resnet_shortcut_a_round_trips_without_custom_objects(tmp_path):
    model = build("resnet-cifar:depth=8,shortcut=A,width=0.5", (16, 16, 3), 10)
    assert model.name == "resnet-cifar-depth8-shortcutA-width0.5"
    assert_round_trips(model, batch((16, 16, 3), 10)[0], tmp_path / "m.keras")


# Keras' count_params includes the BN moving mean and variance; the trainable count is the number
# PyTorch and the papers report. Projection shortcuts (B) add two 1x1 convs + BN to ResNet-20:
# 16*32 + 32*64 weights and 2*(32 + 64) BN scales/offsets = 2,752 over option A's 269,722.
PINNED_COUNTS = [
    ("resnet-cifar", (32, 32, 3), 10, 274_042, 272_474),
    ("resnet-cifar:shortcut=A", (32, 32, 3), 10, 271_098, 269_722),
    ("resnet-cifar:depth=56", (32, 32, 3), 10, 860_026, 855_770),
    ("resnet-cifar:depth=56,shortcut=A", (32, 32, 3), 10, 857_082, 853_018),
    ("resnet-cifar:depth=18", (32, 32, 3), 10, 11_183_562, 11_173_962),
    ("vgg-small", (32, 32, 3), 10, 4_663_690, 4_660_106),
    ("simplenet", (32, 32, 3), 10, 5_502_922, 5_493_834),
    ("mlp", (32, 32, 3), 10, 855_050, 855_050),
]


@pytest.mark.parametrize("reference,input_shape,num_classes,total,trainable", PINNED_COUNTS)
def test_parameter_counts_match_the_references(reference, input_shape, num_classes, total, trainable):
    model = build(reference, input_shape, num_classes)
    assert (model.count_params(), trainable_count(model)) == (total, trainable)


@pytest.mark.parametrize("alpha,total", [(0.35, 1_691_208), (1.0, 3_538_984)])
def test_mobilenetv2_matches_keras_applications(alpha, total):
    ours = build(f"mobilenetv2:alpha={alpha}", (224, 224, 3), 1000)
    reference = keras.applications.MobileNetV2(weights=None, alpha=alpha)
    assert ours.count_params() == reference.count_params() == total


def test_model_name_is_slug_with_options():
    assert build("resnet-cifar", (32, 32, 3), 10).name == "resnet-cifar-depth20-shortcutB-width1"
    assert build("vgg-small:width=0.5", (8, 8, 1), 10).name == "vgg-small-width0.5"


def test_width_multiplier_scales_channels():
    half = build("vgg-small:width=0.5", (32, 32, 3), 10)
    convs = [layer.filters for layer in half.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs == [64, 64, 128, 128, 256, 256]


# The conv backbones; the MLPs and their dense drop-ins (snnk, s-kan), the tiny transformer and its variants
# (patch tokens, tested on their own), the LSTMs (lstm, fullsubnet-fast), the set classifier and the cross
# networks have no windows.
NOT_CONV = {"mlp", "embedding-mlp", "tiny-transformer", "macaron", "moe-switch", "lstm", "lcm", "fcn-cross", "snnk",
            "s-kan", "fullsubnet-fast"}  # fmt: skip


@pytest.mark.parametrize("slug", sorted(set(SLUGS) - NOT_CONV))
def test_vector_inputs_use_column_kernels_and_strides(slug):
    model = build(slug, (40,), 10)
    windowed = [layer for layer in model.layers if hasattr(layer, "strides")]
    assert windowed
    for layer in windowed:
        window = getattr(layer, "kernel_size", None) or layer.pool_size
        assert window[1] == 1 and layer.strides[1] == 1, layer.name


@pytest.mark.parametrize(
    "reference,input_shape,num_classes,final_map",
    [("mobilenetv2", (32, 32, 3), 10, 2), ("mobilenetv2:alpha=1.0", (224, 224, 3), 1000, 7)],
)
def test_mobilenetv2_downsamples_small_inputs_less(reference, input_shape, num_classes, final_map):
    model = build(reference, input_shape, num_classes)
    pooled = next(layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))
    assert pooled.input_shape[1:3] == (final_map, final_map)


def test_downsampling_stops_at_two_positions():
    geometry = Geometry((8, 8, 1))
    _, x = geometry.inputs()
    assert geometry.stride(2, x) == (2, 2)
    assert geometry.stride(2, keras.Input((3, 4, 1))) == (1, 2)
    assert geometry.max_pool(keras.Input((2, 2, 1))).shape[1:3] == (2, 2)
    vector = Geometry((40,))
    _, column = vector.inputs()
    assert column.shape[1:] == (40, 1, 1)
    assert vector.kernel(3) == (3, 1) and vector.stride(2, column) == (2, 1)


def test_unknown_option_raises():
    with pytest.raises(RegistryError, match="no option"):
        MethodRef.parse("mobilenetv2:depth=20").create()


@pytest.mark.parametrize("depth", [18.5, 44, 110, 0])
def test_bad_resnet_depth_names_the_allowed_ones(depth):
    with pytest.raises(ValueError, match="8, 18, 20, 32, 56"):
        MethodRef.parse(f"resnet-cifar:depth={depth}").create()


def test_bad_resnet_shortcut_raises():
    with pytest.raises(ValueError, match="shortcut"):
        MethodRef.parse("resnet-cifar:shortcut=C").create()


def test_conv_backbones_reject_other_input_ranks():
    with pytest.raises(ValueError, match="input shape"):
        build("resnet-cifar", (28, 28), 10)


def producers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers whose outputs ``layer`` takes (its first call), in order."""
    return [node.layer for node in layer.inbound_nodes[0].parent_nodes]


def chain(layer: keras.layers.Layer, length: int) -> list[keras.layers.Layer]:
    """``layer`` and the ``length - 1`` layers before it along first inputs, first to last."""
    layers = [layer]
    while len(layers) < length:
        layers.insert(0, producers(layers[0])[0])
    return layers


def test_resnet20_blocks_are_bibench_basic_blocks_with_its_downsample_shortcuts():
    """BiBench's BasicBlock: conv3x3-BN-act-conv3x3-BN, + identity or downsample (1x1 conv + BN), then act."""
    model = build("resnet-cifar", (32, 32, 3), 10)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 9
    projections = []
    for add in adds:
        shortcut, residual = producers(add)
        block = chain(residual, 5)
        assert [type(layer).__name__ for layer in block] == [
            "Conv2D", "BatchNormalization", "ReLU", "Conv2D", "BatchNormalization"
        ]  # fmt: skip
        convs = [block[0], block[3]]
        assert {conv.kernel_size for conv in convs} == {(3, 3)} and not any(conv.use_bias for conv in convs)
        if isinstance(shortcut, keras.layers.BatchNormalization):
            projection = producers(shortcut)[0]
            assert (projection.kernel_size, projection.strides, projection.use_bias) == ((1, 1), (2, 2), False)
            assert producers(projection) == producers(block[0])  # both branches start at the block input
            projections.append(projection)
        else:
            assert isinstance(shortcut, keras.layers.ReLU)  # identity: the previous block's (or the stem's) act
        assert [type(layer) for layer in model.layers if add in producers(layer)] == [keras.layers.ReLU]
    assert len(projections) == 2  # where stages 2 and 3 halve the map and double the width
    stem = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][0]
    assert (stem.filters, stem.kernel_size, stem.strides) == (16, (3, 3), (1, 1))  # no max pool follows


def test_vgg_small_on_digits_skips_the_third_pool_and_classifies_512_x_2_x_2_features():
    model = build("vgg-small", (8, 8, 1), 10)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 2
    assert model.get_layer("logits").kernel.shape == (512 * 2 * 2, 10)
    linear = [type(layer) for layer in model.layers if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)]
    assert linear == [keras.layers.Conv2D] * 6 + [keras.layers.Dense]
