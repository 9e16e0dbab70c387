"""Decoded splits on disk: each split of a folder dataset decoded once, at the cache size, into a memory-mapped
uint8 file that the next run, and every process of a multi-process run, reuses.

An archive of 10^5 images at 256 px is ~20 GB decoded: more than RAM, but a memory-mapped file is read in batches
through the page cache, which the kernel can always drop (the process's anonymous memory stays at a few batches).
Files live in ``$ZOO_CACHE`` (default: ``$XDG_CACHE_HOME/medssl-zoo``, else ``~/.cache/medssl-zoo``), named by a key
of what they hold: the dataset, the split's files (paths, sizes, modification times) and labels, the size, the
channels, the decoder version. A cache is written to a temporary file and renamed; its ``.json`` record, renamed
last, is what makes it complete, so a half-written cache is never used. One process decodes while the others wait
on a lock file, then read.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

__all__ = ["CACHE_VERSION", "cache_dir", "split_key", "decoded_split"]

log = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when decoding changes what is stored


def cache_dir() -> Path:
    """``$ZOO_CACHE``, else ``$XDG_CACHE_HOME/medssl-zoo``, else ``~/.cache/medssl-zoo`` (a cache, disposable)."""
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medssl-zoo"


def split_key(name: str, files: list[Path], labels: list[int], size: int, channels: int) -> str:
    """What a cache holds, as a hash: the files (path, size, modification time), labels, size, channels."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, name, size, channels]).encode())
    for path, label in zip(files, labels, strict=True):
        stat = path.stat()
        digest.update(
            f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n".encode(errors="surrogateescape")
        )
    return digest.hexdigest()[:32]


def _open(data: Path, record: dict) -> tuple[torch.Tensor, torch.Tensor]:
    shape = tuple(record["shape"])
    expected = int(np.prod(shape))
    if data.stat().st_size != expected:
        raise OSError(f"{data} has {data.stat().st_size} bytes, {expected} expected")
    # copy-on-write: writable for torch, never written back; pages come from (and go back to) the page cache
    images = np.memmap(data, dtype=np.uint8, mode="c", shape=shape) if expected else np.zeros(shape, np.uint8)
    return torch.from_numpy(images), torch.tensor(record["labels"], dtype=torch.long)


def _write(path: Path, count: int, shape: tuple[int, ...], fill: Callable) -> tuple[list[int], Path]:
    """Decode into a temporary memory-mapped file; compact the readable images to its front. (good slots, file)"""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    slot = int(np.prod(shape))
    images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(max(count, 1), *shape))
    good = fill(images)
    for new, old in enumerate(good):  # move the readable images down over the unreadable ones' slots
        if new != old:
            images[new] = images[old]
    images.flush()
    del images
    with open(tmp, "r+b") as f:
        f.truncate(len(good) * slot)
        os.fsync(f.fileno())
    return good, tmp


def decoded_split(
    key: str,
    count: int,
    shape: tuple[int, int, int],
    labels: list[int],
    fill: Callable[[np.ndarray], list[int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The split cached under ``key``: (N x C x S x S uint8 memory-mapped images, N labels), decoded first if
    needed by ``fill(out) -> readable indices`` (``out``: count x C x S x S, written in place)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    data, record_path = folder / f"{key}.u8", folder / f"{key}.json"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process decodes, the others wait and then read
        if record_path.is_file() and data.is_file():
            try:
                record = json.loads(record_path.read_text())
                log.info("reusing the decoded cache %s (%d images)", data, record["shape"][0])
                return _open(data, record)
            except (OSError, ValueError, KeyError) as e:
                log.warning("the decoded cache %s is unusable (%s): decoding again", data, e)
        # temporary files of this key left by a decoder that was killed (we hold the key's lock)
        for stale in folder.glob(f"{key}.*.tmp-*"):
            stale.unlink()
        good, tmp = _write(data, count, shape, fill)

        record = {"shape": [len(good), *shape], "labels": [labels[i] for i in good], "version": CACHE_VERSION}
        tmp.replace(data)
        record_tmp = record_path.with_name(f"{record_path.name}.tmp-{os.getpid()}")
        record_tmp.write_text(json.dumps(record))
        record_tmp.replace(record_path)  # last: from now on the cache is complete
        return _open(data, record)


def parallel_fill(decode_one: Callable[[int], torch.Tensor | None], count: int, workers: int, progress: bool):
    """A ``fill`` for :func:`decoded_split` and for in-memory decoding: ``decode_one(i)`` on ``workers`` threads
    (image decoding and resizing release the GIL), each result written into its slot as soon as it is ready."""
    from tqdm.auto import tqdm

    def fill(out: np.ndarray) -> list[int]:
        good = []

        def work(i: int) -> None:
            image = decode_one(i)
            if image is not None:
                out[i] = image.numpy()
                good.append(i)

        with (
            ThreadPoolExecutor(max(1, workers)) as pool,
            tqdm(total=count, desc="decoding", disable=not progress, mininterval=2.0) as bar,
        ):
            for _ in pool.map(work, range(count)):
                bar.update(1)
        return sorted(good)

    return fill
