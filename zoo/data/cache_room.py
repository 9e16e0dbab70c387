"""Room for the decoded disk cache: its bound (``ZOO_CACHE_MAX``), least-recently-used eviction, stale versions of
a folder's entries, the temporaries of killed builders, free space.

The cache is disposable (``rm -r $ZOO_CACHE`` is always safe: what is missing is decoded again), but left alone
it would grow without end: every touched file makes a new entry. So, before an entry is built, the least recently
used complete entries are removed until it fits under ``ZOO_CACHE_MAX`` and on the disk, and once it is built the
other entries of the same dataset folder, split, size and channels (its stale versions) are removed. An entry
is never removed while another process builds it (its lock is held) or reads it (its memory map holds a shared
lock on the file, see :func:`zoo.files.lock_shared`). "Used" is the record's modification time, touched at every
reuse.

The default bound is the smaller of 64 GiB and a quarter of the cache's file system: 64 GiB holds the three
splits of a 10^5-image archive decoded at 256 px RGB (20 GB) three times over, and a quarter of a small disk
leaves the rest of it (checkpoints, datasets) usable. Entries are only written when they fit the free space with
``KEEP_FREE`` to spare.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from zoo.data.cache_entry import KEY_PATTERN, CacheRequest, DiskCacheError, Entry, UnusableEntry, read_record
from zoo.files import check_free_space, file_lock, lock_exclusive_now, remove_stale_temporaries

__all__ = ["KEEP_FREE", "cache_limit", "evict_stale", "make_room", "parse_size", "remove_orphans"]

log = logging.getLogger(__name__)
KEEP_FREE = 2**30  # bytes left free on the disk after an entry is written
DEFAULT_MAX, DEFAULT_FRACTION = 64 * 2**30, 0.25
SCAN_RECORD_LIMIT = 2**28  # a record read to find stale entries (10^6 images take ~40 MB)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_LEGACY_TEMPORARY = re.compile(r"([0-9a-f]{32})\.(u8|json)\.tmp-(\d+)")  # what cache version 1 wrote


def gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def parse_size(text: str) -> int:
    """Bytes from ``50G``, ``512M``, ``1.5T``, ``2GiB`` or a plain number (units are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    value = float(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if not match or value < 1:
        raise ValueError(
            f"ZOO_CACHE_MAX={text!r} is not a size; give bytes or a number with K, M, G or T (powers of 1024), "
            "e.g. ZOO_CACHE_MAX=50G"
        )
    return int(value)


def cache_limit(folder: Path) -> int:
    """``ZOO_CACHE_MAX``, else the smaller of 64 GiB and a quarter of the file system holding ``folder``."""
    if os.environ.get("ZOO_CACHE_MAX"):
        return parse_size(os.environ["ZOO_CACHE_MAX"])
    return min(DEFAULT_MAX, int(DEFAULT_FRACTION * shutil.disk_usage(folder).total))


@dataclass
class _Found:
    entry: Entry
    size: int
    used: float


def _entries(folder: Path) -> dict[str, _Found]:
    """The entries in ``folder`` (complete or not) by key: files named ``<32 hex>.u8|json|lock``, links left out."""
    found: dict[str, _Found] = {}
    with os.scandir(folder) as it:
        for item in it:
            key, _, suffix = item.name.partition(".")
            if not KEY_PATTERN.fullmatch(key) or suffix not in ("u8", "json", "lock") or item.is_symlink():
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except OSError:
                continue
            entry = found.setdefault(key, _Found(Entry(folder, key), 0, 0.0))
            entry.size += info.st_size
            if suffix != "lock":
                entry.used = max(entry.used, info.st_mtime)
    return found


def evict(entry: Entry) -> bool:
    """Remove ``entry`` unless a process builds it (holds its lock) or reads it (its map holds a shared lock on
    the pixels); whether it was removed."""
    lock = file_lock(entry.lock, timeout=0)
    try:
        lock.acquire()
    except OSError:  # filelock's Timeout: being built; or the lock is a planted link: leave it
        return False
    try:
        return _remove_unused(entry)
    finally:
        lock.release()


def _remove_unused(entry: Entry) -> bool:
    try:
        fd = os.open(entry.data, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        fd = None
    except OSError:  # a link or something else the cache never makes: leave the entry
        return False
    try:
        if fd is not None and not lock_exclusive_now(fd):
            return False  # mapped by a running process
        # named by a cache key in the cache folder, and not in use: this project's own disposable entry (the
        # record first, so that no reader finds a record without its pixels)
        entry.record.unlink(missing_ok=True)
        entry.data.unlink(missing_ok=True)
    except OSError as e:
        log.warning("could not remove the decoded cache entry %s (%s)", entry.data, e)
        return False
    finally:
        if fd is not None:
            os.close(fd)
    with contextlib.suppress(
        OSError
    ):  # its own lock file, held here: a process waiting on it rebuilds the same
        entry.lock.unlink()
    return True


def make_room(folder: Path, request: CacheRequest, key: str) -> None:
    """Evict the least recently used entries until the new one (``request.disk_bytes``) fits under the bound and
    on the disk; :class:`DiskCacheError` if it cannot."""
    needed, limit = request.disk_bytes, cache_limit(folder)
    what = f"the decoded {request.dataset}/{request.split} split at {request.size} px"
    if needed > limit:
        raise DiskCacheError(
            errno.EFBIG,
            f"{what} needs {gib(needed)}, more than ZOO_CACHE_MAX allows ({gib(limit)}); raise it "
            "(e.g. ZOO_CACHE_MAX=100G) or decode to memory (cache: memory)",
        )
    others = sorted((f for k, f in _entries(folder).items() if k != key), key=lambda f: f.used)
    total = sum(f.size for f in others)
    for found in others:
        if total + needed <= limit and shutil.disk_usage(folder).free >= needed + KEEP_FREE:
            break
        if evict(found.entry):
            total -= found.size
            log.info(
                "removed the least recently used decoded cache entry %s (%s)",
                found.entry.data,
                gib(found.size),
            )
    if total + needed > limit:
        log.warning(
            "the decoded cache %s will hold %s, more than ZOO_CACHE_MAX (%s): entries in use by other processes "
            "cannot be removed now",
            folder,
            gib(total + needed),
            gib(limit),
        )
    try:
        check_free_space(
            folder, needed + KEEP_FREE, f"{what} ({gib(needed)}, with {gib(KEEP_FREE)} left free)"
        )
    except OSError as e:
        raise DiskCacheError(
            errno.ENOSPC, f"{e.strerror} (set ZOO_CACHE), or decode to memory (cache: memory)"
        ) from e


def evict_stale(folder: Path, request: CacheRequest, key: str) -> None:
    """Remove the other entries of the same dataset folder, split, size and channels: older versions of
    ``key`` made before files changed."""
    for other, found in _entries(folder).items():
        if other == key:
            continue
        try:
            record = read_record(found.entry.record, SCAN_RECORD_LIMIT)
        except UnusableEntry:
            continue
        identity = [record.get(k) for k in ("dataset", "folder", "split", "size", "channels")]
        if identity == request.identity and evict(found.entry):
            log.info(
                "removed the stale decoded cache entry %s (its files have changed since)", found.entry.data
            )


def remove_orphans(folder: Path) -> None:
    """Remove the temporary files of builders that were killed (their process is gone), in this version's
    naming and in version 1's (``<key>.u8.tmp-<pid>``, up to 1 GB and more each)."""
    for path in remove_stale_temporaries(folder):
        log.info("removed %s, left by a killed decoder", path)
    for name in os.listdir(folder):
        match = _LEGACY_TEMPORARY.fullmatch(name)
        if match and not _alive(int(match.group(3))):
            # cache version 1's temporary name (key + suffix + .tmp-pid) of a process that is gone: its own
            # half-written output; unlink removes a link itself, never its target
            (folder / name).unlink(missing_ok=True)
            log.info("removed %s, left by a killed decoder", folder / name)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (version 1 never ran where there is no ``fcntl``, so this is POSIX-only)."""
    if os.name == "nt":
        return True
    if pid == os.getpid():
        return False  # this version never writes version 1's names: an earlier process with the same pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
