"""Corruptions for the robustness track: CIFAR-10-C's on images, additive noise on vectors.

Image corruptions follow ``make_cifar_c.py`` of Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR 2019, https://arxiv.org/abs/1903.12261),
with its CIFAR-10-C parameter c for severities 1..5. Inputs are float32 NHWC in [0, 1] with 1 or 3
channels; every output is clipped to [0, 1].

==============  ============================  ===========================================================
corruption      c for severity 1, 2, 3, 4, 5  x -> corrupted
==============  ============================  ===========================================================
gaussian_noise  0.04, 0.06, 0.08, 0.09, 0.10  x + N(0, c^2)
shot_noise      500, 250, 100, 75, 50         Poisson(c x) / c
gaussian_blur   0.4, 0.6, 0.7, 0.8, 1.0       Gaussian filter over H and W, sigma = c side / 32 pixels
brightness      0.05, 0.1, 0.15, 0.2, 0.3     HSV value V -> min(V + c, 1), hue, saturation kept (grey: x + c)
contrast        0.75, 0.5, 0.4, 0.3, 0.15     (x - m) c + m, m the image's mean per channel
pixelate        0.95, 0.9, 0.85, 0.75, 0.65   BOX-average to int(c side) pixels per side, BOX back up
jpeg            80, 65, 58, 50, 40            PIL JPEG encode and decode at quality c ("L" or "RGB")
==============  ============================  ===========================================================

On a 32x32 image these are CIFAR-10-C's corruptions (blur and pixelate tested against scipy and PIL).
Smaller images (digits 8x8, MNIST 28x28) need two adaptations, both in the geometric corruptions:

* Blur sigma is in pixels of a 32-px image, so it becomes the same fraction of the side: c side / 32.
  On 8x8 that is 0.1..0.25 px, below the pixel grid (scipy's sampled kernel for 0.1 is one tap: the
  identity), so small images are blurred on a finer grid; see :func:`blur_matrix`. Relative to the
  image the blur is then as strong as on CIFAR, which on 8x8 digits is mild (severity 1 barely
  changes a pixel).
* Pixelate's c already is a fraction of the side, but on 8 px int(8 c) = 7, 7, 6, 6, 5 repeats
  severities; each severity s keeps at most side - s pixels, so 8x8 gets 7, 6, 5, 4, 3. Sides of 14
  pixels and up are unchanged (28x28: 26, 25, 23, 21, 18; 32x32: 30, 28, 27, 24, 20). On 8 px which
  columns merge depends on the cell grid: 6 cells merge columns 1-2 and 4-5, 5 cells the borders 0-1
  and 6-7, so on digits (blank borders) severity 2 can cost more accuracy than severity 3.

Noise, brightness, contrast and JPEG act on pixel values and take CIFAR-10-C's numbers as they are.
Outputs stay float; CIFAR-10-C rounds every image to uint8, which only JPEG does here.

Vector inputs (for example MNIST-1D: standardized real-valued signals, with no natural range) get
only additive noise, never clipped, whose standard deviation is c s, with s the scalar std of the
inputs being corrupted (about 1 for standardized data):

==============  ============================  ===========================================================
gaussian_noise  0.16, 0.24, 0.32, 0.36, 0.40  x + N(0, (c s)^2)
uniform_noise   0.16, 0.24, 0.32, 0.36, 0.40  x + U(-sqrt(3) c s, sqrt(3) c s)
==============  ============================  ===========================================================

c is CIFAR-10-C's Gaussian sigma divided by CIFAR-10's pixel std (about 0.25): the noise is as large
relative to the data as on images. Uniform noise has the Gaussian's std at each severity but bounded
support: it is the error of rounding to a grid of step 2 sqrt(3) c s, how a coarse sensor or a
quantized input pipeline corrupts a real-valued signal. (Shot noise needs non-negative intensities,
which standardized signals are not.)

Randomness comes from a generator seeded by (CORRUPTION_SEED, the corruption's name, the severity)
only, never the run's seed, so every method is scored on exactly the same corrupted test set.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter1d

SEVERITIES = (1, 2, 3, 4, 5)
CORRUPTION_SEED = 20190328
# The image side CIFAR-10-C's blur sigma (pixels) and pixelate sizes refer to.
REFERENCE_SIDE = 32
# CIFAR-10's pixel standard deviation in [0, 1] units, to carry its noise levels over to vectors.
CIFAR10_PIXEL_STD = 0.25

Apply = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """A corruption with its parameter for each severity 1..5."""

    name: str
    params: tuple[float, ...]
    apply: Apply
    clip: bool = False  # images stay in [0, 1]; real-valued signals have no range to clip to

    def __call__(self, x: np.ndarray, severity: int) -> np.ndarray:
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity} is not one of {SEVERITIES}")
        rng = np.random.default_rng([CORRUPTION_SEED, zlib.crc32(self.name.encode()), severity])
        out = self.apply(x, self.params[severity - 1], rng)
        if self.clip:
            out = np.clip(out, 0.0, 1.0)
        return out.astype(np.float32, copy=False)


# ---- pixel-wise image corruptions ----------------------------------------------------------


def gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x + sigma * rng.standard_normal(x.shape, dtype=np.float32)


def shot_noise(x: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(x * photons) / photons


def brightness(x: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``shift`` to the HSV value V = max over channels, keeping hue and saturation.

    With H and S fixed every channel is proportional to V, so the shift scales the pixel by V'/V;
    a black pixel (V = 0, saturation 0 by definition) becomes grey V'. One channel: min(x + shift, 1).
    """
    value = x.max(axis=-1, keepdims=True)
    shifted = np.minimum(value + shift, 1.0)
    scale = np.divide(shifted, value, out=np.zeros_like(value), where=value > 0)
    return np.where(value > 0, x * scale, shifted)


def contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * factor + means


def jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    pixels = np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
    grey = x.shape[-1] == 1
    decoded = np.empty_like(pixels)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if grey else image).save(buffer, "JPEG", quality=int(quality))
        decoded[i] = np.asarray(Image.open(buffer)).reshape(image.shape)
    return decoded / np.float32(255)


# ---- resolution corruptions: linear along H and W, one side x side matrix per axis ---------


def blur_matrix(side: int, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels of a REFERENCE_SIDE-pixel side, scaled to ``side``.

    Scaled down, sigma falls below a pixel (0.1 px on 8x8, where scipy's sampled kernel is the
    identity), so the blur runs on a grid k = ceil(REFERENCE_SIDE / side) times finer: each pixel
    replicated k times, blurred with sigma k side / REFERENCE_SIDE, block-averaged back. For
    side >= REFERENCE_SIDE, k = 1 and this is the plain filter (edge mode "nearest", 4 sigma, as skimage).
    """
    k = max(1, math.ceil(REFERENCE_SIDE / side))
    replicate = np.repeat(np.eye(side), k, axis=0)  # (k side, side)
    fine = gaussian_filter1d(np.eye(k * side), sigma * k * side / REFERENCE_SIDE, axis=0, mode="nearest",
                             truncate=4.0)
    return replicate.T / k @ fine @ replicate


def pixelate_size(side: int, keep: float) -> int:
    """CIFAR-10-C's int(keep side), but at least ``severity`` pixels fewer than ``side``.

    Only small sides are affected: int(8 keep) = 7, 7, 6, 6, 5 would give two pairs of severities
    the same images, so an 8-px side gets 7, 6, 5, 4, 3; sides from 14 to 32 keep CIFAR-10-C's sizes.
    """
    severity = 1 + sum(milder > keep for milder in PIXELATE_KEEP)
    return min(int(side * keep), side - severity)


def pixelate_matrix(side: int, keep: float) -> np.ndarray:
    """PIL's BOX resize to n = pixelate_size(side, keep) pixels and back, as the partition it is.

    Pixel j falls in cell floor((j + 1/2) n / side) and takes the mean of its cell. This equals
    ``make_cifar_c.py``'s two PIL BOX resizes at sides 8, 16, 20, 24, 28 and 32 (tested); at other
    sides PIL's down and up passes break ties at cell borders differently and stop being a partition.
    """
    cell = np.floor((np.arange(side) + 0.5) * pixelate_size(side, keep) / side)
    same = cell[:, None] == cell[None, :]
    return same / same.sum(axis=1, keepdims=True)


def along_height_and_width(x: np.ndarray, matrix_for: Callable[[int], np.ndarray]) -> np.ndarray:
    # In the inputs' float32: float64 matrices would double the work on a whole test set.
    rows, cols = (matrix_for(side).astype(x.dtype) for side in x.shape[1:3])
    return np.einsum("ih,nhwc,jw->nijc", rows, x, cols, optimize=True)


def separable(matrix: Callable[[int, float], np.ndarray]) -> Apply:
    """The corruption that applies ``matrix(side, param)`` along both image axes."""

    def apply(x: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
        return along_height_and_width(x, lambda side: matrix(side, param))

    return apply


# ---- vector corruptions: additive noise in units of the inputs' std -------------------------


def relative_gaussian_noise(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return x + level * x.std(dtype=np.float64) * rng.standard_normal(x.shape)


def relative_uniform_noise(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    half_width = math.sqrt(3.0) * level * x.std(dtype=np.float64)  # std of U(-a, a) is a / sqrt(3)
    return x + rng.uniform(-half_width, half_width, x.shape)


ImageCorruption = partial(Corruption, clip=True)
CIFAR10C_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
PIXELATE_KEEP = (0.95, 0.9, 0.85, 0.75, 0.65)
VECTOR_NOISE = tuple(round(sigma / CIFAR10_PIXEL_STD, 4) for sigma in CIFAR10C_NOISE)

IMAGE_CORRUPTIONS = (
    ImageCorruption("gaussian_noise", CIFAR10C_NOISE, gaussian_noise),
    ImageCorruption("shot_noise", (500, 250, 100, 75, 50), shot_noise),
    ImageCorruption("gaussian_blur", (0.4, 0.6, 0.7, 0.8, 1.0), separable(blur_matrix)),
    ImageCorruption("brightness", (0.05, 0.1, 0.15, 0.2, 0.3), brightness),
    ImageCorruption("contrast", (0.75, 0.5, 0.4, 0.3, 0.15), contrast),
    ImageCorruption("pixelate", PIXELATE_KEEP, separable(pixelate_matrix)),
    ImageCorruption("jpeg", (80, 65, 58, 50, 40), jpeg),
)
VECTOR_CORRUPTIONS = (
    Corruption("gaussian_noise", VECTOR_NOISE, relative_gaussian_noise),
    Corruption("uniform_noise", VECTOR_NOISE, relative_uniform_noise),
)


def corruptions_for(modality: str) -> tuple[Corruption, ...]:
    """The corruptions for a task's modality ("image" or "vector")."""
    by_modality = {"image": IMAGE_CORRUPTIONS, "vector": VECTOR_CORRUPTIONS}
    if modality not in by_modality:
        raise ValueError(f"no corruptions for modality '{modality}'; known: {', '.join(by_modality)}")
    return by_modality[modality]
