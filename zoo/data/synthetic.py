"""The embedded default dataset: procedural, histology-like tiles that need no download.

Each tile is rendered as stain densities through Beer-Lambert optics, ``I = exp(-(tissue·E + nuclei·H))``,
with strong nuisance variation — a random stain colour per tile, ±50 % low-frequency illumination, brightness
and noise — so that colour and intensity statistics carry no class information. The four classes differ only in
nuclear morphology and arrangement:

    0 ``small_round``: many small round nuclei, scattered
    1 ``large``: few large nuclei
    2 ``spindle``: elongated nuclei aligned along one direction
    3 ``gland``: a ring of nuclei around a pale lumen

so a random-init encoder does poorly on kNN while self-supervised training can learn the morphology.
Deterministic: tile ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASS_NAMES", "render_tile", "generate"]

CLASS_NAMES = ("small_round", "large", "spindle", "gland")
HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])


def _smooth_field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, waves: int = 4) -> np.ndarray:
    """A low-frequency random field in [-1, 1] (a sum of a few random plane waves)."""
    field = np.zeros_like(yy)
    for _ in range(waves):
        freq = rng.uniform(0.3, 2.0, size=2) * rng.choice([-1, 1], size=2)
        field += np.sin(2 * np.pi * (freq[0] * yy + freq[1] * xx) + rng.uniform(0, 2 * np.pi))
    return field / waves


def _ellipses(yy, xx, cy, cx, a, b, theta, sharpness: float = 4.0) -> np.ndarray:
    """Soft filled ellipses summed into an H x W density (parameters are K-vectors, coordinates in pixels)."""
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]  # K x H x W
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u, v = (dx * cos + dy * sin) / a[:, None, None], (-dx * sin + dy * cos) / b[:, None, None]
    logit = np.clip(sharpness * (1 - u * u - v * v), -30, 30)
    return (1 / (1 + np.exp(-logit))).sum(axis=0)


def _nuclei(rng: np.random.Generator, label: int, size: int) -> tuple[tuple[np.ndarray, ...], tuple | None]:
    """Nucleus parameters (cy, cx, a, b, theta) for one tile of class ``label``; plus a lumen for glands."""
    s = size / 64
    lumen = None
    if label == 0:  # many small round
        k = rng.integers(35, 50)
        a = b = rng.uniform(1.5, 2.2, k) * s
        cy, cx = rng.uniform(0, size, (2, k))
        theta = rng.uniform(0, np.pi, k)
    elif label == 1:  # few large
        k = rng.integers(6, 10)
        a = rng.uniform(4.0, 5.5, k) * s
        b = a * rng.uniform(0.8, 1.0, k)
        cy, cx = rng.uniform(0, size, (2, k))
        theta = rng.uniform(0, np.pi, k)
    elif label == 2:  # aligned spindles
        k = rng.integers(18, 26)
        a = rng.uniform(5.0, 7.0, k) * s
        b = rng.uniform(1.0, 1.5, k) * s
        cy, cx = rng.uniform(0, size, (2, k))
        theta = rng.uniform(0, np.pi) + rng.normal(0, 0.15, k)
    else:  # ring of nuclei around a pale lumen
        k = rng.integers(14, 20)
        radius = rng.uniform(0.22, 0.32) * size
        centre = rng.uniform(0.35, 0.65, 2) * size
        angle = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = radius + rng.normal(0, 1.0 * s, k)
        cy, cx = centre[0] + r * np.sin(angle), centre[1] + r * np.cos(angle)
        a = rng.uniform(2.0, 2.8, k) * s
        b = a * rng.uniform(0.6, 0.9, k)
        theta = angle + np.pi / 2
        lumen = (centre, radius * 0.8)
    return (cy, cx, a, b, theta), lumen


def _stain(rng: np.random.Generator, reference: np.ndarray) -> np.ndarray:
    vector = np.clip(reference + rng.normal(0, 0.2, 3), 0.02, None)
    return vector / np.linalg.norm(vector)


def render_tile(rng: np.random.Generator, label: int, size: int = 64) -> np.ndarray:
    """Render one H x W x 3 uint8 tile of class ``label``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    unit_y, unit_x = yy / size, xx / size
    tissue = rng.uniform(0.3, 0.8) + 0.25 * _smooth_field(rng, unit_y, unit_x)
    params, lumen = _nuclei(rng, label, size)
    nuclei = np.clip(_ellipses(yy, xx, *params), 0, 1.5)
    if lumen is not None:
        (cy, cx), radius = lumen
        inside = np.hypot(yy - cy, xx - cx) < radius
        tissue = np.where(inside, 0.08, tissue)
    h_strength, e_strength = rng.uniform(0.8, 1.8), rng.uniform(0.4, 1.2)
    optical_density = tissue[..., None] * e_strength * _stain(rng, EOSIN) + nuclei[
        ..., None
    ] * h_strength * _stain(rng, HEMATOXYLIN)  # H x W x 3
    rgb = np.exp(-optical_density)
    illumination = 1 + 0.5 * _smooth_field(rng, unit_y, unit_x, waves=2)
    rgb = rgb * illumination[..., None] * rng.uniform(0.7, 1.2)
    rgb = rgb + rng.normal(0, rng.uniform(0.01, 0.06), rgb.shape)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def generate(num_images: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_images`` tiles (N x H x W x 3 uint8) and labels (N,), classes balanced (label = i mod 4)."""
    labels = np.arange(num_images) % len(CLASS_NAMES)
    images = np.stack(
        [render_tile(np.random.default_rng([seed, i]), int(labels[i]), size) for i in range(num_images)]
    )
    return images, labels
