"""Two-view SSL augmentations and the evaluation transform, on uint8 tensors (torchvision transforms v2).

Every transform takes a uint8 C x H x W tensor (what :meth:`MedicalDataset.read` and ``decode`` return) and
returns a normalised float tensor, so datasets can be decoded once, cached as uint8, and augmented per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["ssl_transform", "eval_transform", "TwoViews", "RECIPES"]

RECIPES = ("simclr", "original")
STANDARD_CROP_SCALE = (0.08, 1.0)
PAPER_CROP_SCALE = (0.08, 0.1)  # the original study's RandomResizedCrop scale (a typo for (0.08, 1.0))


class TwoViews:
    """Apply ``transform`` twice to one image: ``(view1, view2)``."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(image), self.transform(image)


def _blur_kernel(size: int, fraction: float = 0.1) -> int:
    k = max(3, int(size * fraction))
    return k if k % 2 else k + 1


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def ssl_transform(
    image_size: int,
    channels: int = 3,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    recipe: str = "simclr",
    paper_mode: bool = False,
    crop_scale: tuple[float, float] | None = None,
) -> v2.Compose:
    """One augmented view, for SSL pre-training.

    Recipes:
        ``simclr`` (default): Chen et al. 2020, Appendix A — RandomResizedCrop(scale 0.08-1), flip,
            ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2, Gaussian blur (kernel 10 % of the size)
            p=0.5. Colour steps are left out for 1-channel data.
        ``original``: the original study's recipe — crop, flip, ColorJitter(0.4, 0.4, 0.2, 0.1) always,
            grayscale p=0.2, blur(23) p=0.5, solarize(128) p=0.1.

    ``paper_mode=True`` means the ``original`` recipe with its crop scale (0.08, 0.1), as the study ran it.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    if paper_mode:
        recipe, crop_scale = "original", crop_scale or PAPER_CROP_SCALE
    scale = crop_scale or STANDARD_CROP_SCALE
    ops: list = [v2.RandomResizedCrop(image_size, scale=scale, antialias=True), v2.RandomHorizontalFlip()]
    colour = channels == 3
    if recipe == "simclr":
        jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.1) if colour else v2.ColorJitter(0.4, 0.4)
        ops += [v2.RandomApply([jitter], p=0.8)]
        ops += [v2.RandomGrayscale(p=0.2)] if colour else []
        ops += [v2.RandomApply([v2.GaussianBlur(_blur_kernel(image_size), sigma=(0.1, 2.0))], p=0.5)]
    else:
        ops += [v2.ColorJitter(0.4, 0.4, 0.2, 0.1) if colour else v2.ColorJitter(0.4, 0.4)]
        ops += [v2.RandomGrayscale(p=0.2)] if colour else []
        ops += [v2.RandomApply([v2.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5), v2.RandomSolarize(128, p=0.1)]
    return v2.Compose(ops + _normalise(mean, std))


def eval_transform(data_config: dict) -> v2.Compose:
    """The deterministic evaluation transform of a timm data config (``input_size``, ``crop_pct``,
    ``interpolation``, ``mean``, ``std``): resize the short side to size / crop_pct, centre-crop, normalise."""
    _, height, width = data_config["input_size"]
    crop_pct = data_config.get("crop_pct", 1.0) or 1.0
    resize = int(round(min(height, width) / crop_pct))
    interpolation = v2.InterpolationMode(data_config.get("interpolation", "bilinear"))
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=interpolation, antialias=True),
            v2.CenterCrop((height, width)),
            *_normalise(data_config["mean"], data_config["std"]),
        ]
    )
