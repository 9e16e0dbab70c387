"""Decoded splits on disk: each split of a folder dataset decoded once, at the cache size, into a memory-mapped
uint8 file that the next run, and every process of a multi-process run, reuses.

An archive of 10^5 images at 256 px is ~20 GB decoded: more than RAM, but a memory-mapped file is read in batches
through the page cache, which the kernel can always drop (the process's anonymous memory stays at a few batches).
Files live in ``$ZOO_CACHE`` (default: ``$XDG_CACHE_HOME/medssl-zoo``, else ``~/.cache/medssl-zoo``); what an
entry is and how it is checked is :mod:`zoo.data.cache_entry`, how the cache stays bounded is
:mod:`zoo.data.cache_room`.

A complete, verified entry is read without any lock or write, so a read-only cache works. Otherwise one process
builds the entry under its lock (the others wait, then read it): into a temporary file created exclusively (never
through a planted link) whose blocks are allocated before the first pixel is written, so a full disk is one
``ENOSPC`` error instead of a ``SIGBUS`` from the memory map; the file is renamed into place, then its record is
written, which makes the entry complete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from zoo.data.cache_entry import (
    CACHE_VERSION,
    CacheRequest,
    Decoded,
    DiskCacheError,
    Entry,
    UnusableEntry,
    open_entry,
    slot_digest,
    write_record,
)
from zoo.data.cache_room import cache_limit, evict_stale, gib, make_room, remove_orphans
from zoo.files import atomic_file, file_lock

__all__ = ["CACHE_VERSION", "CacheRequest", "Decoded", "DiskCacheError", "cache_dir", "decoded_split"]

log = logging.getLogger(__name__)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def cache_dir() -> Path:
    """``$ZOO_CACHE``, else ``$XDG_CACHE_HOME/medssl-zoo``, else ``~/.cache/medssl-zoo`` (a cache, disposable)."""
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medssl-zoo"


def decoded_split(
    request: CacheRequest,
    decode_one: Callable[[int], torch.Tensor | None],
    workers: int = 1,
    progress: bool = False,
) -> Decoded:
    """The split ``request`` asks for: (N x C x S x S uint8 memory-mapped images, N labels, positions of the
    unreadable files), decoded first if no usable entry exists, by ``decode_one(i)`` (None: unreadable) on
    ``workers`` threads."""
    folder = cache_dir()
    entry = Entry(folder, request.key())
    found = _reuse(entry, request)
    if isinstance(found, Decoded):
        log.info("reusing the decoded cache %s (%d images)", entry.data, len(found.images))
        return found
    with _build_lock(entry, request, found):
        found = _reuse(entry, request)  # another process may have built it while this one waited
        if isinstance(found, Decoded):
            log.info("reusing the decoded cache %s, just built by another process", entry.data)
            return found
        if found is not None:
            log.warning("the decoded cache %s is unusable (%s): decoding it again", entry.data, found)
        _build(entry, request, decode_one, workers, progress)
        evict_stale(folder, request, entry.key)
        found = _reuse(entry, request)
    if not isinstance(found, Decoded):
        raise DiskCacheError(errno.EIO, f"the decoded cache {entry.data} just written is unusable ({found})")
    return found


def _reuse(entry: Entry, request: CacheRequest) -> Decoded | str | None:
    """The entry if it is complete and answers the request (its use noted for eviction), else why not (None:
    there is no entry). Needs no write access."""
    if not entry.record.exists() and not entry.record.is_symlink():
        return None
    try:
        found = open_entry(entry, request)
    except UnusableEntry as e:
        return str(e)
    try:  # "recently used", for eviction (a read-only cache cannot note it, and needs not)
        if os.utime in os.supports_follow_symlinks:
            os.utime(entry.record, follow_symlinks=False)
    except OSError:
        pass
    return found


@contextlib.contextmanager
def _build_lock(entry: Entry, request: CacheRequest, why: str | None) -> Iterator[None]:
    """The entry's lock (``filelock``: never follows a link, never truncates); one process decodes, the others wait
    here and then read. One clear error where it cannot be taken: a read-only cache, a planted link."""
    try:
        entry.folder.mkdir(parents=True, exist_ok=True)
        lock = file_lock(entry.lock)
        lock.acquire()
    except OSError as e:
        raise _lock_error(entry, request, why or "there is none", e) from e
    try:
        yield
    finally:
        lock.release()


def _lock_error(entry: Entry, request: CacheRequest, why: str, e: OSError) -> DiskCacheError:
    if e.errno == errno.ELOOP:
        return DiskCacheError(
            e.errno,
            f"{entry.lock} is a symbolic link, which the decoded cache never makes: remove it, or set ZOO_CACHE "
            "to a folder of your own",
        )
    return DiskCacheError(
        e.errno or errno.EACCES,
        f"no usable decoded cache of {request.dataset}/{request.split} in {entry.folder} ({why}), and it cannot "
        f"be written there ({e.strerror or e}); make it writable, set ZOO_CACHE to a writable folder, or decode "
        "to memory (cache: memory)",
    )


def _build(entry: Entry, request: CacheRequest, decode_one: Callable, workers: int, progress: bool) -> None:
    """Decode into a temporary file, renamed into place; then the record (we hold the entry's lock)."""
    remove_orphans(entry.folder)
    make_room(entry.folder, request, entry.key)
    log.info(
        "decoding %s/%s (%d images at %d px, %s) into the disk cache %s; it keeps at most %s (ZOO_CACHE_MAX), "
        "removing the least recently used entries first; `rm -r %s` clears it safely (it is disposable)",
        request.dataset,
        request.split,
        len(request.files),
        request.size,
        gib(request.nbytes),
        entry.folder,
        gib(cache_limit(entry.folder)),
        entry.folder,
    )
    # this key's unusable record (we hold its lock): without it the entry is incomplete until rebuilt
    entry.record.unlink(missing_ok=True)
    digests: list[str | None] = [None] * len(request.files)
    try:
        with atomic_file(entry.data) as f:
            _allocate(f.fileno(), request)
            kept = _fill(
                f, request, parallel_fill(decode_one, len(request.files), workers, progress, digests)
            )
            f.truncate(len(kept) * int(np.prod(request.shape)))
        write_record(entry, request, kept, [digests[i] for i in kept])
    except FileExistsError as e:  # a random temporary name taken: someone planted it
        raise DiskCacheError(
            e.errno,
            f"{e.filename} appeared before the decoded cache could create it (planted?); set ZOO_CACHE to a folder "
            "only you can write",
        ) from e
    except OSError as e:
        if e.errno in _NO_SPACE and not isinstance(e, DiskCacheError):
            raise _no_space(request, entry.folder, e) from e
        raise


def _allocate(fd: int, request: CacheRequest) -> None:
    """Reserve every block of the file now (no holes): writing a page of a memory map into a hole when the disk is
    full raises SIGBUS (mmap(2)) and kills the process; a full disk now fails here, as ENOSPC. Where there is no
    ``posix_fallocate`` (macOS, Windows) the file is sized sparsely, and the free-space check is the guard."""
    nbytes = request.nbytes
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, nbytes)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    os.ftruncate(fd, nbytes)


