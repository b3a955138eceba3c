"""``seg-shapes``: synthetic semantic segmentation, 64x64 RGB scenes with a class for every pixel, generated offline.

Why: segmentation architectures (U-Net++, the segmentation methods of the roster) need masks, and no
segmentation dataset ships with the pinned packages. Every scene holds two to four shapes of six classes
(disc, triangle, square, star, ring, cross; class 0 is background) over a real-photo texture
(:mod:`effbench.tasks._shapes`), each with a random position, radius (6 to 15 px), rotation, aspect and fill
(a shaded colour, or 40% another texture). Shapes overlap: a later one hides an earlier one. A thin stroke of
clutter runs under the shapes, and in half the scenes another over them, and Gaussian noise is added. The
label of a pixel is the class of what is visible there: the top-most shape covering more than half of the
pixel, else background (a stroke over a shape is background). Scored by mean IoU and pixel accuracy (the
``accuracy`` track, kind ``segmentation``).

4,000 training and 1,000 test scenes, generated with a fixed seed in chunks, each chunk from a generator
seeded by (``SEED``, split, chunk), and cached as uint8 images and labels.
"""

from __future__ import annotations

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks import _shapes
from effbench.tasks._generated import cached_drawn_splits, drawn_splits
from effbench.tasks._shared import smoke_recipe
from effbench.tasks.base import Splits, Task

CLASSES = ("background", "disc", "triangle", "square", "star", "ring", "cross")
SIDE = 64
TILE = 80
SEED = 64_2024
TRAIN_SCENES, TEST_SCENES = 4_000, 1_000
VALIDATION_SCENES = 400
CHUNK = 1_000
# Chance that each of the four shape slots holds a shape (the first two always do).
SLOT_PRESENCE = (1.0, 1.0, 0.6, 0.3)
VERSION = 1


def scenes(seed: int, split: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes: uint8 images (count, 64, 64, 3) and int32 per-pixel labels (count, 64, 64)."""
    images, labels = [], []
    for chunk, start in enumerate(range(0, count, CHUNK)):
        rng = np.random.default_rng([seed, split, chunk])
        chunk_images, chunk_labels = draw_chunk(rng, min(CHUNK, count - start))
        images.append(chunk_images)
        labels.append(chunk_labels)
    return np.concatenate(images), np.concatenate(labels)


def draw_chunk(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    image = _shapes.texture_crops(rng, count, SIDE, TILE)
    labels = np.zeros((count, SIDE, SIDE), np.int32)
    image = stroke(rng, image, presence=1.0)
    for presence in SLOT_PRESENCE:
        scene = np.flatnonzero(rng.random(count) < presence)  # the scenes that get a shape in this slot
        drawn = len(scene)
        classes = rng.integers(1, len(CLASSES), drawn).astype(np.int32)
        poses = _shapes.Poses(
            cy=rng.uniform(4.0, SIDE - 4.0, drawn).astype(np.float32),
            cx=rng.uniform(4.0, SIDE - 4.0, drawn).astype(np.float32),
            radius=rng.uniform(6.0, 15.0, drawn).astype(np.float32),
            angle=rng.uniform(0.0, 2 * np.pi, drawn).astype(np.float32),
            aspect=np.exp(rng.uniform(np.log(0.8), np.log(1.25), drawn)).astype(np.float32),
        )
        alpha = _shapes.coverage([CLASSES[c] for c in classes], poses, SIDE)
        image[scene] = _shapes.over(image[scene], _shapes.fills(rng, drawn, SIDE, TILE, textured=0.4), alpha)
        labels[scene] = np.where(alpha > 0.5, classes[:, None, None], labels[scene])
    covered = np.zeros((count, SIDE, SIDE), np.float32)
    image = stroke(rng, image, presence=0.5, alpha_out=covered)
    labels[covered > 0.5] = 0
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= rng.uniform(0.0, 0.05, (count, 1, 1, 1)).astype(np.float32)
    return _shapes.to_uint8(image + noise), labels


def stroke(rng: np.random.Generator, image: np.ndarray, presence: float, alpha_out: np.ndarray | None = None):
    """A thin stroke of one random colour over a ``presence`` fraction of the images; its coverage into
    ``alpha_out``."""
    chosen = np.flatnonzero(rng.random(len(image)) < presence)
    alpha = _shapes.random_strokes(rng, len(chosen), SIDE)
    if alpha_out is not None:
        alpha_out[chosen] = alpha
    image[chosen] = _shapes.over(image[chosen], _shapes.random_colours(rng, len(chosen)), alpha)
    return image


def generate(seed: int = SEED, train: int = TRAIN_SCENES, test: int = TEST_SCENES) -> dict[str, np.ndarray]:
    return drawn_splits(scenes, seed, train, test)


def load_arrays() -> dict[str, np.ndarray]:
    return cached_drawn_splits("seg-shapes", VERSION, scenes, SEED, TRAIN_SCENES, TEST_SCENES)


@register_task(
    TaskSpec(
        slug="seg-shapes",
        summary="SYNTHETIC segmentation: 2-4 overlapping shapes of 6 classes + background over real-photo "
        "textures, 64x64 RGB, a label per pixel (4,000 train / 1,000 test; generated offline)",
        input_shape=(SIDE, SIDE, 3),
        num_classes=len(CLASSES),
        default_backbone="fcn-small",
        modality="image",
        embedded=True,
        target_accuracy=0.9,
        kind="segmentation",
        output_shape=(SIDE, SIDE),
    )
)
class SegShapes(Task):
    """The generated train and test scenes; the last ``VALIDATION_SCENES`` training scenes are validation."""

    recipes = {
        # No crop-flip: the training pipeline moves images, not their masks.
        "smoke": smoke_recipe(),
        "quick": Recipe(optimizer="adam", learning_rate=2e-3, schedule="cosine", epochs=8, batch_size=32),
        "paper": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=60, batch_size=32),
    }

    def load_splits(self) -> Splits:
        data = load_arrays()
        x_train = data["x_train"].astype(np.float32) / np.float32(255)
        x_test = data["x_test"].astype(np.float32) / np.float32(255)
        cut = len(x_train) - VALIDATION_SCENES
        return Splits(
            x_train[:cut], data["y_train"][:cut], x_train[cut:], data["y_train"][cut:], x_test, data["y_test"]
        )
