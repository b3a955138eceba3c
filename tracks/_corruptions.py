"""Corruptions for the robustness track: CIFAR-10-C's on images, additive noise on vectors.

Image corruptions follow ``make_cifar_c.py`` of Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR 2019, https://arxiv.org/abs/1903.12261),
with its CIFAR-10-C parameter c per severity 1..5. Inputs are float32 NHWC in [0, 1] with 1 or 3
channels; every output is clipped to [0, 1].

================  ==============================  =====================================================
corruption        c for severity 1, 2, 3, 4, 5    x -> corrupted
================  ==============================  =====================================================
gaussian_noise    0.04, 0.06, 0.08, 0.09, 0.10    x + N(0, c^2)
shot_noise        500, 250, 100, 75, 50           Poisson(c x) / c
gaussian_blur     0.4, 0.6, 0.7, 0.8, 1.0         Gaussian filter over H and W, sigma c pixels of a 32-px side
brightness        0.05, 0.1, 0.15, 0.2, 0.3       HSV value V -> min(V + c, 1), hue and saturation kept
contrast          0.75, 0.5, 0.4, 0.3, 0.15       (x - m) c + m, m the image's per-channel mean
pixelate          0.95, 0.9, 0.85, 0.75, 0.65     PIL BOX resize to int(c side), then BOX back
jpeg              80, 65, 58, 50, 40              PIL JPEG encode/decode at quality c ("L" or "RGB")
================  ==============================  =====================================================

Deviations from ``make_cifar_c.py``, all forced by small or float inputs:

* Blur and pixelate describe a loss of resolution of the scene, so they scale with the image: on a
  32-px side they are exactly CIFAR-10-C's. A smaller image (digits: 8x8, MNIST: 28x28) is first
  replicated k = ceil(32 / side) times per pixel (nearest neighbour: nothing is invented), corrupted
  on that k*side grid with sigma = c k side / 32 and int(c k side), then block-averaged back to
  ``side``. Scaling directly on an 8-px grid fails: sigma 0.1..0.25 px is below the pixel grid
  (scipy's kernel for sigma 0.1 is one tap, the identity) and int(8 c) = 7, 7, 6, 6, 5 repeats
  severities. Both are linear along H and W, so each is applied as one side x side matrix per axis.
* Noise and JPEG act on pixels (sensor and codec), so they take CIFAR-10-C's numbers as they are.
* Results stay float; CIFAR-10-C rounds every image to uint8, which only JPEG does here.
* The Gaussian filter uses skimage's defaults that ``make_cifar_c.py`` relies on: edge mode
  "nearest", truncated at 4 sigma.

Vector inputs (for example MNIST-1D: standardized real-valued signals, no natural range) get only
additive noise, never clipped, with its standard deviation c s relative to the scalar std s of the
inputs being corrupted (about 1 for standardized data):

================  ==============================  =====================================================
gaussian_noise    0.16, 0.24, 0.32, 0.36, 0.40    x + N(0, (c s)^2)
uniform_noise     0.16, 0.24, 0.32, 0.36, 0.40    x + U(-sqrt(3) c s, sqrt(3) c s)
================  ==============================  =====================================================

c is CIFAR-10-C's Gaussian sigma divided by CIFAR-10's pixel std (about 0.25), so the noise has the
same size relative to the data as on images. Uniform noise has the same std as the Gaussian at each
severity but bounded support: the error of rounding to a grid of step 2 sqrt(3) c s, which is how
a coarse sensor or a quantized input pipeline corrupts a real-valued signal (Poisson shot noise
needs non-negative intensities, which standardized signals are not).

Randomness is drawn from a generator seeded by (CORRUPTION_SEED, the corruption's name, severity)
only, never the run's seed: every method is scored on exactly the same corrupted test set.
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


# ---- resolution corruptions: linear along H and W, built at CIFAR's scale ------------------

# Builds the m x m matrix of a 1-D corruption on a side of m pixels, given its parameter.
Resample = Callable[[int, float], np.ndarray]


def reference_scale_matrix(side: int, resample: Resample, param: float) -> np.ndarray:
    """The side x side matrix of ``resample`` applied on a grid of about REFERENCE_SIDE pixels.

    Replicating each pixel k times and block-averaging back are exact inverses on unchanged images,
    so an image already REFERENCE_SIDE wide or wider (k = 1) gets the corruption itself.
    """
    k = max(1, math.ceil(REFERENCE_SIDE / side))
    replicate = np.repeat(np.eye(side), k, axis=0)  # (k side, side)
    return replicate.T / k @ resample(k * side, param) @ replicate


def blur_matrix(side: int, sigma: float) -> np.ndarray:
    return gaussian_filter1d(np.eye(side), sigma * side / REFERENCE_SIDE, axis=0, mode="nearest", truncate=4.0)


def box_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """PIL's BOX resampling from ``size_in`` to ``size_out`` pixels as a matrix, read off an identity."""
    identity = Image.fromarray(np.eye(size_in, dtype=np.float32))  # float32 -> mode "F"
    return np.asarray(identity.resize((size_out, size_in), Image.Resampling.BOX), dtype=np.float64).T


def pixelate_matrix(side: int, keep: float) -> np.ndarray:
    small = int(side * keep)
    return box_resize_matrix(small, side) @ box_resize_matrix(side, small)


def along_height_and_width(x: np.ndarray, matrix_for: Callable[[int], np.ndarray]) -> np.ndarray:
    rows, cols = matrix_for(x.shape[1]), matrix_for(x.shape[2])
    return np.einsum("ih,nhwc,jw->nijc", rows, x, cols, optimize=True)


def resolution_corruption(resample: Resample) -> Apply:
    def apply(x: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
        return along_height_and_width(x, lambda side: reference_scale_matrix(side, resample, param))

    return apply


# ---- vector corruptions: additive noise in units of the inputs' std -------------------------


def relative_gaussian_noise(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return x + level * x.std(dtype=np.float64) * rng.standard_normal(x.shape)


def relative_uniform_noise(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    half_width = math.sqrt(3.0) * level * x.std(dtype=np.float64)  # std of U(-a, a) is a / sqrt(3)
    return x + rng.uniform(-half_width, half_width, x.shape)


ImageCorruption = partial(Corruption, clip=True)
CIFAR10C_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
VECTOR_NOISE = tuple(round(sigma / CIFAR10_PIXEL_STD, 4) for sigma in CIFAR10C_NOISE)

IMAGE_CORRUPTIONS = (
    ImageCorruption("gaussian_noise", CIFAR10C_NOISE, gaussian_noise),
    ImageCorruption("shot_noise", (500, 250, 100, 75, 50), shot_noise),
    ImageCorruption("gaussian_blur", (0.4, 0.6, 0.7, 0.8, 1.0), resolution_corruption(blur_matrix)),
    ImageCorruption("brightness", (0.05, 0.1, 0.15, 0.2, 0.3), brightness),
    ImageCorruption("contrast", (0.75, 0.5, 0.4, 0.3, 0.15), contrast),
    ImageCorruption("pixelate", (0.95, 0.9, 0.85, 0.75, 0.65), resolution_corruption(pixelate_matrix)),
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
