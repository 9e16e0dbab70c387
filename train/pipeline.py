"""The input pipeline: cached uint8 images → batches → augmented views, kept off the training step's critical path.

- Batches are gathered with one indexing operation (``images[indices]``) instead of stacking N items, from RAM or
  the memory-mapped disk cache, and left on the host (pinned on GPUs): the pipeline moves them itself.
- On GPUs the next batch is copied and its views are made on a side CUDA stream while the current step runs, so
  the copy and the augmentation overlap with the forward/backward pass (the prefetcher of NVIDIA's examples).
- On CPUs the next batch's views are made by a producer thread while the step runs, or in order, whichever this
  run's first batches time faster (``input_overlap: auto``); the views are the same either way, bit for bit.
- Every mode runs one loop over the whole run's batches, so the first batch of an epoch is prepared during the
  previous epoch's last step; the emulated stream calls (:class:`InlineStreams`) run the GPU's order on any machine.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset

from zoo.data.batch_augment import BatchAugment, unit_batch

__all__ = [
    "IndexedImages",
    "GatherCollate",
    "make_loader",
    "MultiCropViews",
    "InOrder",
    "ProducerThread",
    "CudaStreams",
    "InlineStreams",
    "StreamPrefetch",
    "OverlapTrial",
    "ViewPipeline",
]

log = logging.getLogger("train")

Views = tuple[torch.Tensor, ...]
MakeViews = Callable[[torch.Tensor, torch.Tensor, int], Views]
Finish = Callable[[], Views]


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
    function of (seed, epoch, sample id, view index) only, so any process, thread or prefetcher makes the same ones.
    The batch is converted to floats once for all its views.

    Args:
        global_augment: the views at the run's image size (views 0, 1).
        local_augment: the local crops' size and scale (views 2, 3, ...).
        local_crops: how many local views.
    """

    def __init__(self, global_augment: BatchAugment, local_augment: BatchAugment, local_crops: int = 0):
        self.global_augment, self.local_augment, self.local_crops = global_augment, local_augment, local_crops

    def __call__(self, images: torch.Tensor, ids: torch.Tensor, epoch: int) -> Views:
        # B x C x H x W in [0, 1], shared by the views
        unit = unit_batch(images, self.global_augment.channels)
        views = [self.global_augment.augment_unit(unit, ids, epoch, view=v) for v in (0, 1)]
        views += [
            self.local_augment.augment_unit(unit, ids, epoch, view=2 + i) for i in range(self.local_crops)
        ]
        return tuple(views)


class InOrder:
    """No overlap: a batch's views are made when the step asks for them (the plain loop)."""

    name = "none"

    def __init__(self, device: torch.device):
        self.device = device

    def start(self, make: MakeViews, images: torch.Tensor, ids: torch.Tensor, epoch: int) -> Finish:
        return lambda: make(images.to(self.device), ids.to(self.device), epoch)

    def close(self) -> None:
        pass


def _own_intra_op_threads(threads: int) -> None:
    """In a new thread: its own intra-op thread count. torch initialises a thread's OpenMP threads from the
    process-wide count on its first parallel op, so that happens first (``get_num_threads``); otherwise the
    process-wide count, restored by the main thread, would replace this one at the first op."""
    torch.get_num_threads()
    torch.set_num_threads(threads)


