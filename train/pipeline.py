"""The input pipeline: cached uint8 images → batches → augmented views, kept off the training step's critical path.

- Batches are gathered with one indexing operation (``images[indices]``) instead of stacking N items, from RAM or
  the memory-mapped disk cache.
- On GPUs the batches are pinned, copied without blocking (Accelerate sends batch N+1 while N is used), and the
  next batch's views are made on a side CUDA stream while the current step runs, so augmentation overlaps with the
  forward/backward pass. On CPUs everything runs in order (the cores are busy with the step anyway); the same
  prefetching order runs there with :class:`InlineStreams`, so it is tested on every machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "IndexedImages",
    "GatherCollate",
    "make_loader",
    "ViewPipeline",
    "MultiCropViews",
    "CudaStreams",
    "InlineStreams",
]


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


class MultiCropViews:
    """The views of a uint8 batch: two global views and ``local_crops`` local ones (multi-crop, DINO), each a
    function of (seed, epoch, sample id, view index) only, so any process or prefetcher makes the same ones.

    Args:
        global_augment: ``(images, ids, epoch, view) -> B x C x S x S`` at the run's image size (views 0, 1).
        local_augment: the same at the local crops' size and scale (views 2, 3, ...).
        local_crops: how many local views.
    """

    def __init__(self, global_augment: Callable, local_augment: Callable, local_crops: int = 0):
        self.global_augment, self.local_augment, self.local_crops = global_augment, local_augment, local_crops

    def __call__(self, images: torch.Tensor, ids: torch.Tensor, epoch: int) -> tuple[torch.Tensor, ...]:
        views = [self.global_augment(images, ids, epoch, view=v) for v in (0, 1)]
        views += [self.local_augment(images, ids, epoch, view=2 + i) for i in range(self.local_crops)]
        return tuple(views)


class CudaStreams:
    """The stream calls of the prefetcher, on a CUDA side stream (the classic prefetcher of NVIDIA's examples)."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device)

    def side(self):
        """The context in which the next batch's views are made (enqueued on the side stream)."""
        return torch.cuda.stream(self.stream)

    def side_waits_for_main(self) -> None:
        self.stream.wait_stream(
            torch.cuda.current_stream()
        )  # the loader's copy of the batch is on the main one

    def main_waits_for_side(self) -> None:
        torch.cuda.current_stream().wait_stream(self.stream)

    def used_by_main(self, tensors: tuple[torch.Tensor, ...]) -> None:
        """Made on the side stream, read on the main one: their memory is not reused before the main one is done."""
        for tensor in tensors:
            tensor.record_stream(torch.cuda.current_stream())

    def used_by_side(self, tensors: tuple[torch.Tensor, ...]) -> None:
        """The batch, copied on the main stream, read on the side one: its memory is not handed to the main stream's
        next allocation (the next batch's copy) before the side stream has read it."""
        for tensor in tensors:
            if tensor.is_cuda:
                tensor.record_stream(self.stream)


class InlineStreams:
    """The same calls on one device queue (a CPU): every call is a no-op, so the prefetching order itself runs on
    any machine (tests force it on to check it against the plain loop)."""

    def side(self):
        return contextlib.nullcontext()

    def side_waits_for_main(self) -> None:
        pass

    def main_waits_for_side(self) -> None:
        pass

    def used_by_main(self, tensors: tuple[torch.Tensor, ...]) -> None:
        pass

    def used_by_side(self, tensors: tuple[torch.Tensor, ...]) -> None:
        pass


class ViewPipeline:
    """Yields the views of each batch. With ``streams`` (on CUDA by default) the next batch's views are made on a
    side stream while the caller runs the current step: the main stream waits for the side stream before the views
    are used, and they are marked as used by the main stream so their memory is not reused early.

    Which batch is an optimizer step's last is decided by the caller from its own count of batches, never from the
    loader's state: the prefetcher takes batch k+1 from the loader before batch k is used (Accelerate's
    end-of-epoch flag is one batch early then; ../shared/notes/gpu.md).

    Args:
        make_views: ``(images, ids, epoch) -> tuple of view tensors`` (a function of the inputs only).
        device: where the batches live (the loader put them there).
        streams: the prefetcher's stream calls; ``None``: :class:`CudaStreams` on CUDA, the plain loop elsewhere.
    """

    def __init__(
        self,
        make_views: Callable[[torch.Tensor, torch.Tensor, int], tuple],
        device: torch.device,
        streams: CudaStreams | InlineStreams | None = None,
    ):
        self.make_views = make_views
        self.streams = streams or (CudaStreams(device) if device.type == "cuda" else None)

    def __call__(self, batches: Iterable, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.streams is None:
            for images, ids in batches:
                yield self.make_views(images, ids, epoch)
            return
        iterator = iter(batches)
        pending = self._prepare(next(iterator, None), epoch)
        while pending is not None:
            self.streams.main_waits_for_side()
            views = pending
            self.streams.used_by_main(views)
            pending = self._prepare(next(iterator, None), epoch)  # enqueued now, runs during the step
            yield views

    def _prepare(self, batch, epoch: int) -> tuple[torch.Tensor, ...] | None:
        if batch is None:
            return None
        images, ids = batch
        self.streams.side_waits_for_main()
        self.streams.used_by_side((images, ids))
        with self.streams.side():
            return self.make_views(images, ids, epoch)
