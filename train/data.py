"""The pre-training data: a dataset decoded once into uint8 tensors, indexed by a seeded loader."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from train.config import PretrainConfig
from zoo.data import MedicalDataset, eval_transform, load_dataset

log = logging.getLogger("train")


class IndexedImages(Dataset):
    """``(uint8 C x H x W image, index)`` pairs from a cached tensor; the index keys the augmentation."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i


@dataclass
class PretrainData:
    dataset: MedicalDataset
    train: tuple[torch.Tensor, torch.Tensor]  # uint8 N x C x S x S, labels N
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    data_config: dict  # timm-style: input_size, crop_pct, interpolation, mean, std

    @property
    def eval_transform(self):
        return eval_transform(self.data_config)


def cache_size(cfg: PretrainConfig) -> int:
    return cfg.cache_size or (cfg.image_size if cfg.dataset == "synthetic" else round(cfg.image_size * 8 / 7))


def load_pretrain_data(cfg: PretrainConfig, manifest_out: Path | None = None) -> PretrainData:
    """Load and split the dataset, write its manifest, decode train/val/test once at the cache size."""
    options = dict(cfg.dataset_options)
    if cfg.dataset == "synthetic":
        options.setdefault("size", cache_size(cfg))
    ds = load_dataset(
        cfg.dataset,
        cfg.data_root,
        channels=cfg.channels,
        grouped=cfg.grouped_split,
        seed=cfg.split_seed,
        manifest=cfg.split_manifest,
        **options,
    )
    if manifest_out is not None:
        ds.write_manifest(manifest_out)
    size = cache_size(cfg)
    splits = {s: ds.decode(s, size) for s in ("train", "val", "test")}
    n_train = len(splits["train"][0])
    if n_train < cfg.batch_size:
        raise ValueError(
            f"the train split has {n_train} images, fewer than one batch of {cfg.batch_size}; lower batch_size"
        )
    log.info(
        "%s: %s images per split, cached at %d px",
        cfg.dataset,
        {s: len(v[0]) for s, v in splits.items()},
        size,
    )
    data_config = {
        "input_size": (ds.channels, cfg.image_size, cfg.image_size),
        "crop_pct": cfg.image_size / size,
        "interpolation": "bilinear",
        "mean": tuple(ds.mean),
        "std": tuple(ds.std),
    }
    return PretrainData(ds, splits["train"], splits["val"], splits["test"], data_config)
