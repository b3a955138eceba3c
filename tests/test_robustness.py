"""The robustness track: corruptions keep images valid, grow with severity, match CIFAR-10-C, repeat."""

import colorsys

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from effbench.registry import TASKS, TaskSpec
from effbench.tasks.base import Splits
from effbench.tf import keras
from effbench.track import MeasureContext
from tracks._corruptions import (
    IMAGE_CORRUPTIONS,
    SEVERITIES,
    VECTOR_CORRUPTIONS,
    VECTOR_NOISE,
    corruptions_for,
    pixelate_size,
)
from tracks.robustness import RobustnessTrack, robustness_metrics

IMAGE_SHAPES = [(8, 8, 1), (8, 8, 3), (28, 28, 1), (32, 32, 3)]
BY_NAME = {corruption.name: corruption for corruption in IMAGE_CORRUPTIONS}


@pytest.fixture(scope="module")
def digits():
    task = TASKS.get("digits").factory()
    return task, task.load()


def white_noise(shape, count=64):
    return np.random.default_rng(0).random((count, *shape), dtype=np.float32)


def mean_squared_change(corruption, x):
    return [float(np.mean((corruption(x, severity) - x) ** 2)) for severity in SEVERITIES]


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_image_corruptions_keep_shape_dtype_and_range(shape):
    x = white_noise(shape, count=8)
    for corruption in IMAGE_CORRUPTIONS:
        for severity in SEVERITIES:
            out = corruption(x, severity)
            assert out.shape == x.shape and out.dtype == np.float32, (corruption.name, severity)
            assert out.min() >= 0.0 and out.max() <= 1.0, (corruption.name, severity)


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_every_image_corruption_grows_with_severity(shape):
    # White noise measures the corruption itself, independent of what an image shows.
    x = white_noise(shape)
    for corruption in IMAGE_CORRUPTIONS:
        change = mean_squared_change(corruption, x)
        assert change[0] > 0 and np.all(np.diff(change) > 0), (corruption.name, change)


def test_corruptions_grow_with_severity_on_digits(digits):
    x = digits[1].x_test
    for corruption in IMAGE_CORRUPTIONS:
        change = mean_squared_change(corruption, x)
        if corruption.name == "pixelate":
            # On 8 px which columns merge depends on the cell grid: 6 cells merge stroke columns
            # (1-2, 4-5), 5 cells the blank borders (0-1, 6-7), so only the ends are ordered.
            assert 0 < change[0] < change[-1], change
        else:
            assert change[0] > 0 and np.all(np.diff(change) > 0), (corruption.name, change)


def test_same_inputs_give_identical_corruptions():
    x = white_noise((8, 8, 3), count=16)
    for corruption in (*IMAGE_CORRUPTIONS, *VECTOR_CORRUPTIONS):
        first = corruption(x, 3)
        np.random.seed(123)  # the global state and other corruptions in between must not matter
        IMAGE_CORRUPTIONS[0](x, 5)
        np.testing.assert_array_equal(first, corruption(x, 3), err_msg=corruption.name)


def test_blur_is_cifar10c_on_32_pixels():
    x = white_noise((32, 32, 3), count=4)
    for severity, sigma in zip(SEVERITIES, BY_NAME["gaussian_blur"].params, strict=True):
        # skimage.filters.gaussian as make_cifar_c.py calls it: edge mode "nearest", 4 sigma.
        expected = gaussian_filter(x, (0, sigma, sigma, 0), mode="nearest", truncate=4.0)
        np.testing.assert_allclose(BY_NAME["gaussian_blur"](x, severity), expected, atol=1e-6)


@pytest.mark.parametrize("side", [8, 28, 32])
def test_pixelate_is_pil_box_down_and_up(side):
    x = white_noise((side, side, 1), count=4)
    for severity, keep in zip(SEVERITIES, BY_NAME["pixelate"].params, strict=True):
        small = pixelate_size(side, keep)
        expected = [
            np.asarray(Image.fromarray(image[..., 0]).resize((small, small), Image.Resampling.BOX)
                       .resize((side, side), Image.Resampling.BOX))
            for image in x
        ]
        np.testing.assert_allclose(BY_NAME["pixelate"](x, severity)[..., 0], expected, atol=1e-6)


def test_pixelate_sizes_are_distinct_on_small_images():
    keep = BY_NAME["pixelate"].params
    assert [pixelate_size(8, c) for c in keep] == [7, 6, 5, 4, 3]
    assert [pixelate_size(28, c) for c in keep] == [26, 25, 23, 21, 18]
    assert [pixelate_size(32, c) for c in keep] == [30, 28, 27, 24, 20]  # CIFAR-10-C's int(32 c)
    for side in range(8, 33):
        sizes = [pixelate_size(side, c) for c in keep]
        assert np.all(np.diff(sizes) < 0), (side, sizes)
        if side >= 14:
            assert sizes == [int(side * c) for c in keep], side


