"""Two-view SSL augmentations and the evaluation transform, on uint8 tensors (torchvision transforms v2).

Every transform takes a uint8 C x H x W tensor (what :meth:`MedicalDataset.read` and ``decode`` return) and
returns a normalised float tensor. Pre-training uses :class:`zoo.data.batch_augment.BatchAugment`, the same
policies vectorised over a batch; these per-image versions are for users' own pipelines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from zoo.data.augment_policies import blur_kernel, get_policy

__all__ = ["ssl_transform", "eval_transform", "eval_resize_size", "TwoViews"]


class TwoViews:
    """Apply ``transform`` twice to one image: ``(view1, view2)``."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(image), self.transform(image)


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def ssl_transform(
    image_size: int,
    channels: int = 3,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    policy: str = "simclr",
    paper_mode: bool = False,
    crop_scale: tuple[float, float] | None = None,
    view: int = 0,
) -> v2.Compose:
    """One augmented view, for SSL pre-training (see :mod:`zoo.data.augment_policies`).

    Policies:
        ``simclr`` (default): Chen et al. 2020, Appendix A — RandomResizedCrop(scale 0.08-1), flip,
            ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2, Gaussian blur (kernel 10 % of the size)
            p=0.5. Colour steps (saturation, hue, grayscale) are left out for 1-channel data.
        ``original``: the original study's policy — ColorJitter(0.4, 0.4, 0.2, 0.1) always, grayscale p=0.2,
            blur(23) p=0.5, solarize(128) p=0.1.
        ``byol``: Grill et al. 2020, Table 6 (also MoCo v3's and DINO's) — ColorJitter(0.4, 0.4, 0.2, 0.1) p=0.8,
            grayscale p=0.2, asymmetric: ``view`` 0 blur p=1.0, view 1 blur p=0.1 and solarize p=0.2, views 2+
            (DINO's local crops) blur p=0.5.

    ``paper_mode=True`` means the ``original`` policy with its crop scale (0.08, 0.1), as the study ran it.

    """
    r = get_policy(policy, paper_mode, crop_scale).for_view(view)

    brightness, contrast, saturation, hue = r.jitter
    jitter = (
        v2.ColorJitter(brightness, contrast, saturation, hue)
        if channels == 3
        else v2.ColorJitter(brightness, contrast)
    )
    ops: list = [
        v2.RandomResizedCrop(image_size, scale=r.crop_scale, ratio=r.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([jitter], p=r.jitter_p),
    ]
    ops += [v2.RandomGrayscale(p=r.grayscale_p)] if channels == 3 else []
    ops += [v2.RandomApply([v2.GaussianBlur(blur_kernel(r, image_size), sigma=r.blur_sigma)], p=r.blur_p)]
    ops += [v2.RandomSolarize(128, p=r.solarize_p)] if r.solarize_p else []
    return v2.Compose(ops + _normalise(mean, std))


def eval_resize_size(data_config: dict) -> int:
    """The short side an image is resized to before the centre crop: ``floor(size / crop_pct)``, the rule of timm's
    eval transform (``transforms_imagenet_eval``), so a model's metrics, its embeddings, the demo and a user's
    ``timm.data.create_transform`` see the same pixels."""
    _, height, width = data_config["input_size"]
    crop_pct = data_config.get("crop_pct", 1.0) or 1.0
    return math.floor(min(height, width) / crop_pct)


def eval_transform(data_config: dict) -> v2.Compose:
    """The deterministic evaluation transform of a timm data config (``input_size``, ``crop_pct``,
    ``interpolation``, ``mean``, ``std``) for uint8 C x H x W tensors: resize the short side to
    :func:`eval_resize_size`, centre-crop, normalise."""
    _, height, width = data_config["input_size"]
    interpolation = v2.InterpolationMode(data_config.get("interpolation", "bilinear"))
    return v2.Compose(
        [
            v2.Resize(eval_resize_size(data_config), interpolation=interpolation, antialias=True),
            v2.CenterCrop((height, width)),
            *_normalise(data_config["mean"], data_config["std"]),
        ]
    )