def _fill(f, request: CacheRequest, fill: Callable[[np.ndarray], list[int]]) -> list[int]:
    """Decode into the file's memory map; compact the readable images to its front. The readable positions."""
    images = np.memmap(f, dtype=np.uint8, mode="r+", shape=(len(request.files), *request.shape))
    try:
        kept = fill(images)
        for new, old in enumerate(kept):  # move the readable images down over the unreadable ones' slots
            if new != old:
                images[new] = images[old]
        images.flush()
    finally:
        del images  # unmapped before the file is truncated, renamed or removed
    return kept


def _no_space(request: CacheRequest, folder: Path, e: OSError) -> DiskCacheError:
    return DiskCacheError(
        errno.ENOSPC,
        f"no room for the decoded {request.dataset}/{request.split} split at {request.size} px in {folder}: "
        f"writing {gib(request.nbytes)} failed ({e.strerror}); free some space there, set ZOO_CACHE to a folder "
        "with more room, or decode to memory (cache: memory)",
    )


def parallel_fill(
    decode_one: Callable[[int], torch.Tensor | None],
    count: int,
    workers: int,
    progress: bool,
    digests: list | None = None,
):
    """A ``fill(out) -> readable positions`` for :func:`decoded_split` and for in-memory decoding: ``decode_one(i)``
    on ``workers`` threads (image decoding and resizing release the GIL), each result written into its slot as soon
    as it is ready, with its digest in ``digests[i]`` when a list is given. An error stops the decoding at once."""
    from tqdm.auto import tqdm

    def fill(out: np.ndarray) -> list[int]:
        good = []

        def work(i: int) -> None:
            image = decode_one(i)
            if image is not None:
                out[i] = image.numpy()
                if digests is not None:
                    digests[i] = slot_digest(out[i])
                good.append(i)

        pool = ThreadPoolExecutor(max(1, workers))
        try:
            with tqdm(total=count, desc="decoding", disable=not progress, mininterval=2.0) as bar:
                for _ in pool.map(work, range(count)):
                    bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on an error, the images not yet started are not
        return sorted(good)

    return fill
