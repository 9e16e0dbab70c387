"""Claiming an output folder for a plan, and completing it once every shard is there.

The processes of one launch do not talk to each other: each claims the folder (:func:`claim`) and, after its own
shards, tries to complete it (:func:`finish`), both under the folder's lock (``DIR/.lock``,
:func:`zoo.files.file_lock`), so they agree whatever their order. A folder is claimed only if it is new, empty,
or an output of this project (its ``meta.json``, and nothing but the files this format writes): any other folder
is refused, also with ``--overwrite``, and nothing in it is touched. An output of another plan (other files,
model, revision, pooling, preprocessing, precision, dtype or shard size) is refused naming every difference, or
with ``--overwrite`` replaced: the new ``meta.json`` first, then the old plan's files removed — shards carry
their plan in their header, so one of another plan is never counted even if removal is cut short.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from zoo.embeddings.format import (
    FILE_FIELDS,
    FILES_FILE,
    FORMAT,
    INDEX_FIELDS,
    INDEX_FILE,
    LOCK_FILE,
    SKIPPED_FIELDS,
    SKIPPED_FILE,
    VERSION,
    ShardHeader,
    foreign_entries,
    plan_id,
    read_csv,
    read_meta,
    read_shard_header,
    shard_name,
    shard_number,
    write_csv,
    write_meta,
)
from zoo.embeddings.plan import Plan, describe_changes, key_differences
from zoo.files import atomic_write_text, file_lock, is_temporary, remove_stale_temporaries, sha256_file

__all__ = [
    "NotAnOutputError",
    "PlanMismatchError",
    "TooManyUnreadableError",
    "claim",
    "complete_shards",
    "finish",
    "output_folder",
    "report_skipped",
]

log = logging.getLogger(__name__)


class NotAnOutputError(ValueError):
    """The output folder holds files this project did not write."""


class PlanMismatchError(ValueError):
    """The output folder holds embeddings of another plan; the message names every difference."""


class TooManyUnreadableError(ValueError):
    """More files could not be read than ``max_bad`` allows."""


def output_folder(out: str | Path) -> Path:
    """``out`` as an absolute path, checked before anything else is done: a link, or a file, is refused (a link
    could redirect what is written). It is created only by :func:`claim`, once the model and data are read."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    if out.is_symlink():
        raise ValueError(
            f"--out {out} is a link; give the folder itself (a link could redirect what is written)"
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; give a new or empty folder")
    return out


def _check_ours(out: Path, meta: dict | None) -> None:
    """Refuse a folder holding anything this project did not write there (without ``meta.json``: anything but
    the lock and temporary files)."""
    foreign = foreign_entries(out)
    if meta is None:
        foreign += [
            n for n in sorted(os.listdir(out)) if n != LOCK_FILE and not is_temporary(n) and n not in foreign
        ]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise NotAnOutputError(
            f"{out} is not an embedding output of this project (it holds {shown}); nothing was changed. Give a "
            "new or empty folder as --out (--overwrite only ever replaces an output this project wrote)"
        )


def _differences(out: Path, meta: dict, key: dict, plan: Plan) -> str:
    """Every difference between the output's key and ``key``, the changed files named."""
    old = meta["key"]
    differences = key_differences(old, key)
    if (old.get("files") or {}).get("sha256") != key["files"]["sha256"]:
        count = int((old.get("files") or {}).get("count") or 0)
        differences.append("files: " + describe_changes(out, count, plan))
    return "; ".join(differences)


def _files_csv_current(out: Path, key: dict) -> bool:
    path = out / FILES_FILE
    return path.is_file() and not path.is_symlink() and sha256_file(path) == key["files"]["sha256"]


def _start(out: Path, key: dict, plan: Plan, about: dict) -> dict:
    """A fresh in-progress ``meta.json`` for ``key`` (first: it marks the folder as ours), the plan's
    ``files.csv``, and the old plan's index and report removed."""
    from zoo import __version__  # here: zoo/__init__ imports this module before it defines it

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "complete": False,
        "plan": plan_id(key),
        "key": key,
        **about,
        "library": f"medssl-zoo {__version__}",
    }
    write_meta(out, meta)
    atomic_write_text(out / FILES_FILE, plan.files_text)
    for name in (INDEX_FILE, SKIPPED_FILE):
        (out / name).unlink(missing_ok=True)  # the index and report of the plan this one replaces: ours
    return meta


def _remove_stale_shards(out: Path, plan: str, shards: int) -> None:
    for name in sorted(os.listdir(out)):
        k = shard_number(name)
        if k is None:
            continue
        try:
            header = read_shard_header(out / name)
            stale = header.plan != plan or header.shard != k or k >= shards
        except (OSError, ValueError) as e:
            log.warning("%s is damaged (%s); it is embedded again", name, e)
            stale = True
        if stale:
            (out / name).unlink()  # a shard of this format in our output folder, of another plan or damaged


