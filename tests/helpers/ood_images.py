"""Images unlike the synthetic histology tiles, for the out-of-distribution checks (tests and bench): pydicom's CT
and MR test slices (crops and flips of them), gray chest-X-ray-like images and flat noise. Each kind is a list of
uint8 C x H x W tensors (``channels`` 3 or 1), deterministic."""

from __future__ import annotations

import numpy as np
import torch

from zoo.data import read_image
from zoo.data.synthetic_chest import generate

DICOM_FILES = {"CT": ("CT_small.dcm",), "MR": ("MR_small.dcm", "examples_overlay.dcm")}
KINDS = ("CT", "MR", "X-ray-like", "flat noise")


def _views(image: torch.Tensor, count: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """``count`` square crops (60-100 % of the short side, anywhere) of ``image``, some flipped."""
    _, h, w = image.shape
    out = []
    for _ in range(count):
        side = int(min(h, w) * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = image[:, y : y + side, x : x + side]
        out.append(crop.flip(-1).contiguous() if rng.random() < 0.5 else crop.contiguous())
    return out


def dicom_images(kind: str, count: int = 40, channels: int = 3) -> list[torch.Tensor]:
    from pydicom.data import get_testdata_file

    rng = np.random.default_rng(0)
    files = DICOM_FILES[kind]
    slices = [read_image(get_testdata_file(name), channels) for name in files]
    return [
        v
        for s, n in zip(slices, np.array_split(np.arange(count), len(files)), strict=True)
        for v in _views(s, len(n), rng)
    ]


def xray_like_images(count: int = 40, channels: int = 3, size: int = 128) -> list[torch.Tensor]:
    images, _ = generate(count, size, seed=7)
    return [torch.from_numpy(i)[None].expand(channels, -1, -1).contiguous() for i in images]


def flat_noise_images(count: int = 40, channels: int = 3, size: int = 96) -> list[torch.Tensor]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        level = rng.uniform(20, 235, (channels, 1, 1))
        noisy = level + rng.normal(0, rng.uniform(2, 20), (channels, size, size))
        out.append(torch.from_numpy(np.clip(noisy, 0, 255).round().astype(np.uint8)))
    return out


def ood_images(kind: str, count: int = 40, channels: int = 3) -> list[torch.Tensor]:
    if kind in DICOM_FILES:
        return dicom_images(kind, count, channels)
    if kind == "X-ray-like":
        return xray_like_images(count, channels)
    return flat_noise_images(count, channels)


def model_inputs(model: torch.nn.Module, images: list[torch.Tensor]) -> torch.Tensor:
    """The images as the demo feeds them: each through the model's own eval transform
    (:func:`zoo.data.transforms.eval_transform` of its timm data config: resize, centre crop, normalise), one
    batch. ``images``: uint8 C x H x W with the model's channels."""
    import timm

    from zoo.data.transforms import eval_transform

    transform = eval_transform(timm.data.resolve_data_config({}, model=model))
    return torch.stack([transform(i) for i in images])


def ood_table(model: torch.nn.Module, test_images: torch.Tensor, count: int = 40) -> dict:
    """The in-distribution false-alarm rate (``test_images``: the run's test split, uint8 N x C x H x W) and, per
    out-of-distribution kind, the AUROC of the score against the test split and the share flagged."""
    from sklearn.metrics import roc_auc_score

    channels = model.pretrained_cfg["input_size"][0]
    inside = model.ood_score(model_inputs(model, list(test_images))).numpy()
    table = {
        "in-distribution": {"images": len(inside), "flagged": float((inside > model.ood.threshold).mean())}
    }
    for kind in KINDS:
        outside = model.ood_score(model_inputs(model, ood_images(kind, count, channels))).numpy()
        labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
        table[kind] = {
            "images": len(outside),
            "auroc": float(roc_auc_score(labels, np.r_[inside, outside])),
            "flagged": float((outside > model.ood.threshold).mean()),
        }
    return table
