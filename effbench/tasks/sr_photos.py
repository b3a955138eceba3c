"""``sr-photos-x2`` and ``sr-photos-x3``: single-image super-resolution on the real photos the pinned packages ship.

Why: super-resolution networks (ESPCN and the like) need pairs of low- and high-resolution images, and the
standard sets (DIV2K, Set5, Set14) cannot be downloaded here. scikit-image's wheel and scikit-learn bundle
twenty real photographs and textures (:mod:`effbench.tasks._images`); they are split by *whole image*, as
Set5 and Set14 hold their images out: five test images (``TEST_PHOTOS``: a portrait, a cat, a cup of coffee,
a grey camera-man, a flower: people, fur, smooth shading, grey and colour) and fifteen training images.

The protocol is the field's: each high-resolution (HR) image is cropped to a multiple of the scale s and
shrunk by s with bicubic interpolation (Pillow's, antialiased like MATLAB's ``imresize``; the input is
rounded to 8 bits, as a saved low-resolution image is); the model maps a 48/s x 48/s low-resolution patch to
the 48 x 48 HR patch at the same place. Training patches are random aligned crops of the training images
(``TRAIN_PATCHES``, drawn with a fixed seed, more from larger images); the test split tiles every test image
with non-overlapping patches. Quality (the ``accuracy`` track, kind ``super-resolution``): PSNR and SSIM on
the luma Y with s pixels shaved off each border, per test photo (its patches pooled: ``test_groups``) and
averaged over the five, and the same numbers for bicubic upsampling of the input (``Task.reference_outputs``),
the reference row every method must beat. Pixels are in [0, 1]; grey images
are three equal channels.
"""

from __future__ import annotations

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks import _images
from effbench.tasks._generated import cached_arrays
from effbench.tasks._shared import smoke_recipe
from effbench.tasks.base import Splits, Task

TEST_PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "flower")
TRAIN_PHOTOS = (
    "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "retina", "immunohistochemistry",
    "china", "moon", "coins", "text", "page", "cell", "brick", "grass", "gravel",
)  # fmt: skip
HR_PATCH = 48
TRAIN_PATCHES = 5_000
VALIDATION_PATCHES = 500
SEED = 2_2024
VERSION = 1


def degrade(image: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR, LR): the image cropped to a multiple of ``scale``, and its bicubic reduction by ``scale`` (uint8)."""
    height, width = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
    high = np.ascontiguousarray(image[:height, :width])
    return high, _images.resize(high, height // scale, width // scale)


def train_patches(scale: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` aligned (LR, HR) patch pairs from the training photos, photos drawn in proportion to area."""
    rng = np.random.default_rng([seed, scale])
    pairs = [degrade(_images.photo(name), scale) for name in TRAIN_PHOTOS]
    areas = np.array([high.shape[0] * high.shape[1] for high, _ in pairs], np.float64)
    choice = rng.choice(len(pairs), size=count, p=areas / areas.sum())
    low_side = HR_PATCH // scale
    low_patches = np.empty((count, low_side, low_side, 3), np.uint8)
    high_patches = np.empty((count, HR_PATCH, HR_PATCH, 3), np.uint8)
    for index, photo in enumerate(choice):
        high, low = pairs[photo]
        top = rng.integers(0, low.shape[0] - low_side + 1)
        left = rng.integers(0, low.shape[1] - low_side + 1)
        low_patches[index] = low[top:top + low_side, left:left + low_side]
        high_patches[index] = high[top * scale:(top + low_side) * scale, left * scale:(left + low_side) * scale]
    return low_patches, high_patches


def test_patches(scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every test photo tiled with non-overlapping aligned (LR, HR) patches, row by row, and the index in
    ``TEST_PHOTOS`` of the photo each patch is cut from."""
    low_side = HR_PATCH // scale
    lows, highs, photos = [], [], []
    for number, name in enumerate(TEST_PHOTOS):
        high, low = degrade(_images.photo(name), scale)
        for top in range(0, low.shape[0] - low_side + 1, low_side):
            for left in range(0, low.shape[1] - low_side + 1, low_side):
                lows.append(low[top:top + low_side, left:left + low_side])
                highs.append(high[top * scale:(top + low_side) * scale, left * scale:(left + low_side) * scale])
                photos.append(number)
    return np.stack(lows), np.stack(highs), np.array(photos, np.int32)


def generate(scale: int, seed: int = SEED, train: int = TRAIN_PATCHES) -> dict[str, np.ndarray]:
    """uint8 patches: ``x_train`` (LR), ``y_train`` (HR), ``x_test``, ``y_test``."""
    x_train, y_train = train_patches(scale, train, seed)
    x_test, y_test, test_photo = test_patches(scale)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "test_photo": test_photo}


class SrPhotos(Task):
    """LR patches in, HR patches out, both /255; the last ``VALIDATION_PATCHES`` training patches are validation."""

    scale: int
    recipes = {
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=10, batch_size=32),
        # ESPCN's and EDSR's optimizer (Adam 1e-4 for EDSR; ESPCN 1e-3 decayed), shortened to this data's size.
        "paper": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=100, batch_size=16),
    }

    def arrays(self) -> dict[str, np.ndarray]:
        params = {"version": VERSION, "seed": SEED, "train": TRAIN_PATCHES, "scale": self.scale}
        return cached_arrays(f"sr-photos-x{self.scale}", params, lambda: generate(self.scale))

    def load_splits(self) -> Splits:
        data = self.arrays()
        x_train, y_train, x_test, y_test = (
            data[key].astype(np.float32) / np.float32(255) for key in ("x_train", "y_train", "x_test", "y_test")
        )
        cut = len(x_train) - VALIDATION_PATCHES
        return Splits(x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:], x_test, y_test)

    def test_groups(self) -> np.ndarray:
        """The test photo each test patch is cut from: PSNR is computed per photo (see tracks/_quality.py)."""
        return self.arrays()["test_photo"]

    def reference_outputs(self, x: np.ndarray) -> np.ndarray:
        """Bicubic upsampling of the LR inputs (the same filter that made them)."""
        return _images.bicubic_upscale(x, self.scale)


def sr_spec(scale: int) -> TaskSpec:
    low = HR_PATCH // scale
    return TaskSpec(
        slug=f"sr-photos-x{scale}",
        summary=f"super-resolution x{scale}: {low}x{low} -> 48x48 RGB patches of 20 real photos bundled with "
        "scikit-image/scikit-learn, 5 whole photos held out for test; PSNR/SSIM on Y, bicubic reference",
        input_shape=(low, low, 3),
        num_classes=0,
        default_backbone="fcn-small",
        modality="image",
        embedded=True,
        target_accuracy=0.0,
        kind="super-resolution",
        output_shape=(HR_PATCH, HR_PATCH, 3),
    )


@register_task(sr_spec(2))
class SrPhotosX2(SrPhotos):
    scale = 2


@register_task(sr_spec(3))
class SrPhotosX3(SrPhotos):
    scale = 3
