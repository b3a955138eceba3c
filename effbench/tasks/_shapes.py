r"""Procedural scenes for the synthetic image tasks: shapes drawn over real textures (private).

Everything is vectorized over a batch of images and drawn from one ``numpy.random.Generator``, so a scene
set is a pure function of its seed (same seed, same bytes).

**Shapes** are given by an approximate signed distance :math:`d(u, v)` in units of the shape's radius
(:math:`d > 0` inside), at local coordinates :math:`(u, v)`: the pixel's offset from the shape's centre,
rotated by the shape's angle, divided by its radius (and by an aspect factor along :math:`v`). A pixel's
coverage is :math:`\mathrm{clip}(d R + 1/2, 0, 1)` for a radius of :math:`R` pixels: one pixel of
anti-aliased edge. Every shape fits in the unit disc; rotation and aspect jitter change its pose, never
its class (each class is told apart by its topology or its corners, at any angle).

**Textures** are tiles of the photos scikit-image and scikit-learn bundle (:mod:`effbench.tasks._images`),
each photo resized to a few scales; a texture crop is a random tile, offset, flip and quarter turn, with a
random colour transform (channel gains, channel order, desaturation, brightness).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from effbench.tasks import _images

# Photos cut into texture tiles: the natural photos and the three textures (never the test photos of
# sr-photos, so no image is both a texture here and a held-out test image there).
TEXTURE_PHOTOS = (
    "rocket", "motorcycle_left", "hubble_deep_field", "retina", "immunohistochemistry", "china", "moon",
    "coins", "cell", "brick", "grass", "gravel",
)  # fmt: skip
# Short sides the photos are resized to before tiling: coarse and fine textures.
TEXTURE_SIDES = (96, 160, 256)


def _polygon(sides: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Regular polygon of circumradius 1 with a vertex on +u: apothem minus the largest edge projection."""
    angles = 2 * np.pi * (np.arange(sides) + 0.5) / sides
    projections = [u * np.cos(angle) + v * np.sin(angle) for angle in angles]
    return np.cos(np.pi / sides) - np.max(projections, axis=0)


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Star polygon (tips at radius 1, valleys at ``inner``): radius of its edge along the ray, minus rho."""
    sector = np.pi / points
    phi = np.abs(np.mod(np.arctan2(v, u) + sector, 2 * sector) - sector)  # folded into [0, sector]
    tip = np.array([1.0, 0.0])
    valley = inner * np.array([np.cos(sector), np.sin(sector)])
    edge = valley - tip
    # The ray r (cos phi, sin phi) meets the line tip + t edge at r = (tip x edge) / (dir x edge).
    edge_radius = (tip[0] * edge[1] - tip[1] * edge[0]) / (np.cos(phi) * edge[1] - np.sin(phi) * edge[0])
    return (edge_radius - np.hypot(u, v)) * 0.5


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    return np.minimum(half_u - np.abs(u), half_v - np.abs(v))


def signed_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to ``shape`` (see the module docstring), positive inside."""
    rho = np.hypot(u, v)
    if shape == "disc":
        return 1.0 - rho
    if shape == "triangle":
        return _polygon(3, u, v)
    if shape == "square":
        return _polygon(4, u, v)
    if shape == "star":
        return _star(u, v)
    if shape == "ring":
        return np.minimum(1.0 - rho, rho - 0.55)
    if shape == "cross":
        return np.maximum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))
    if shape == "crescent":
        return np.minimum(1.0 - rho, np.hypot(u - 0.5, v) - 0.75)
    if shape == "ellipse":
        return (1.0 - np.hypot(u, v / 0.5)) * 0.5
    if shape == "half-disc":
        return np.minimum(1.0 - rho, v + 0.15)
    if shape == "frame":
        square = _polygon(4, u, v)
        return np.minimum(square, 0.25 - square)
    raise ValueError(f"unknown shape '{shape}'")


@dataclass(frozen=True)
class Poses:
    """Where each of N shapes is drawn: centre (pixels), radius (pixels), angle (radians), aspect."""

    cy: np.ndarray
    cx: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    aspect: np.ndarray


