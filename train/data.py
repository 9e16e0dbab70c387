"""The pre-training data: the run's dataset decoded once into uint8 tensors (RAM or the disk cache)."""

from __future__ import annotations

import logging
from pathlib import Path

from medssl_zoo.train.config import PretrainConfig
from zoo.data.run_data import RunData, load_run_data

__all__ = ["load_pretrain_data"]

log = logging.getLogger("train")


def load_pretrain_data(
    cfg: PretrainConfig, manifest: Path | None = None, manifest_out: Path | None = None
) -> RunData:
    """Load and split the dataset (``manifest``: reuse a split, e.g. the run's own when resuming), write its
    manifest to ``manifest_out``, decode train/val/test once at the cache size."""
    data = load_run_data(cfg.data(), manifest=manifest)
    if manifest_out is not None:
        data.dataset.write_manifest(manifest_out)
    n_train = len(data.train[0])
    if n_train < cfg.batch_size:
        raise ValueError(
            f"the train split has {n_train} images, fewer than one batch of {cfg.batch_size}; lower batch_size"
        )
    log.info(
        "%s: %s images per split, cached at %d px",
        cfg.dataset,
        {s: len(v[0]) for s, v in data.splits.items()},
        data.train[0].shape[-1],
    )
    return data
