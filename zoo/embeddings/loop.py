"""The embedding loop: decode in worker processes, forward on the device, write each shard whole.

Batches never cross a shard and are cut the same way whatever the number of processes (shard k's files in
steps of ``batch_size`` from its first), so each shard's bytes depend only on the plan and the batch size: two
processes write what one writes. Images are decoded and transformed in ``torch.utils.data.DataLoader`` worker
processes (``prefetch_factor`` batches each: bounded), pinned and copied without blocking on a GPU, in
channels_last, under bf16 autocast only where it is fast (:func:`zoo.runtime.bf16_is_fast`, decided by the
caller). A shard's features stay on the device until the shard is complete — one host synchronisation per
shard, none per batch. Files that cannot be read (or changed since the scan) are skipped, and named with the
reason in the shard's header. Memory: the prefetched batches and one shard's features, whatever the archive.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.data.images import ImageDecodeError
from zoo.data.transforms import eval_transform
from zoo.embeddings.format import ShardHeader, read_shard_header, shard_name, write_shard
from zoo.embeddings.plan import Plan

__all__ = ["LoopSettings", "Shard", "ShardBatches", "embed_shards", "shards_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Shard ``index``: the files ``start .. stop - 1`` of the plan."""

    index: int
    start: int
    stop: int

    @property
    def files(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class LoopSettings:
    plan: str  # the plan id written into every shard
    device: torch.device
    bf16: bool
    batch_size: int
    workers: int
    dtype: torch.dtype
    progress: bool | None
    label: str = ""  # shown in the progress bar (``process 2 of 4``)


def shards_of(count: int, shard_size: int) -> list[Shard]:
    return [Shard(k, s, min(count, s + shard_size)) for k, s in enumerate(range(0, count, shard_size))]


class ShardBatches:
    """The batch sampler: positions in batches of ``batch_size`` from each shard's first file (the last of a
    shard may be short), made as they are asked for (no list of every position of the archive)."""

    def __init__(self, shards: list[Shard], batch_size: int):
        self.shards, self.batch_size = shards, batch_size

    def __iter__(self):
        for shard in self.shards:
            for s in range(shard.start, shard.stop, self.batch_size):
                yield list(range(s, min(shard.stop, s + self.batch_size)))

    def __len__(self) -> int:
        return sum(-(-shard.files // self.batch_size) for shard in self.shards)


def _reason(error: Exception, path: Path | None) -> str:
    """The error without the file's absolute path in front (the report names the file)."""
    text = str(error) or type(error).__name__
    prefix = f"{path}: "
    return text[len(prefix) :] if path is not None and text.startswith(prefix) else text


class _Images(Dataset):
    """Item ``i``: (i, the transformed image or None, why it was skipped)."""

    def __init__(self, plan: Plan, transform):
        self.plan, self.transform = plan, transform

    def __len__(self) -> int:
        return self.plan.count

    def _changed(self, i: int, path: Path | None) -> str:
        if path is None:
            return ""
        info = os.stat(path)
        _, size, mtime_ns, *_ = self.plan.rows[i]
        return "" if (info.st_size, info.st_mtime_ns) == (size, mtime_ns) else "changed since the scan"

    def __getitem__(self, i: int):
        path = self.plan.file_path(i)
        try:
            why = self._changed(i, path)
            return (i, None, why) if why else (i, self.transform(self.plan.dataset.read(i)), "")
        except (ImageDecodeError, OSError, ValueError) as e:
            return i, None, _reason(e, path)


def _collate(items):
    """(positions, images of the readable ones stacked, [(position, reason)] of the others)."""
    good = [x for _, x, _ in items if x is not None]
    images = torch.stack(good) if good else torch.empty(0)
    return [i for i, _, _ in items], images, [(i, why) for i, x, why in items if x is None]


class _ShardBuffer:
    """One shard's features on the device, filled batch by batch."""

    def __init__(self, shard: Shard, width: int, device: torch.device):
        self.shard, self.rows = shard, torch.empty(shard.files, width, device=device)
        self.filled, self.seen, self.skipped = 0, 0, []

    def add(self, features: torch.Tensor | None, positions: list[int], bad: list[tuple[int, str]]) -> None:
        if features is not None:
            self.rows[self.filled : self.filled + len(features)] = features
            self.filled += len(features)
        self.seen += len(positions)
        self.skipped += [(i - self.shard.start, why) for i, why in bad]

    @property
    def complete(self) -> bool:
        return self.seen == self.shard.files

    def write(self, out: Path, settings: LoopSettings) -> ShardHeader:
        rows = self.rows[: self.filled].to("cpu", settings.dtype)  # the one host synchronisation of a shard
        if not torch.isfinite(rows).all():
            kind = "float16 overflowed" if settings.dtype == torch.float16 else "the model gave NaN or inf"
            raise ValueError(
                f"shard {self.shard.index}: {kind}; embed with --dtype float32 or check the model"
            )
        path = out / shard_name(self.shard.index)
        write_shard(
            path, rows, settings.plan, self.shard.index, self.shard.start, self.shard.files, self.skipped
        )
        return read_shard_header(path)


def _loader(plan: Plan, data_config: dict, shards: list[Shard], settings: LoopSettings) -> DataLoader:
    workers = settings.workers
    return DataLoader(
        _Images(plan, eval_transform(data_config)),
        batch_sampler=ShardBatches(shards, settings.batch_size),
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=settings.device.type == "cuda",
        prefetch_factor=2 if workers else None,
    )


def _forward(model: torch.nn.Module, images: torch.Tensor, settings: LoopSettings) -> torch.Tensor:
    x = images.to(settings.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.autocast(settings.device.type, dtype=torch.bfloat16, enabled=settings.bf16):
        return model(x).float()


def _eta(done: int, total: int, started: float) -> str:
    rate = done / max(time.perf_counter() - started, 1e-9)
    left = (total - done) / rate if rate > 0 else math.inf
    eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "?"
    return f"{rate:.1f} images/s, ETA {eta}"


def embed_shards(
    model: torch.nn.Module,
    plan: Plan,
    data_config: dict,
    shards: list[Shard],
    out: Path,
    settings: LoopSettings,
) -> Iterator[ShardHeader]:
    """Embed ``shards`` (in order) and write each whole; yields each shard's header once it is written."""
    if not shards:
        return
    total, done, started = sum(s.files for s in shards), 0, time.perf_counter()
    pending = iter(shards)
    buffer = _ShardBuffer(next(pending), int(model.num_features), settings.device)
    disable = None if settings.progress is None else not settings.progress  # None: only on a terminal
    bar = tqdm(
        total=total, unit="img", desc=f"embedding{settings.label}", disable=disable, dynamic_ncols=True
    )
    with torch.inference_mode(), bar:
        for positions, images, bad in _loader(plan, data_config, shards, settings):
            buffer.add(_forward(model, images, settings) if len(images) else None, positions, bad)
            done += len(positions)
            bar.update(len(positions))
            if buffer.complete:
                header = buffer.write(out, settings)
                log.info(
                    "%s written (%d images, %d skipped): %s",
                    shard_name(header.shard),
                    header.rows,
                    len(header.skipped),
                    _eta(done, total, started),
                )
                yield header
                shard = next(pending, None)
                buffer = shard and _ShardBuffer(shard, buffer.rows.shape[1], settings.device)
