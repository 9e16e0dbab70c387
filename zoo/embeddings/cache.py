"""Embeddings computed once: outputs of the embeddings format kept in ``$ZOO_CACHE/embeddings`` for reuse.

A comparison of encoders (``medssl-evaluate --compare``) embeds the same data with each encoder; the next
comparison on the same data reuses them. Each output is an ordinary embedding output (:mod:`zoo.embeddings.format`)
in a folder named by a *locator* — the hash of the encoder's identity (architecture, Hub commit, weights' sha256,
pooling), its preprocessing, the data (folder, dataset, options: split seed and grouping included) and the
precision — and its own key decides whether it may be reused: a file added, removed or changed, or another split,
makes :func:`zoo.embed` replace it (``overwrite`` only ever replaces an output of this format); another revision
or weights is another locator. Beside each output, ``<locator>.json`` records how fast it was computed (the
throughput a leaderboard shows without computing anything again), and its modification time is the output's last
use.

The folder is bounded with the decoded cache's bound (:func:`zoo.data.cache_room.cache_limit`, ``ZOO_CACHE_MAX``):
once a new output is computed, the least recently used others are removed until it fits — never one that another
process holds (its lock), and never a folder holding anything this format does not write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.cache import cache_dir
from zoo.data.cache_room import cache_limit, gib
from zoo.embeddings.embed import embed
from zoo.embeddings.encoder import Encoder
from zoo.embeddings.format import LOCK_FILE, META_FILE, SHARD_NAME, foreign_entries, read_meta
from zoo.embeddings.store import Embeddings
from zoo.files import atomic_write_json, file_lock, read_json

__all__ = ["CachedEmbeddings", "cached_embeddings", "embeddings_cache"]

log = logging.getLogger(__name__)
LOCATOR_CHARS = 32
MAX_TIMING_BYTES = 64 * 1024


@dataclass
class CachedEmbeddings:
    """An encoder's embeddings of the data, read: rows (N x width, float32), their index records, and whether they
    were computed now (False: reused) and how fast (images/s of the run that computed them)."""

    folder: Path
    rows: np.ndarray
    records: list[dict]
    label_names: list[str]
    computed: bool
    images_per_s: float | None


def embeddings_cache() -> Path:
    return cache_dir() / "embeddings"


def _locator(encoder: Encoder, data: Path, dataset: str | None, options: dict, precision: str) -> str:
    what = {
        "model": encoder.identity,
        "preprocessing": encoder.data_config,
        "data": os.path.realpath(data),
        "dataset": dataset,
        "options": options,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:LOCATOR_CHARS]


def _is_ours(path: Path) -> bool:
    """A folder of this cache: named by a locator, a real folder, holding only what the format writes."""
    name = path.name
    return (
        len(name) == LOCATOR_CHARS
        and all(c in "0123456789abcdef" for c in name)
        and path.is_dir()
        and not path.is_symlink()
        and not foreign_entries(path)
    )


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and not f.is_symlink())


def _evict(folder: Path, keep: str, needed: int) -> None:
    """Remove least recently used outputs (not ``keep``, not in use) until ``needed`` more bytes fit the bound."""
    limit = cache_limit(folder)
    outputs = sorted(
        (p for p in folder.iterdir() if p.name != keep and _is_ours(p)), key=lambda p: _used(folder, p.name)
    )
    total = sum(_size(p) for p in outputs)
    for path in outputs:
        if total + needed <= limit:
            return
        lock = file_lock(path / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except OSError:  # filelock's Timeout: another process embeds or reads it
            continue
        try:
            size = _size(path)
            # a locator-named folder of this cache holding only embedding-format files: this project's own output
            shutil.rmtree(path)
            (folder / f"{path.name}.json").unlink(missing_ok=True)  # its timing record, ours too
            total -= size
            log.info("removed the least recently used embeddings %s (%s)", path, gib(size))
        finally:
            lock.release()


def _used(folder: Path, locator: str) -> float:
    timing = folder / f"{locator}.json"
    return timing.stat().st_mtime if timing.is_file() else 0.0


def _shard_files(out: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mtime_ns, inode) of each shard file: a shard written again (atomically: a new inode) changes it."""
    if not out.is_dir():
        return {}
    found = {}
    for path in out.iterdir():
        if SHARD_NAME.fullmatch(path.name):
            info = path.lstat()
            found[path.name] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return found


def _timing(folder: Path, locator: str, plan: str) -> float | None:
    path = folder / f"{locator}.json"
    try:
        record = read_json(path, MAX_TIMING_BYTES, "embedding timing")
    except (OSError, ValueError):
        return None
    os.utime(path)  # used now: the least recently used outputs go first
    speed = record.get("images_per_s") if isinstance(record, dict) and record.get("plan") == plan else None
    return float(speed) if isinstance(speed, (int, float)) else None


def _read(out: Path) -> tuple[np.ndarray, list[dict], list[str]]:
    """Rows, index records and class names of a complete output, read under its lock (so that no other process
    removes it meanwhile)."""
    with file_lock(out / LOCK_FILE):
        emb = Embeddings(out)
        rows = emb.to_numpy().astype(np.float32, copy=False)
        return rows, emb.records(), list(emb.meta["data"]["label_names"])


def _previous(out: Path) -> dict | None:
    """The cached output's ``meta.json``; a damaged one (unreadable, not this format's) in a folder holding only
    this format's files is removed, to be computed again: a cache entry is never worth an error."""
    if not (out / META_FILE).is_file() or out.is_symlink():
        return None
    try:
        return read_meta(out)
    except ValueError as e:
        if not _is_ours(out):
            raise
        log.warning("%s: its meta.json is damaged (%s); it is embedded again", out, e)
        with file_lock(out / LOCK_FILE):
            # a locator-named folder of this cache holding only embedding-format files: this project's own output
            shutil.rmtree(out)
        return None


def cached_embeddings(
    encoder: Encoder, data: str | Path, dataset: str | None, options: dict, **embed_options
) -> CachedEmbeddings:
    """``encoder``'s embeddings of ``data`` (a folder, dataset root or ``.npz``; ``dataset`` and its ``options``
    as :func:`zoo.embed` takes them), computed unless this cache holds them already."""
    folder = embeddings_cache()
    folder.mkdir(parents=True, exist_ok=True)
    precision = embed_options.get("precision", "auto")
    locator = _locator(encoder, Path(data), dataset, options, precision)
    out = folder / locator
    before = _previous(out)
    shards = _shard_files(out)
    started = time.perf_counter()
    emb = embed(encoder, data, out, dataset=dataset, dataset_options=options, overwrite=True, **embed_options)
    seconds = time.perf_counter() - started
    plan = emb.meta["plan"]
    reused = before is not None and before["complete"] and before["plan"] == plan
    computed = not reused or _shard_files(out) != shards  # a damaged shard is embedded again
    if computed:
        speed = len(emb) / seconds if seconds > 0 else None
        atomic_write_json(folder / f"{locator}.json", {"plan": plan, "images": len(emb), "seconds": seconds,
                                                        "images_per_s": speed})  # fmt: skip
        _evict(folder, locator, _size(out))  # room for it under the bound, now that its size is known
    else:
        speed = _timing(folder, locator, plan)
        log.info("%s: reusing its embeddings %s", encoder.name, out)
    rows, records, labels = _read(out)
    return CachedEmbeddings(out, rows, records, labels, computed, speed)
