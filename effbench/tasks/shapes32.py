"""``shapes32``: a synthetic 10-class image task with CIFAR-10's exact geometry, generated offline.

Why: ``digits`` is 8x8, so its MACs, FLOPs and latencies say nothing about the 32x32x3 inputs that
compression papers report on, and CIFAR-10 cannot be downloaded here. ``shapes32`` has CIFAR-10's input
(32x32 RGB in [0, 1]), its 10 classes and about its size (20,000 train, 5,000 test), so every cost a track
measures on it is what a CIFAR-10 run would measure; only the accuracies are its own. It is synthetic, and
says so in its summary.

Each image is one shape, its class, drawn over a real-photo texture (:mod:`effbench.tasks._shapes`): disc,
triangle, square, star, ring, cross, crescent, ellipse, half-disc or square frame. What makes it hard (so that
a ResNet-20 does not saturate at the quick budget): the background is a random crop of one of a dozen
bundled photos and textures at three scales, recoloured; the shape has a random position (part of it may
leave the image), radius (5.5 to 13 px), rotation and aspect (0.8 to 1.25), and is filled with a shaded
colour or (40%) another texture, so it may barely stand out; one or two thin strokes of clutter cross the
image under it, and one (40%) over it; 40% of the shapes are occluded by a thick textured bar through them;
and Gaussian noise (sigma up to 0.05) is added. Classes are balanced; labels are exact (no label noise).

Generated with a fixed seed in chunks of ``CHUNK`` images, each from its own generator seeded by
(``SEED``, split, chunk), so the bytes depend only on the seed and the sizes, and cached as uint8 (like
CIFAR) under the EffBench cache folder; building takes a few seconds (``benchmarks/task_generation.py``).
"""

from __future__ import annotations

import numpy as np

from effbench.recipe import Recipe
from effbench.registry import TaskSpec, register_task
from effbench.tasks import _shapes
from effbench.tasks._generated import cached_drawn_splits, drawn_splits
from effbench.tasks._shared import CIFAR_PAPER, smoke_recipe, splits_from_train_test
from effbench.tasks.base import Splits, Task

CLASSES = ("disc", "triangle", "square", "star", "ring", "cross", "crescent", "ellipse", "half-disc", "frame")
SIDE = 32
TILE = 48
SEED = 32_2024
TRAIN_IMAGES, TEST_IMAGES = 20_000, 5_000
CHUNK = 2_500
# Bump when the generator's output changes, so caches of the old version are not reused.
VERSION = 1


def shapes32_scenes(seed: int, split: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images (uint8, (count, 32, 32, 3)) and labels (int32) of one split, in chunks."""
    images, labels = [], []
    for chunk, start in enumerate(range(0, count, CHUNK)):
        rng = np.random.default_rng([seed, split, chunk])
        chunk_images, chunk_labels = draw_chunk(rng, min(CHUNK, count - start))
        images.append(chunk_images)
        labels.append(chunk_labels)
    return np.concatenate(images), np.concatenate(labels)


def draw_chunk(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(count) % len(CLASSES)).astype(np.int32)
    image = _shapes.texture_crops(rng, count, SIDE, TILE)
    for presence in (1.0, 0.5):  # one or two strokes of clutter under the shape
        image = clutter(rng, image, presence)
    poses = _shapes.Poses(
        cy=rng.uniform(0.3 * SIDE, 0.7 * SIDE, count).astype(np.float32),
        cx=rng.uniform(0.3 * SIDE, 0.7 * SIDE, count).astype(np.float32),
        radius=rng.uniform(5.5, 13.0, count).astype(np.float32),
        angle=rng.uniform(0.0, 2 * np.pi, count).astype(np.float32),
        aspect=np.exp(rng.uniform(np.log(0.8), np.log(1.25), count)).astype(np.float32),
    )
    alpha = _shapes.coverage([CLASSES[label] for label in labels], poses, SIDE)
    image = _shapes.over(image, _shapes.fills(rng, count, SIDE, TILE, textured=0.4), alpha)
    image = occlude(rng, image, poses, probability=0.4)
    image = clutter(rng, image, presence=0.4)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= rng.uniform(0.0, 0.05, (count, 1, 1, 1)).astype(np.float32)
    return _shapes.to_uint8(image + noise), labels


def clutter(rng: np.random.Generator, image: np.ndarray, presence: float) -> np.ndarray:
    """A thin stroke of one random colour over a ``presence`` fraction of the images."""
    chosen = np.flatnonzero(rng.random(len(image)) < presence)
    alpha = _shapes.random_strokes(rng, len(chosen), SIDE)
    image[chosen] = _shapes.over(image[chosen], _shapes.random_colours(rng, len(chosen)), alpha)
    return image


def occlude(rng: np.random.Generator, image: np.ndarray, poses: _shapes.Poses, probability: float) -> np.ndarray:
    """A thick textured bar (3 to 7 px) through the middle half of a ``probability`` fraction of the shapes."""
    chosen = np.flatnonzero(rng.random(len(image)) < probability)
    count = len(chosen)
    radius = poses.radius[chosen]
    centre = np.stack([poses.cy[chosen], poses.cx[chosen]], axis=1)
    offset = rng.uniform(-0.5, 0.5, (count, 2)).astype(np.float32) * radius[:, None]
    direction = rng.uniform(0.0, np.pi, count)
    span = np.stack([np.sin(direction), np.cos(direction)], axis=1).astype(np.float32) * 2 * SIDE
    half_width = rng.uniform(1.5, 3.5, count).astype(np.float32)
    alpha = _shapes.stroke_coverage(centre + offset - span, centre + offset + span, half_width, SIDE)
    image[chosen] = _shapes.over(image[chosen], _shapes.texture_crops(rng, count, SIDE, TILE), alpha)
    return image


def generate(seed: int = SEED, train: int = TRAIN_IMAGES, test: int = TEST_IMAGES) -> dict[str, np.ndarray]:
    """The whole task as uint8 images and int32 labels: ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    return drawn_splits(shapes32_scenes, seed, train, test)


def load_arrays() -> dict[str, np.ndarray]:
    return cached_drawn_splits("shapes32", VERSION, shapes32_scenes, SEED, TRAIN_IMAGES, TEST_IMAGES)


@register_task(
    TaskSpec(
        slug="shapes32",
        summary="SYNTHETIC: 10 shapes over real-photo textures, 32x32 RGB with clutter and occlusion "
        "(20,000 train / 5,000 test; CIFAR-10's geometry; generated offline in seconds)",
        input_shape=(SIDE, SIDE, 3),
        num_classes=len(CLASSES),
        default_backbone="resnet-cifar",
        modality="image",
        embedded=True,
        target_accuracy=0.8,
    )
)
class Shapes32(Task):
    """The generated train and test sets; 10% of train (stratified) is validation; pixels /255."""

    recipes = {
        "smoke": smoke_recipe("crop-flip"),
        # cifar10's quick recipe: shapes32 is built to cost what CIFAR-10 costs.
        "quick": Recipe(optimizer="adam", learning_rate=1e-3, schedule="cosine", epochs=5, batch_size=128,
                        augmentation="crop-flip", max_train_samples=10_000),
        "paper": CIFAR_PAPER,
    }

    def load_splits(self) -> Splits:
        data = load_arrays()
        return splits_from_train_test(data["x_train"], data["y_train"], data["x_test"], data["y_test"],
                                      val_fraction=0.1, scale=255.0)
