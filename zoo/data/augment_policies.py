"""The SSL augmentation policies as data, shared by the per-image and the batched implementations.

("Recipe" in this project means a YAML training configuration in ``train/recipes``; an augmentation setting is
a *policy*, as in timm.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "AugmentPolicy",
    "AUGMENT_POLICIES",
    "STANDARD_CROP_SCALE",
    "PAPER_CROP_SCALE",
    "get_policy",
    "blur_kernel",
]

STANDARD_CROP_SCALE = (0.08, 1.0)
PAPER_CROP_SCALE = (0.08, 0.1)  # the original study's RandomResizedCrop scale (a typo for (0.08, 1.0))


@dataclass(frozen=True)
class AugmentPolicy:
    """Probabilities and strengths of one view's augmentations (torchvision semantics)."""

    name: str
    jitter: tuple[float, float, float, float]  # brightness, contrast, saturation, hue
    jitter_p: float
    grayscale_p: float
    blur_p: float
    blur_kernel: int | None  # None: 10 % of the image size, odd
    solarize_p: float
    crop_scale: tuple[float, float] = STANDARD_CROP_SCALE
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # asymmetric policies: view v takes per_view[min(v, len - 1)] (e.g. BYOL's blur 1.0 / 0.1, solarize 0 / 0.2)
    per_view: tuple[dict, ...] = ()

    def for_view(self, view: int) -> AugmentPolicy:
        """The policy of view ``view`` (itself unless the policy is asymmetric)."""
        if not self.per_view:
            return self
        return replace(self, **self.per_view[min(view, len(self.per_view) - 1)], per_view=())


AUGMENT_POLICIES = {
    # Chen et al. 2020 (SimCLR), Appendix A
    "simclr": AugmentPolicy("simclr", (0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.5, None, 0.0),
    # the original study's code (SmallDataSSL): jitter always applied, blur 23, solarize 0.1
    "original": AugmentPolicy("original", (0.4, 0.4, 0.2, 0.1), 1.0, 0.2, 0.5, 23, 0.1),
    # Grill et al. 2020 (BYOL), Table 6, also MoCo v3's and DINO's: asymmetric blur and solarize; DINO's local crops
    # (views 2+) blur 0.5, no solarize
    "byol": AugmentPolicy(
        "byol",
        (0.4, 0.4, 0.2, 0.1),
        0.8,
        0.2,
        1.0,
        None,
        0.0,
        per_view=(
            {"blur_p": 1.0, "solarize_p": 0.0},
            {"blur_p": 0.1, "solarize_p": 0.2},
            {"blur_p": 0.5, "solarize_p": 0.0},
        ),
    ),
}


def get_policy(
    name: str = "simclr", paper_mode: bool = False, crop_scale: tuple[float, float] | None = None
) -> AugmentPolicy:
    """The policy ``name``; ``paper_mode`` = the ``original`` policy with its crop scale (0.08, 0.1)."""
    if name not in AUGMENT_POLICIES:
        raise ValueError(f"unknown augmentation policy {name!r}; valid: {', '.join(AUGMENT_POLICIES)}")
    policy = AUGMENT_POLICIES["original" if paper_mode else name]
    scale = crop_scale or (PAPER_CROP_SCALE if paper_mode else policy.crop_scale)
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {scale}")
    return AugmentPolicy(**{**policy.__dict__, "crop_scale": tuple(scale)})


def blur_kernel(policy: AugmentPolicy, image_size: int) -> int:
    if policy.blur_kernel is not None:
        return policy.blur_kernel
    k = max(3, int(image_size * 0.1))
    return k if k % 2 else k + 1