def coverage(shapes: list[str], poses: Poses, side: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of shape ``shapes[i]`` posed as ``poses[i]``: (N, side, side)."""
    grid = np.arange(side, dtype=np.float32) + 0.5
    dy = grid[None, :, None] - poses.cy[:, None, None]
    dx = grid[None, None, :] - poses.cx[:, None, None]
    cos, sin = np.cos(poses.angle)[:, None, None], np.sin(poses.angle)[:, None, None]
    radius = poses.radius[:, None, None]
    u = (dx * cos + dy * sin) / radius
    v = (dy * cos - dx * sin) / (radius * poses.aspect[:, None, None])
    out = np.empty((len(shapes), side, side), np.float32)
    names = np.asarray(shapes)
    for name in np.unique(names):
        members = np.flatnonzero(names == name)
        distance = signed_distance(str(name), u[members], v[members])
        out[members] = np.clip(distance * radius[members] + 0.5, 0.0, 1.0)
    return out


def stroke_coverage(start: np.ndarray, end: np.ndarray, half_width: np.ndarray, side: int) -> np.ndarray:
    """Coverage of the straight stroke from ``start`` to ``end`` ((N, 2) pixel (y, x)) per image."""
    grid = np.arange(side, dtype=np.float32) + 0.5
    py, px = grid[None, :, None], grid[None, None, :]
    ay, ax = start[:, 0, None, None], start[:, 1, None, None]
    by, bx = end[:, 0, None, None] - ay, end[:, 1, None, None] - ax
    t = np.clip(((py - ay) * by + (px - ax) * bx) / np.maximum(by * by + bx * bx, 1e-6), 0.0, 1.0)
    distance = np.hypot(py - ay - t * by, px - ax - t * bx)
    return np.clip(half_width[:, None, None] - distance + 0.5, 0.0, 1.0).astype(np.float32)


def random_strokes(rng: np.random.Generator, count: int, side: int) -> np.ndarray:
    """Coverage of one random thin stroke per image (clutter), 0.7 to 2.2 pixels wide."""
    start, end = rng.uniform(-0.1 * side, 1.1 * side, (2, count, 2)).astype(np.float32)
    return stroke_coverage(start, end, rng.uniform(0.35, 1.1, count).astype(np.float32), side)


@functools.cache
def texture_bank(tile: int) -> np.ndarray:
    """uint8 tiles (M, tile, tile, 3) cut from the texture photos at every scale, half-overlapping."""
    tiles = []
    for name in TEXTURE_PHOTOS:
        image = _images.photo(name)
        for short_side in TEXTURE_SIDES:
            scale = short_side / min(image.shape[:2])
            height, width = max(tile, round(image.shape[0] * scale)), max(tile, round(image.shape[1] * scale))
            resized = _images.resize(image, height, width, box=True)
            step = tile // 2
            for top in range(0, height - tile + 1, step):
                for left in range(0, width - tile + 1, step):
                    tiles.append(resized[top:top + tile, left:left + tile])
    bank = np.stack(tiles)
    bank.flags.writeable = False
    return bank


def texture_crops(rng: np.random.Generator, count: int, side: int, tile: int) -> np.ndarray:
    """``count`` random (side, side, 3) crops of the texture bank, flipped, turned and recoloured, float32."""
    bank = texture_bank(tile)
    index = rng.integers(0, len(bank), count)
    top, left = rng.integers(0, tile - side + 1, (2, count))
    rows = top[:, None, None] + np.arange(side)[None, :, None]
    cols = left[:, None, None] + np.arange(side)[None, None, :]
    crops = bank[index[:, None, None], rows, cols]
    turns, flips = rng.integers(0, 4, count), rng.random(count) < 0.5
    for turn in range(1, 4):
        members = np.flatnonzero(turns == turn)
        crops[members] = np.rot90(crops[members], turn, axes=(1, 2))
    crops[flips] = crops[flips, :, ::-1]
    return recolour(rng, crops.astype(np.float32) * np.float32(1 / 255))


def recolour(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Random channel order, saturation in [0, 1.2], channel gains in [0.5, 1.4] and a brightness shift in
    [-0.2, 0.2] per image, applied as one 3x3 colour matrix and an offset."""
    count = len(images)
    order = np.argsort(rng.random((count, 3)), axis=1)
    permutation = np.eye(3, dtype=np.float32)[order]  # row c picks input channel order[c]
    saturation = rng.uniform(0.0, 1.2, (count, 1, 1)).astype(np.float32)
    desaturate = saturation * np.eye(3, dtype=np.float32) + (1 - saturation) / 3
    gains = rng.uniform(0.5, 1.4, (count, 3, 1)).astype(np.float32)
    matrix = gains * desaturate @ permutation
    shift = rng.uniform(-0.2, 0.2, (count, 1, 1)).astype(np.float32)
    pixels = images.reshape(count, images.shape[1] * images.shape[2], 3)
    out = np.matmul(pixels, matrix.transpose(0, 2, 1)).reshape(images.shape)
    out += shift[..., None]
    return clip01(out)


def clip01(x: np.ndarray) -> np.ndarray:
    """``x`` clipped to [0, 1] in place (NumPy's ``clip`` is several times slower on large arrays)."""
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def random_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """One random RGB colour per image, shaped (count, 1, 1, 3) to paint a whole image."""
    return rng.uniform(0.0, 1.0, (count, 1, 1, 3)).astype(np.float32)


def solid_fills(rng: np.random.Generator, count: int, side: int) -> np.ndarray:
    """A random colour per image with a gentle linear shading across it: (count, side, side, 3)."""
    colour = rng.uniform(0.0, 1.0, (count, 1, 1, 3)).astype(np.float32)
    slope = rng.uniform(-0.25, 0.25, (count, 2)).astype(np.float32)
    ramp = np.linspace(-0.5, 0.5, side, dtype=np.float32)
    shade = slope[:, 0, None, None] * ramp[None, :, None] + slope[:, 1, None, None] * ramp[None, None, :]
    return clip01(colour + shade[..., None])


def fills(rng: np.random.Generator, count: int, side: int, tile: int, textured: float) -> np.ndarray:
    """Solid shaded colours, or (a ``textured`` fraction) texture crops."""
    use_texture = rng.random(count) < textured
    out = np.empty((count, side, side, 3), np.float32)
    out[~use_texture] = solid_fills(rng, int(np.sum(~use_texture)), side)
    out[use_texture] = texture_crops(rng, int(np.sum(use_texture)), side, tile)
    return out


def over(base: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``layer`` (images, or one colour per image) composited over ``base`` with per-pixel ``alpha`` (N, H, W)."""
    alpha = alpha[..., None]
    out = layer - base
    out *= alpha
    out += base
    return out


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] (clipped) rounded to 8 bits."""
    scaled = clip01(images) * np.float32(255)
    scaled += np.float32(0.5)
    return scaled.astype(np.uint8)