def test_brightness_shifts_hsv_value():
    x = white_noise((4, 4, 3), count=2)
    x[0, 0, 0] = 0.0  # a black pixel turns grey
    shift = BY_NAME["brightness"].params[2]
    out = BY_NAME["brightness"](x, 3)
    for pixel, result in zip(x.reshape(-1, 3), out.reshape(-1, 3), strict=True):
        hue, saturation, value = colorsys.rgb_to_hsv(*pixel)
        expected = colorsys.hsv_to_rgb(hue, saturation, min(value + shift, 1.0))
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_vector_tasks_get_unclipped_noise_scaled_to_the_data():
    assert [c.name for c in corruptions_for("vector")] == ["gaussian_noise", "uniform_noise"]
    x = (3.0 * np.random.default_rng(1).standard_normal((2000, 40))).astype(np.float32)
    for corruption in VECTOR_CORRUPTIONS:
        for severity, level in zip(SEVERITIES, VECTOR_NOISE, strict=True):
            noise = corruption(x, severity) - x
            assert noise.dtype == np.float32
            assert noise.std() == pytest.approx(level * x.std(), rel=0.02), (corruption.name, severity)
    uniform = VECTOR_CORRUPTIONS[1](x, 5) - x
    assert np.abs(uniform).max() <= np.sqrt(3) * VECTOR_NOISE[-1] * x.std() * (1 + 1e-5)
    assert VECTOR_CORRUPTIONS[0](x, 1).min() < -1.0  # standardized signals are never clipped


def test_unknown_modality_and_severity_are_errors():
    with pytest.raises(ValueError, match="modality"):
        corruptions_for("audio")
    with pytest.raises(ValueError, match="severity"):
        IMAGE_CORRUPTIONS[0](white_noise((8, 8, 1), count=1), 6)


def test_metrics_by_hand():
    corrupted = {"a": [0.8, 0.6, 0.4, 0.2, 0.0], "b": [1.0, 1.0, 1.0, 1.0, 1.0]}
    metrics = {(m.name, m.scope): m.value for m in robustness_metrics(0.8, corrupted)}
    assert metrics[("mean_corruption_top1", "")] == pytest.approx(0.7)
    assert metrics[("relative_drop", "")] == pytest.approx((0.8 - 0.7) / 0.8)
    assert metrics[("corruption_top1", "a")] == pytest.approx(0.4)
    assert metrics[("top1", "a/s2")] == 0.6
    assert robustness_metrics(0.0, {"a": [0.0] * 5})[2].value == 0.0


def constant_model(input_shape, num_classes, answer):
    """Always predicts ``answer``, so no corruption can change its accuracy."""
    inputs = keras.Input(input_shape)
    bias = np.eye(num_classes)[answer]
    outputs = keras.layers.Dense(num_classes, kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant(bias))(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def test_track_on_digits(digits):
    task, splits = digits
    model = constant_model(task.spec.input_shape, task.spec.num_classes, answer=3)
    metrics = RobustnessTrack().measure(MeasureContext(model=model, task=task, splits=splits))
    assert all(m.unit == "ratio" for m in metrics)
    by_key = {(m.name, m.scope): m.value for m in metrics}
    assert len(by_key) == len(metrics) == 3 + 7 * (1 + len(SEVERITIES))
    clean = float(np.mean(splits.y_test == 3))
    assert by_key[("clean_top1", "")] == pytest.approx(clean)
    per_severity = [v for (name, scope), v in by_key.items() if name == "top1"]
    assert per_severity == pytest.approx([clean] * 35)
    assert by_key[("mean_corruption_top1", "")] == pytest.approx(clean)
    assert by_key[("relative_drop", "")] == pytest.approx(0.0, abs=1e-12)
    assert {scope for name, scope in by_key if name == "corruption_top1"} == set(BY_NAME)
    assert ("top1", "pixelate/s5") in by_key


def test_track_on_a_vector_task_with_a_trained_model():
    class VectorTask:
        spec = TaskSpec("toy-vector", "toy", (6,), 2, "mlp", "vector", True, 0.5)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    kernel = np.zeros((6, 2), dtype=np.float32)
    kernel[0] = [-5.0, 5.0]  # class 1 exactly when x_0 > 0: perfect on clean data
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    model.set_weights([kernel, np.zeros(2, dtype=np.float32)])
    splits = Splits(x, y, x, y, x, y)
    metrics = RobustnessTrack().measure(MeasureContext(model=model, task=VectorTask(), splits=splits))
    by_key = {(m.name, m.scope): m.value for m in metrics}
    assert by_key[("clean_top1", "")] == 1.0
    means = [v for (name, _), v in by_key.items() if name == "corruption_top1"]
    assert by_key[("mean_corruption_top1", "")] == pytest.approx(np.mean(means))
    assert by_key[("relative_drop", "")] == pytest.approx(1.0 - by_key[("mean_corruption_top1", "")])
    assert 0.0 < by_key[("relative_drop", "")] < 0.5  # noise flips the examples near the boundary
    assert {scope for name, scope in by_key if name == "corruption_top1"} == {"gaussian_noise", "uniform_noise"}


def test_track_needs_a_task():
    model = constant_model((8, 8, 1), 10, answer=0)
    with pytest.raises(ValueError, match="needs a task"):
        RobustnessTrack().measure(MeasureContext(model=model))