class ProducerThread:
    """A CPU producer: one background thread makes the next batch's views while the step runs, with ``threads``
    intra-op threads of its own; the step keeps its own count, so the run's numbers do not depend on whether the
    producer is used (the views are the same with any thread count: tests/train/test_input_overlap.py). Loader
    iteration stays on the calling thread (in a multi-process run it takes part in collective operations, whose
    order must match across processes)."""

    name = "thread"

    def __init__(self, threads: int = 1):
        step_threads = torch.get_num_threads()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="views")
        self.executor.submit(_own_intra_op_threads, threads).result()
        torch.set_num_threads(step_threads)  # set_num_threads is also the default of threads started later

    def start(self, make: MakeViews, images: torch.Tensor, ids: torch.Tensor, epoch: int) -> Finish:
        return self.executor.submit(
            make, images, ids, epoch
        ).result  # an error is raised where the views are used

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class CudaStreams:
    """The stream calls of the GPU prefetcher, on a CUDA side stream."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device)

    def side(self):
        """The context in which the next batch is copied and its views are made (enqueued on the side stream)."""
        return torch.cuda.stream(self.stream)

    def main_waits_for_side(self) -> None:
        torch.cuda.current_stream().wait_stream(self.stream)

    def used_by_main(self, tensors: Views) -> None:
        """Made on the side stream, read on the main one: their memory is not reused before the main one is done."""
        for tensor in tensors:
            tensor.record_stream(torch.cuda.current_stream())


class InlineStreams:
    """The same calls on one device queue (a CPU): every call is a no-op, so the GPU prefetcher's order itself
    runs on any machine (tests force it on to check it against the plain loop)."""

    def side(self):
        return contextlib.nullcontext()

    def main_waits_for_side(self) -> None:
        pass

    def used_by_main(self, tensors: Views) -> None:
        pass


class StreamPrefetch:
    """The GPU prefetcher: the batch's host-to-device copy (non-blocking, from pinned memory) and its views are
    enqueued on the side stream when the batch is started, which returns at once; the main stream waits for the
    side stream only when the step uses the views. The side stream never waits for the main one: the batch is
    allocated on it (no ``record_stream`` needed for the input), so the copy overlaps with the step too."""

    name = "cuda-stream"

    def __init__(self, streams: CudaStreams | InlineStreams, device: torch.device):
        self.streams, self.device = streams, device

    def start(self, make: MakeViews, images: torch.Tensor, ids: torch.Tensor, epoch: int) -> Finish:
        with self.streams.side():
            images, ids = self.to_device(images), self.to_device(ids)
            views = make(images, ids, epoch)

        def finish() -> Views:
            self.streams.main_waits_for_side()
            self.streams.used_by_main(views)
            return views

        return finish

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def close(self) -> None:
        pass


class OverlapTrial:
    """``input_overlap: auto``: times the run's own first batches in order, then with the producer thread, and
    keeps the faster. Iteration k (from asking for batch k's views to asking for batch k+1's: the wait, the next
    batch's start and step k) counts for a mode when batches k and k+1 both ran in it (the steady state); the first
    iteration (allocations) does not count. Each mode gets ``window`` iterations; the slowest of each is dropped
    (an evaluation or a checkpoint inside the window); the thread must win by ``margin`` to be kept.

    Batches 0..window+1 run in order, window+2..2 window+2 with the thread, the rest in the chosen mode."""

    def __init__(self, window: int, margin: float = 0.02):
        self.window, self.margin = window, margin
        self.seconds: dict[str, list[float]] = {InOrder.name: [], ProducerThread.name: []}
        self.chosen: str | None = None

    def mode(self, batch: int) -> str:
        """The mode batch ``batch`` (0-based) is started in."""
        if batch <= self.window + 1:
            return InOrder.name
        if batch <= 2 * self.window + 2:
            return ProducerThread.name
        if self.chosen is None:
            self.chosen = self._choose()
        return self.chosen

    def observe(self, iteration: int, seconds: float) -> None:
        """Iteration ``iteration`` (0-based) took ``seconds``."""
        if 0 < iteration <= 2 * self.window + 1 and self.mode(iteration) == self.mode(iteration + 1):
            self.seconds[self.mode(iteration)].append(seconds)

    def _choose(self) -> str:
        in_order, thread = (sum(sorted(t)[:-1]) for t in self.seconds.values())
        chosen = ProducerThread.name if thread < (1 - self.margin) * in_order else InOrder.name
        log.info(
            "input pipeline: %s (%.0f ms per batch with a producer thread, %.0f ms in order; %d batches each)",
            "views made by a producer thread during the step"
            if chosen == ProducerThread.name
            else "in order",
            1000 * thread / (self.window - 1),
            1000 * in_order / (self.window - 1),
            self.window - 1,
        )
        return chosen


class ViewPipeline:
    """Yields ``(epoch, views)`` for each ``(epoch, (images, ids))`` of the run's batches, one loop over the whole
    run: the next batch is started (copied and augmented on a side stream, or handed to a producer thread) before
    the caller's step on the current one, across epoch ends too.

    Which batch is an optimizer step's last is decided by the caller from its own count of batches, never from the
    loader's state: the prefetcher takes batch k+1 from the loader before batch k is used (Accelerate's
    end-of-epoch flag is one batch early then; ../shared/notes/gpu.md).

    Args:
        make_views: ``(images, ids, epoch) -> tuple of view tensors`` (a function of the inputs only).
        device: where the views go (the loader leaves batches on the host).
        overlap: on CPUs, ``thread``, ``none`` or ``auto`` (:class:`OverlapTrial`); CUDA uses a side stream.
        streams: the GPU prefetcher's stream calls (:class:`InlineStreams` forces its order on a CPU).
        window: the batches :class:`OverlapTrial` times in each mode.
    """

    def __init__(
        self,
        make_views: MakeViews,
        device: torch.device,
        overlap: str = "auto",
        streams: CudaStreams | InlineStreams | None = None,
        window: int = 4,
    ):
        self.make_views, self.device, self.overlap, self.window = make_views, device, overlap, window
        if streams is None and device.type == "cuda":
            streams = CudaStreams(device)
        self.streams = streams
        self.trial: OverlapTrial | None = None

    @property
    def settling_batches(self) -> int:
        """Batches before the mode is settled (``auto`` on a CPU times its first ones in each mode)."""
        return 2 * self.window + 3 if self.mode == "auto (timing)" else 0

    @property
    def mode(self) -> str:
        """How views are being made: ``cuda-stream``, ``thread``, ``none`` or ``auto (timing)``."""
        if self.streams is not None:
            return StreamPrefetch.name
        if self.device.type != "cpu":
            return InOrder.name
        if self.overlap != "auto":
            return self.overlap
        return self.trial.chosen if self.trial and self.trial.chosen else "auto (timing)"

    def __call__(self, batches: Iterable[tuple[int, tuple[torch.Tensor, torch.Tensor]]]) -> Iterator[tuple]:
        prefetchers = self._prefetchers()
        self.trial = OverlapTrial(self.window) if len(prefetchers) > 1 else None
        choose = self.trial.mode if self.trial else lambda batch: next(iter(prefetchers))
        try:
            yield from self._loop(batches, lambda batch: prefetchers[choose(batch)])
        finally:
            for prefetcher in prefetchers.values():
                prefetcher.close()

    def _prefetchers(self) -> dict[str, InOrder | ProducerThread | StreamPrefetch]:
        if self.streams is not None:
            return {StreamPrefetch.name: StreamPrefetch(self.streams, self.device)}
        if self.device.type != "cpu":  # another accelerator (MPS, XPU): views made there, in order
            return {InOrder.name: InOrder(self.device)}
        modes = {"none": [InOrder.name], "thread": [ProducerThread.name]}.get(self.overlap)
        made = {InOrder.name: lambda: InOrder(self.device), ProducerThread.name: ProducerThread}
        return {mode: made[mode]() for mode in modes or made}

    def _loop(
        self, batches: Iterable, prefetcher_for: Callable[[int], InOrder | ProducerThread | StreamPrefetch]
    ):
        iterator, k = iter(batches), 0

        def start(batch: int):
            item = next(iterator, None)
            if item is None:
                return None
            epoch, (images, ids) = item
            return epoch, prefetcher_for(batch).start(self.make_views, images, ids, epoch)

        pending, asked = start(0), time.perf_counter()
        while pending is not None:
            epoch, finish = pending
            views = finish()
            pending = start(k + 1)  # runs during the caller's step on ``views``
            yield epoch, views
            now = time.perf_counter()
            if self.trial is not None:
                self.trial.observe(k, now - asked)
            asked, k = now, k + 1
