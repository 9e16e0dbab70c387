"""One entry of the decoded disk cache: the request it answers, its files, its record, and the checks that decide
whether it may be used.

An entry is three files in the cache folder, named by the key of what it holds: ``<key>.u8`` (the images,
N x C x S x S uint8, no header), ``<key>.json`` (the record: written last, so its presence makes the entry
complete) and ``<key>.lock`` (held while the entry is built or removed). The key hashes the request: the dataset,
its folder resolved (a relative and an absolute root are one entry), the split, the size, the channels, and for
each file its path, size, modification time, inode change time and inode number (``cp -p`` and ``rsync -a`` keep
the size and modification time of a replaced image, never its ctime), and its label.

Nothing in the folder is trusted: the record must answer the request (format, version, key, image count,
channels, size, labels, unreadable files), and the pixels must match the per-image digests written at build time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from zoo.files import atomic_write_json, lock_shared, read_json

__all__ = [
    "CACHE_VERSION",
    "SAMPLE_SLOTS",
    "CacheRequest",
    "Decoded",
    "DiskCacheError",
    "Entry",
    "UnusableEntry",
    "open_entry",
    "slot_digest",
    "write_record",
]

CACHE_VERSION = (
    2  # bump when decoding, the key or the record change (2: resolved folder, ctime, inode, digests)
)
RECORD_FORMAT = "medssl-zoo decoded split"
SAMPLE_SLOTS = 64  # images checked against their digest at each open, besides the first and the last
KEY_PATTERN = re.compile(r"[0-9a-f]{32}")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class DiskCacheError(OSError, ValueError):
    """The disk cache cannot be used or written (no space, read-only, a planted link): one line saying what to
    do. Also a ``ValueError``, so the command lines report it as bad input, not as a traceback."""


class UnusableEntry(Exception):
    """An entry that exists but does not answer the request (the message says why); it is decoded again."""


class Decoded(NamedTuple):
    images: torch.Tensor  # N x C x S x S uint8, memory-mapped
    labels: torch.Tensor  # N
    unreadable: list[int]  # positions in the request's files that could not be decoded


@dataclass(frozen=True)
class CacheRequest:
    """One split of a folder dataset at one size, as asked of the cache."""

    dataset: str
    folder: str  # resolved (realpath)
    split: str
    files: tuple[str, ...]  # relative to folder
    labels: tuple[int, ...]
    size: int
    channels: int

    @classmethod
    def of(cls, dataset: str, folder: str | Path, split: str, files, labels, size: int, channels: int):
        return cls(dataset, os.path.realpath(folder), split, tuple(files), tuple(labels), size, channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def nbytes(self) -> int:
        """The size of the entry's pixels."""
        return len(self.files) * int(np.prod(self.shape))

    @property
    def disk_bytes(self) -> int:
        """The size of the entry on disk: pixels and record (a label and a digest per image, ~25 bytes)."""
        return self.nbytes + 64 * len(self.files) + 4096

    @property
    def identity(self) -> list:
        """What stays the same when files change: another entry with this identity is a stale version."""
        return [self.dataset, self.folder, self.split, self.size, self.channels]

    def key(self) -> str:
        """The hash of everything the decoded pixels depend on (one ``stat`` per file)."""
        digest = hashlib.sha256(json.dumps([CACHE_VERSION, *self.identity]).encode())
        for name, label in zip(self.files, self.labels, strict=True):
            s = os.stat(os.path.join(self.folder, name))
            line = f"{name}\0{s.st_size}\0{s.st_mtime_ns}\0{s.st_ctime_ns}\0{s.st_ino}\0{label}\n"
            digest.update(line.encode(errors="surrogateescape"))
        return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    folder: Path
    key: str

    @property
    def data(self) -> Path:
        return self.folder / f"{self.key}.u8"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.key}.json"

    @property
    def lock(self) -> Path:
        return self.folder / f"{self.key}.lock"


def slot_digest(image: np.ndarray) -> str:
    """64 bits of the sha256 of one decoded image: 0.1 ms for 256 x 256 RGB (1.7 GB/s), done by the decoding
    threads at build time."""
    return hashlib.sha256(np.ascontiguousarray(image).data).hexdigest()[:16]


def write_record(entry: Entry, request: CacheRequest, kept: list[int], digests: list[str]) -> None:
    """The record that makes ``entry`` complete (written atomically, after the pixels are in place)."""
    dropped = sorted(set(range(len(request.files))) - set(kept))
    record = {
        "format": RECORD_FORMAT,
        "version": CACHE_VERSION,
        "key": entry.key,
        "dataset": request.dataset,
        "folder": request.folder,
        "split": request.split,
        "size": request.size,
        "channels": request.channels,
        "count": len(request.files),
        "shape": [len(kept), *request.shape],
        "unreadable": [[i, request.files[i]] for i in dropped],
        "labels": [request.labels[i] for i in kept],
        "digests": digests,
    }
    atomic_write_json(entry.record, record, indent=None)


