"""The data a run reads, decoded once: which dataset and how (:class:`DataRequest`), and the decoded splits with
their timm data config (:class:`RunData`).

A request is the data part of a run's configuration (``RunConfig.data()``, ``RunConfig.labelled_data()``) or an
evaluation's choice (another dataset or folder); :func:`load_run_data` reads the dataset, draws or reuses the
split, and decodes every split once at the cache size into RAM or the disk cache (:mod:`zoo.data.cache`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoo.data.dataset import MedicalDataset, load_dataset
from zoo.data.splits import DEFAULT_SPLIT_SEED
from zoo.data.transforms import eval_transform

__all__ = [
    "CACHE_CHOICES",
    "DEFAULT_CACHE",
    "DISK_CACHE_ABOVE",
    "DataRequest",
    "RunData",
    "cache_size_of",
    "default_cache_size",
    "load_run_data",
    "make_data_config",
]

CACHE_CHOICES = ("auto", "memory", "disk")
DEFAULT_CACHE = "auto"
DISK_CACHE_ABOVE = 2 * 1024**3  # decoded bytes above which cache="auto" decodes a folder dataset to disk


@dataclass(frozen=True)
class DataRequest:
    """Which data to read and how to decode it: the dataset (its root and options), the channels, the split (seed,
    grouping, a manifest to reuse), the encoder's input size, the decoding size and where decoded images live."""

    dataset: str
    image_size: int
    data_root: str | None = None
    dataset_options: Mapping = field(default_factory=dict)
    channels: int | None = None
    grouped_split: bool = False
    split_seed: int = DEFAULT_SPLIT_SEED
    split_manifest: str | None = None
    cache_size: int | None = None
    cache: str = DEFAULT_CACHE

    def replace(self, **changes) -> DataRequest:
        return dataclasses.replace(self, **changes)


def default_cache_size(dataset: str, image_size: int, cache_size: int | None = None) -> int:
    """The resolution images are decoded at: ``cache_size``, else the image size for the synthetic tiles (they
    are rendered at it) and image size × 8/7 otherwise (256 for 224, the usual eval resize)."""
    return cache_size or (image_size if dataset == "synthetic" else round(image_size * 8 / 7))


def make_data_config(dataset: MedicalDataset, image_size: int, cache_size: int) -> dict:
    """The timm data config of a run: what its encoder expects (input size, mean/std of the dataset as loaded,
    crop_pct = image size / cache size, so that the eval resize, floor(image size / crop_pct), is the cache size;
    bilinear)."""
    crop_pct = image_size / cache_size
    if (
        math.floor(image_size / crop_pct) < cache_size
    ):  # e.g. 443 / (443 / 506) = 505.99…: timm's floor gives 505
        crop_pct = math.nextafter(crop_pct, 0.0)
    return {
        "input_size": (dataset.channels, image_size, image_size),
        "crop_pct": crop_pct,
        "interpolation": "bilinear",
        "mean": tuple(dataset.mean),
        "std": tuple(dataset.std),
    }


def cache_size_of(data_config: Mapping) -> int:
    """The inverse of :func:`make_data_config`: the resolution the run decoded its images at."""
    return round(data_config["input_size"][1] / data_config.get("crop_pct", 1.0))


@dataclass
class RunData:
    """A dataset with each split decoded once at the cache size, and its data config.

    Shape:
        train, val, test: (uint8 N x C x S x S images, N labels).
    """

    dataset: MedicalDataset
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    data_config: dict

    @property
    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def eval_transform(self):
        return eval_transform(self.data_config)


def load_run_data(
    request: DataRequest,
    *,
    manifest: str | Path | None = None,
    data_root: str | Path | None = None,
    data_config: Mapping | None = None,
) -> RunData:
    """Load and decode the data of ``request``.

    ``manifest`` (default: the request's ``split_manifest``) reuses a split instead of drawing one; ``data_root``
    overrides the request's folder; ``data_config`` (a finished run's) fixes the cache size and normalisation
    instead of deriving them.
    """
    size = (
        cache_size_of(data_config)
        if data_config
        else default_cache_size(request.dataset, request.image_size, request.cache_size)
    )
    options = dict(request.dataset_options)
    if request.dataset == "synthetic":
        options.setdefault("size", size)  # the tiles are rendered at the cache size
    ds = load_dataset(
        request.dataset,
        data_root or request.data_root,
        channels=request.channels,
        grouped=request.grouped_split,
        seed=request.split_seed,
        manifest=manifest or request.split_manifest,
        **options,
    )
    cache = _cache_kind(request.cache, ds, size)
    splits = {s: ds.decode(s, size, cache=cache, progress=cache == "disk") for s in ("train", "val", "test")}
    config = dict(data_config) if data_config else make_data_config(ds, request.image_size, size)
    return RunData(ds, splits["train"], splits["val"], splits["test"], config)


def _cache_kind(requested: str, dataset: MedicalDataset, size: int) -> str:
    """``auto``: a memory-mapped disk cache for folder datasets larger than ``DISK_CACHE_ABOVE`` decoded, RAM
    otherwise (in-memory kinds, MedMNIST and synthetic, are in RAM anyway)."""
    if requested != "auto":
        return requested
    decoded = len(dataset.records) * dataset.channels * size * size
    return "disk" if dataset.base is not None and decoded > DISK_CACHE_ABOVE else "memory"
