"""Real photos that EffBench's pinned packages ship, and the resampling the image tasks use (private).

scikit-image's wheel bundles a few dozen images in ``skimage/data`` (most of them real photographs: the
astronaut Eileen Collins, Chelsea the cat, a cup of coffee, a rocket launch, the Hubble deep field, a
retina, ...; and three grey textures, brick, grass and gravel), and scikit-learn's bundles ``china.jpg`` and
``flower.jpg``. They are read straight from the installed packages' folders with Pillow, never through
``skimage.data`` (whose fetcher would download the images it does not bundle), so nothing is fetched.

Resampling is Pillow's bicubic filter (Keys' cubic, a = -0.5), which widens its support when it shrinks an
image, as MATLAB's ``imresize`` does: it is how super-resolution benchmarks make their low-resolution inputs.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from effbench.tasks.base import DatasetMissingError

# Bundled file of each photo, by the name scikit-image (or scikit-learn) gives it.
SKIMAGE_FILES = {
    "astronaut": "astronaut.png", "camera": "camera.png", "cell": "cell.png", "chelsea": "chelsea.png",
    "coffee": "coffee.png", "coins": "coins.png", "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png", "moon": "moon.png", "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png", "page": "page.png", "retina": "retina.jpg", "rocket": "rocket.jpg",
    "text": "text.png", "brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png",
}  # fmt: skip
SKLEARN_FILES = {"china": "china.jpg", "flower": "flower.jpg"}
TEXTURES = ("brick", "grass", "gravel")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissingError(f"package '{package}' is not installed; its bundled images are needed")
    return Path(next(iter(spec.submodule_search_locations)))


def photo_path(name: str) -> Path:
    """The bundled file of photo ``name``."""
    if name in SKIMAGE_FILES:
        return _package_dir("skimage") / "data" / SKIMAGE_FILES[name]
    if name in SKLEARN_FILES:
        return _package_dir("sklearn") / "datasets" / "images" / SKLEARN_FILES[name]
    raise KeyError(f"no bundled photo '{name}'; known: {', '.join(sorted({**SKIMAGE_FILES, **SKLEARN_FILES}))}")


@functools.cache
def photo(name: str) -> np.ndarray:
    """Photo ``name`` as uint8 RGB (H, W, 3); a grey image has three equal channels. Read-only."""
    path = photo_path(name)
    if not path.exists():
        raise DatasetMissingError(f"bundled photo '{name}' is missing: expected {path} (reinstall the package)")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    pixels.flags.writeable = False
    return pixels


def resize(image: np.ndarray, height: int, width: int, box: bool = False) -> np.ndarray:
    """A uint8 (H, W, 3) image resized to (height, width) with Pillow's bicubic filter (its box filter, an
    area average and several times faster, with ``box``)."""
    method = Image.Resampling.BOX if box else Image.Resampling.BICUBIC
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((width, height), method)
    return np.asarray(resized, dtype=np.uint8)


def bicubic_upscale(images: np.ndarray, scale: int) -> np.ndarray:
    """Float images (N, h, w, C) upsampled ``scale`` times with the same bicubic filter, as float32.

    Each channel is resampled as a 32-bit float image (Pillow mode ``F``), so nothing is rounded; values
    may overshoot [0, 1] a little, as bicubic interpolation does.
    """
    count, height, width, channels = images.shape
    out = np.empty((count, height * scale, width * scale, channels), np.float32)
    size = (width * scale, height * scale)
    for index in range(count):
        for channel in range(channels):
            plane = Image.fromarray(np.ascontiguousarray(images[index, :, :, channel], np.float32), mode="F")
            out[index, :, :, channel] = np.asarray(plane.resize(size, Image.Resampling.BICUBIC))
    return out