def record_limit(count: int) -> int:
    """The most bytes a record of ``count`` images may have: labels, digests and some unreadable names."""
    return 2**20 + 512 * count


def read_record(path: Path, limit: int) -> dict:
    """A record, bounded and never through a link (the cache makes none)."""
    if path.is_symlink():
        raise UnusableEntry(f"{path.name} is a symbolic link")
    try:
        record = read_json(path, limit, "decoded cache record")
    except (OSError, ValueError) as e:
        raise UnusableEntry(str(e)) from e
    if not isinstance(record, dict):
        raise UnusableEntry("its record is not a JSON object")
    return record


def open_entry(entry: Entry, request: CacheRequest, sample: int | None = None, seed=None) -> Decoded:
    """The entry's images (memory-mapped, copy-on-write) and labels, if its record answers ``request`` and a
    sample of its images matches their digests; :class:`UnusableEntry` otherwise.

    Checking every image at each open would read the whole file (2 GB for 10^4 images at 256 px: seconds, cold);
    the first, the last and ``SAMPLE_SLOTS`` random images cost a few milliseconds and catch any damage that
    touches more than a few percent of the images (a file of zeros, another entry's pixels, a shifted copy) with
    near certainty ((1 - f)^64 < 0.2 % for f = 10 %). The size of the file is checked exactly.
    """
    record = read_record(entry.record, record_limit(len(request.files)))
    unreadable = _check_record(record, entry, request)
    kept = len(request.files) - len(unreadable)
    images = _map(entry.data, kept, request.shape)
    _check_pixels(images, record["digests"], SAMPLE_SLOTS if sample is None else sample, seed)
    return Decoded(torch.from_numpy(images), torch.tensor(record["labels"], dtype=torch.long), unreadable)


def _check_record(record: dict, entry: Entry, request: CacheRequest) -> list[int]:
    """The unreadable positions the record lists, once every field is what the request needs."""
    expected = {
        "format": RECORD_FORMAT,
        "version": CACHE_VERSION,
        "key": entry.key,
        "count": len(request.files),
        "channels": request.channels,
        "size": request.size,
    }
    for name, value in expected.items():
        if record.get(name) != value:
            raise UnusableEntry(f"its record says {name} {record.get(name)!r}, {value!r} is needed")
    try:
        unreadable = [int(i) for i, _ in record["unreadable"]]
        names = [name for _, name in record["unreadable"]]
        if unreadable != sorted(set(unreadable)) or not all(0 <= i < len(request.files) for i in unreadable):
            raise UnusableEntry("its record lists impossible unreadable positions")
        if names != [request.files[i] for i in unreadable]:
            raise UnusableEntry("its record names other unreadable files")
        kept = sorted(set(range(len(request.files))) - set(unreadable))
        if record["shape"] != [len(kept), *request.shape]:
            raise UnusableEntry(
                f"its record says shape {record['shape']}, {[len(kept), *request.shape]} is needed"
            )
        if record["labels"] != [request.labels[i] for i in kept]:
            raise UnusableEntry("its record holds other labels")
        digests = record["digests"]
        if len(digests) != len(kept) or not all(isinstance(d, str) and len(d) == 16 for d in digests):
            raise UnusableEntry("its record has no digest for each image")
    except (KeyError, TypeError, ValueError) as e:
        raise UnusableEntry(f"its record is malformed ({type(e).__name__}: {e})") from e
    return unreadable


def _map(path: Path, count: int, shape: tuple[int, int, int]) -> np.ndarray:
    """``path`` memory-mapped copy-on-write (writable for torch, never written back), opened without following a
    link, of exactly ``count`` images, and marked in use (a shared lock held by the map) so it is not evicted."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError as e:
        raise UnusableEntry(f"{path.name} cannot be opened ({e.strerror})") from e
    with os.fdopen(fd, "rb") as f:
        info, expected = os.fstat(fd), count * int(np.prod(shape))
        if not stat.S_ISREG(info.st_mode):
            raise UnusableEntry(f"{path.name} is not a regular file")
        if info.st_size != expected:
            raise UnusableEntry(f"{path.name} has {info.st_size} bytes, {expected} expected")
        if not lock_shared(fd):
            raise UnusableEntry(f"{path.name} is being removed")
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == info.st_ino
        except OSError:
            same = False
        if not same:
            raise UnusableEntry(f"{path.name} was replaced or removed while it was opened")
        if not count:
            return np.zeros((0, *shape), np.uint8)
        return np.memmap(
            f, dtype=np.uint8, mode="c", shape=(count, *shape)
        )  # the map keeps its own descriptor


def _check_pixels(images: np.ndarray, digests: list[str], sample: int, seed) -> None:
    count = len(images)
    if not count:
        return
    slots = {0, count - 1}
    slots.update(np.random.default_rng(seed).choice(count, size=min(sample, count), replace=False).tolist())
    for slot in sorted(slots):
        if slot_digest(images[slot]) != digests[slot]:
            raise UnusableEntry(f"image {slot} does not match its digest (the file was damaged or replaced)")
