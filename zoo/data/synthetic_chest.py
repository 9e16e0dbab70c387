"""Procedural chest-X-ray-like images with the 14 ChestMNIST findings as labels: a multi-label task without a
download (ChestX-ray14 and ChestMNIST cannot be downloaded here).

Each image is a grayscale frontal "radiograph": a bright thorax with two dark lung fields, the spine, ribs, the
heart and the diaphragm, under random contrast, brightness, pose and noise. Each finding is drawn where a
radiologist would look for it — an enlarged heart, fluid blunting a costophrenic angle, a round nodule or mass,
patchy infiltrates, a dark rim without lung markings, reticular lines, … — independently with its own
prevalence (ChestMNIST's shares, each at least :data:`MIN_PREVALENCE` so that small sets hold every finding), so
several findings appear together as in the real data. It is a stand-in for pipelines and tests, not a model of
disease. Deterministic: image ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import numpy as np

from zoo.data.dataset import MEDMNIST_LABELS

__all__ = ["FINDINGS", "PREVALENCE", "generate", "render_chest"]

FINDINGS = MEDMNIST_LABELS["chestmnist"]  # MedMNIST v2's chestmnist label names, in its order
MIN_PREVALENCE = 0.04
# ChestMNIST's training shares (NIH ChestX-ray14), raised to MIN_PREVALENCE
PREVALENCE = tuple(
    max(MIN_PREVALENCE, p)
    for p in (
        0.103,
        0.025,
        0.119,
        0.178,
        0.051,
        0.056,
        0.012,
        0.047,
        0.042,
        0.021,
        0.022,
        0.015,
        0.030,
        0.002,
    )
)


def _blob(yy, xx, cy, cx, ry, rx, sharp: float = 6.0) -> np.ndarray:
    """A soft filled ellipse in [0, 1]."""
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    return 1 / (1 + np.exp(np.clip(sharp * (d - 1), -30, 30)))


def _anatomy(rng, yy, xx, findings: set[int]) -> tuple[np.ndarray, tuple[float, float]]:
    """The normal chest (density: bright = dense) and the lungs' half-width and height, changed by the findings
    that change anatomy (cardiomegaly, emphysema, hernia)."""
    lung_w, lung_h = rng.uniform(0.28, 0.34), rng.uniform(0.55, 0.65) * (1.12 if 10 in findings else 1.0)
    body = _blob(yy, xx, 0.05, 0, 1.05, 0.85, 4)
    lungs = sum(_blob(yy, xx, -0.05, s * 0.36, lung_h, lung_w) for s in (-1, 1))
    density = 0.75 * body - (0.85 if 10 in findings else 0.6) * lungs
    density += 0.35 * np.exp(-((xx / 0.07) ** 2)) * (yy > -0.8)  # spine
    for k in range(7):  # ribs: arcs across each lung
        arc = yy - (-0.6 + 0.18 * k + 0.25 * xx**2)
        density += 0.12 * np.exp(-((arc / 0.025) ** 2)) * lungs
    heart = 0.30 if 1 in findings else 0.20
    density += 0.5 * _blob(yy, xx, 0.32, -0.08, heart * 0.9, heart * 1.2)
    density += 0.45 * (yy > 0.62 + 0.1 * xx**2)  # diaphragm
    if 13 in findings:  # hernia: a dense bulge above the diaphragm, midline
        density += 0.5 * _blob(yy, xx, 0.55, 0.05, 0.12, 0.16)
    return density, (lung_w, lung_h)


def _findings(rng, yy, xx, findings: set[int], lungs: tuple[float, float]) -> np.ndarray:
    """The density each finding adds inside the lung fields."""
    w, h = lungs
    side = rng.choice((-1, 1))
    cx = side * 0.36
    out = np.zeros_like(yy)
    draw = {
        0: lambda: 0.35 * _blob(yy, xx, 0.35, cx, 0.06, w * 0.8),  # atelectasis: a dense band low in a lung
        2: lambda: 0.6 * _blob(yy, xx, 0.58, cx + side * 0.1, 0.14, w * 0.7),  # effusion: a blunted angle
        3: lambda: 0.3 * (rng.random(yy.shape) > 0.6) * _blob(yy, xx, rng.uniform(-0.3, 0.3), cx, 0.25, w),
        4: lambda: 0.7 * _blob(yy, xx, rng.uniform(-0.3, 0.2), cx, 0.12, 0.12),  # mass
        5: lambda: 0.8 * _blob(yy, xx, rng.uniform(-0.4, 0.3), cx + rng.uniform(-0.1, 0.1), 0.045, 0.045),
        6: lambda: 0.35 * _blob(yy, xx, rng.uniform(-0.2, 0.3), cx, 0.25, w * 0.8, 2),  # pneumonia: haze
        7: lambda: -0.4 * _blob(yy, xx, -0.2, cx + side * 0.18, h * 0.8, 0.08),  # pneumothorax: a dark rim
        8: lambda: 0.6 * _blob(yy, xx, rng.uniform(-0.1, 0.3), cx, 0.15, w * 0.6, 12),  # consolidation
        9: lambda: (
            0.3 * sum(_blob(yy, xx, 0.05, s * 0.2, 0.25, 0.15, 2) for s in (-1, 1))
        ),  # edema: perihilar
        11: lambda: 0.25 * (np.sin(40 * xx + 25 * yy) > 0.7) * _blob(yy, xx, 0.2, cx, 0.3, w),  # fibrosis
        12: lambda: 0.4 * _blob(yy, xx, -0.05, cx + side * 0.3, h, 0.05),  # pleural thickening: a bright rim
    }
    for label, paint in draw.items():
        if label in findings:
            out += paint()
    return out


def render_chest(rng: np.random.Generator, findings: set[int], size: int = 64) -> np.ndarray:
    """One H x W uint8 chest image showing ``findings`` (indices into :data:`FINDINGS`)."""
    grid = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    angle, shift = rng.normal(0, 0.05), rng.normal(0, 0.04, 2)
    yy, xx = (
        np.cos(angle) * yy - np.sin(angle) * xx + shift[0],
        np.sin(angle) * yy + np.cos(angle) * xx + shift[1],
    )
    density, lungs = _anatomy(rng, yy, xx, findings)
    density = density + _findings(rng, yy, xx, findings, lungs)
    image = rng.uniform(0.15, 0.3) + rng.uniform(0.6, 0.9) * density
    image = image + rng.normal(0, rng.uniform(0.01, 0.04), image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def generate(num_images: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_images`` images (N x H x W uint8) and their labels (N x 14 uint8, 0 / 1), each finding drawn
    independently with its :data:`PREVALENCE`."""
    images = np.empty((num_images, size, size), np.uint8)
    labels = np.zeros((num_images, len(FINDINGS)), np.uint8)
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        labels[i] = rng.random(len(FINDINGS)) < np.array(PREVALENCE)
        images[i] = render_chest(rng, set(np.flatnonzero(labels[i]).tolist()), size)
    return images, labels