def claim(out: Path, key: dict, plan: Plan, about: dict, overwrite: bool = False) -> dict:
    """The output's ``meta.json`` for ``key``: a new output started, or an unfinished or complete one of the
    same plan continued; another plan is refused by name (or replaced with ``overwrite``)."""
    output_folder(out).mkdir(parents=True, exist_ok=True)
    with file_lock(out / LOCK_FILE):
        remove_stale_temporaries(out)  # what killed runs left, their processes gone
        meta = read_meta(out)
        _check_ours(out, meta)
        if meta is not None and meta["plan"] != plan_id(key):
            differences = _differences(out, meta, key, plan)
            if not overwrite:
                raise PlanMismatchError(
                    f"{out} holds embeddings of another plan — {differences}. Nothing was mixed or changed: embed "
                    "into another --out, or pass --overwrite to replace them"
                )
            log.warning("--overwrite: replacing the embeddings in %s (%s)", out, differences)
        if meta is None or meta["plan"] != plan_id(key):
            meta = _start(out, key, plan, about)
        elif not _files_csv_current(out, key):
            atomic_write_text(out / FILES_FILE, plan.files_text)  # cut short before it was written
        _remove_stale_shards(out, meta["plan"], shard_count(key))
        if meta["complete"] and len(complete_shards(out, meta)) < shard_count(key):
            meta = _reopen(out, meta)
        return meta


def _reopen(out: Path, meta: dict) -> dict:
    """A complete output that lost a shard (deleted, damaged): in progress again, the missing shards to embed."""
    log.warning("%s: shards are missing or damaged since it was completed; they are embedded again", out)
    done = ("shards", "rows", "skipped", "width", "dtype")
    meta = {**{k: v for k, v in meta.items() if k not in done}, "complete": False}
    write_meta(out, meta)
    (out / INDEX_FILE).unlink(missing_ok=True)  # the index of the complete output: ours, rewritten at the end
    return meta


def shard_count(key: dict) -> int:
    return -(-key["files"]["count"] // key["shard_size"])


def complete_shards(out: Path, meta: dict) -> dict[int, ShardHeader]:
    """The shards of ``meta``'s plan that are complete (whole, of this plan, at their place)."""
    found = {}
    for k in range(shard_count(meta["key"])):
        path = out / shard_name(k)
        try:
            header = read_shard_header(path)
        except (OSError, ValueError):
            continue
        if header.plan == meta["plan"] and header.shard == k:
            found[k] = header
    return found


def _skipped_rows(out: Path, meta: dict, headers: dict[int, ShardHeader]) -> list[tuple[str, str]]:
    size, count = meta["key"]["shard_size"], meta["key"]["files"]["count"]
    reasons = {h.first_file + p: r for h in headers.values() for p, r in h.skipped}
    if not reasons:
        return []
    rows = read_csv(out / FILES_FILE, FILE_FIELDS, count)
    return [(row[0], reasons[i]) for i, row in enumerate(rows) if i in reasons and i // size in headers]


def report_skipped(out: Path, meta: dict, headers: dict[int, ShardHeader], max_bad: float) -> int:
    """Write ``skipped.csv`` (the files of complete shards that could not be read) and return how many; more
    than ``max_bad`` of all files is a :class:`TooManyUnreadableError` naming the report."""
    skipped = _skipped_rows(out, meta, headers)
    write_csv(out / SKIPPED_FILE, SKIPPED_FIELDS, skipped)
    total = meta["key"]["files"]["count"]
    if len(skipped) > max_bad * total:
        raise TooManyUnreadableError(
            f"{len(skipped)} of {total} files could not be read (more than --max-bad {max_bad:g}); they are listed "
            f"with the reasons in {out / SKIPPED_FILE}, e.g. {skipped[0][0]} ({skipped[0][1]}). Fix or remove "
            "them, or allow more with --max-bad; the shards written so far are kept"
        )
    return len(skipped)


def _index_rows(out: Path, meta: dict, headers: dict[int, ShardHeader]):
    size = meta["key"]["shard_size"]
    skipped = {h.first_file + p for h in headers.values() for p, _ in h.skipped}
    row, shard = 0, 0
    for i, fields in enumerate(read_csv(out / FILES_FILE, FILE_FIELDS, meta["key"]["files"]["count"])):
        if i // size != shard:
            row, shard = 0, i // size
        if i not in skipped:
            yield (*fields, shard, row)
            row += 1


def _shard_entries(out: Path, headers: dict[int, ShardHeader]) -> list[dict]:
    entries, first_row = [], 0
    for k in sorted(headers):
        h = headers[k]
        digest = sha256_file(out / shard_name(k))
        entries.append(
            {
                "file": shard_name(k),
                "first_file": h.first_file,
                "files": h.files,
                "first_row": first_row,
                "rows": h.rows,
                "sha256": digest,
            }
        )
        first_row += h.rows
    return entries


def finish(out: Path, plan: str, max_bad: float) -> dict | None:
    """Complete the output if every shard of ``plan`` is there: ``skipped.csv``, ``index.csv``, then
    ``meta.json`` with the shards and their sha256 (each atomically; done once, whoever comes first). Returns
    the complete metadata, or None while shards are missing."""
    with file_lock(out / LOCK_FILE):
        meta = read_meta(out)
        if meta is None or meta["plan"] != plan:
            raise PlanMismatchError(
                f"{out} was claimed by another plan while this one ran (--overwrite elsewhere?)"
            )
        if meta["complete"]:
            return meta
        headers = complete_shards(out, meta)
        if len(headers) < shard_count(meta["key"]):
            return None
        skipped = report_skipped(out, meta, headers, max_bad)
        write_csv(out / INDEX_FILE, INDEX_FIELDS, _index_rows(out, meta, headers))
        shards = _shard_entries(out, headers)
        first = next(iter(headers.values()))
        meta.update(
            complete=True,
            rows=sum(h.rows for h in headers.values()),
            skipped=skipped,
            width=first.width,
            dtype=first.dtype,
            shards=shards,
        )
        write_meta(out, meta)
        return meta
