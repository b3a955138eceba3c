"""``texture-patches``: which real texture a 32x32 grey patch was cut from (brick, grass or gravel).

Why: every other offline image task draws its images; this one is real pixels. scikit-image's wheel ships
three 512x512 grey photographs of textures (:mod:`effbench.tasks._images`), and a patch of one is
classified by its texture: a small, real-data check of what a backbone (and its compressed copies) keeps
of fine texture statistics, which is what compression tends to lose first.

Each patch is a square crop of side ``s`` drawn uniformly from 24 to 48 pixels (a scale jitter of 2x),
resized to 32x32 with Pillow's box filter, turned by a multiple of 90 degrees, mirrored half the time,
and given a random contrast (gain 0.6 to 1.4 about the patch's mean) and brightness (shift -0.15 to
0.15), then clipped to [0, 1]. Test patches are cut from the bottom quarter of each photograph
(rows 384 to 511), train patches from rows 0 to 367, so that no test pixel was ever seen in training:
whole regions are held out, as whole images are in ``sr-photos``. Classes are balanced; 3,000 train and
900 test patches, generated with a fixed seed per (split, class) and cached as uint8.
"""

from __future__ import annotations

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks import _images
from effbench.tasks._generated import cached_drawn_splits
from effbench.tasks._shared import smoke_recipe, splits_from_train_test
from effbench.tasks.base import Splits, Task

CLASSES = _images.TEXTURES
SIDE = 32
CROP_SIDES = (24, 48)
# Rows of each photograph that train (split 0) and test (split 1) patches come from; the 16 rows between
# them keep a train crop from touching a test one.
SPLIT_ROWS = ((0, 368), (384, 512))
SEED = 3_2026
TRAIN_PATCHES, TEST_PATCHES = 3_000, 900
# Bump when the generator's output changes, so caches of the old version are not reused.
VERSION = 1


def texture_photo(name: str) -> np.ndarray:
    """The texture photograph as float32 grey values in [0, 1], (H, W)."""
    return _images.photo(name)[..., 0].astype(np.float32) * np.float32(1 / 255)


def texture_patches(seed: int, split: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 patches (count, 32, 32, 1), balanced over the classes, and their int32 labels."""
    patches, labels = [], []
    for label, name in enumerate(CLASSES):
        rng = np.random.default_rng([seed, split, label])
        share = count // len(CLASSES) + (label < count % len(CLASSES))
        patches.append(draw_patches(rng, texture_photo(name), SPLIT_ROWS[split], share))
        labels.append(np.full(share, label, np.int32))
    order = np.random.default_rng([seed, split]).permutation(count)
    return np.concatenate(patches)[order], np.concatenate(labels)[order]


def draw_patches(rng: np.random.Generator, photo: np.ndarray, rows: tuple[int, int], count: int) -> np.ndarray:
    """``count`` jittered 32x32 patches of ``photo`` from within ``rows``, as uint8 (count, 32, 32, 1)."""
    out = np.empty((count, SIDE, SIDE, 1), np.uint8)
    first, end = rows
    for index in range(count):
        side = int(rng.integers(CROP_SIDES[0], CROP_SIDES[1] + 1))
        top = int(rng.integers(first, end - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = photo[top:top + side, left:left + side]
        grey = np.repeat(np.round(crop * 255).astype(np.uint8)[..., None], 3, axis=2)
        patch = _images.resize(grey, SIDE, SIDE, box=True)[..., 0].astype(np.float32) / 255
        patch = np.rot90(patch, int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        gain, shift = rng.uniform(0.6, 1.4), rng.uniform(-0.15, 0.15)
        patch = (patch - patch.mean()) * gain + patch.mean() + shift
        out[index, ..., 0] = np.round(np.clip(patch, 0.0, 1.0) * 255).astype(np.uint8)
    return out


def load_arrays() -> dict[str, np.ndarray]:
    return cached_drawn_splits("texture-patches", VERSION, texture_patches, SEED, TRAIN_PATCHES, TEST_PATCHES)


@register_task(
    TaskSpec(
        slug="texture-patches",
        summary="REAL PIXELS: 32x32 grey patches of scikit-image's brick, grass and gravel photographs, "
        "scale/rotation/contrast jitter, test patches from held-out image regions (3,000 / 900)",
        input_shape=(SIDE, SIDE, 1),
        num_classes=len(CLASSES),
        default_backbone="resnet-cifar",
        modality="image",
        embedded=True,
        target_accuracy=0.9,
    )
)
class TexturePatches(Task):
    """The generated train and test patches; 10% of train (stratified) is validation; pixels /255."""

    recipes = {
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=8, batch_size=64,
                        augmentation="none"),
        "paper": Recipe(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                        epochs=100, batch_size=128),
    }

    def load_splits(self) -> Splits:
        data = load_arrays()
        return splits_from_train_test(data["x_train"], data["y_train"], data["x_test"], data["y_test"],
                                      val_fraction=0.1, scale=255.0)
