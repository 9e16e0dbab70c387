"""The input pipeline: cached uint8 images → batches → augmented views, kept off the training step's critical path.

- Batches are gathered with one indexing operation (``images[indices]``) instead of stacking N items, from RAM or
  the memory-mapped disk cache.
- On GPUs the batches are pinned, copied without blocking (Accelerate sends batch N+1 while N is used), and the
  next batch's views are made on a side CUDA stream while the current step runs, so augmentation overlaps with the
  forward/backward pass. On CPUs everything runs in order (the cores are busy with the step anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["IndexedImages", "GatherCollate", "make_loader", "ViewPipeline"]


class IndexedImages(Dataset):
    """Indices into a cached uint8 tensor (N x C x H x W); :class:`GatherCollate` gathers a batch at once."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> int:
        return i


class GatherCollate:
    """``(images[indices], indices)``: one gather (not N tensors stacked), the index keying the augmentation."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __call__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor(indices, dtype=torch.long)
        return self.images[ids], ids  # B x C x H x W uint8, B


def make_loader(images: torch.Tensor, batch_size: int, pin_memory: bool, workers: int = 0) -> DataLoader:
    """A shuffled loader of global batches (Accelerate splits them across processes and reseeds per epoch)."""
    return DataLoader(
        IndexedImages(images),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=GatherCollate(images),
        pin_memory=pin_memory,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


class ViewPipeline:
    """Yields the views of each batch; on CUDA the next batch's views are computed on a side stream while the
    caller runs the current step (the classic prefetcher: the main stream waits for the side stream, tensors are
    marked as used by the main stream so their memory is not reused early).

    Args:
        make_views: ``(images, ids, epoch) -> tuple of view tensors`` (a function of the inputs only).
        device: where the batches live (the loader put them there).
    """

    def __init__(self, make_views: Callable[[torch.Tensor, torch.Tensor, int], tuple], device: torch.device):
        self.make_views = make_views
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, batches: Iterable, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.stream is None:
            for images, ids in batches:
                yield self.make_views(images, ids, epoch)
            return
        iterator = iter(batches)
        pending = self._prepare(next(iterator, None), epoch)
        while pending is not None:
            torch.cuda.current_stream().wait_stream(self.stream)
            views = pending
            for v in views:
                v.record_stream(torch.cuda.current_stream())
            pending = self._prepare(next(iterator, None), epoch)  # enqueued now, runs during the step
            yield views

    def _prepare(self, batch, epoch: int) -> tuple[torch.Tensor, ...] | None:
        if batch is None:
            return None
        images, ids = batch
        self.stream.wait_stream(torch.cuda.current_stream())  # the loader's copy of this batch
        with torch.cuda.stream(self.stream):
            return self.make_views(images, ids, epoch)
