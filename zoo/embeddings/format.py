"""The embedding output, defined once: its file names, shards, CSV files and ``meta.json``, written and read.

An output folder (``medssl-embed MODEL DATA --out DIR``, :func:`zoo.embed`)::

    DIR/meta.json                      what was embedded and how (model, revision, pooling, preprocessing, dtype,
                                       the file list's hash), and once complete the shards with their sha256
    DIR/files.csv                      the plan: every image found (path, size, mtime_ns, label, split), sorted
    DIR/embeddings-00000.safetensors   shard k: the embeddings of files k*S .. (k+1)*S - 1 that could be read,
                                       tensor ``embeddings`` (rows x width, float32 or float16)
    DIR/index.csv                      one row per embedding: path, size, mtime_ns, label, split, shard, row
    DIR/skipped.csv                    the files that could not be read: path, reason
    DIR/.lock                          the lock of the processes writing it

Shards are safetensors, not Parquet: safetensors is pickle-free, memory-mappable, read by numpy, torch and
Hugging Face tools without this project, and already a dependency (pyarrow would add 40+ MB). Each shard records
in its own header the plan it belongs to and the files it skipped, so a shard is complete and trustworthy by
itself: a shard is written whole (temporary file + rename) or not at all, and one of another plan is never
counted. Shards are read here by their header (:func:`read_shard_header`, bounded) and rows by plain reads at the
offsets it declares (:func:`read_rows`): no memory map, so a reader's memory is what it asks for.

Nothing else in the project spells these names.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.files import (
    TEMP_MARK,
    atomic_text_file,
    atomic_write_json,
    is_temporary,
    open_regular,
    read_json,
    save_safetensors,
)

__all__ = [
    "FILES_FILE",
    "FILE_FIELDS",
    "FORMAT",
    "INDEX_FIELDS",
    "INDEX_FILE",
    "LOCK_FILE",
    "META_FILE",
    "SKIPPED_FIELDS",
    "SKIPPED_FILE",
    "TENSOR",
    "VERSION",
    "ShardHeader",
    "foreign_entries",
    "is_output_name",
    "plan_id",
    "read_csv",
    "read_meta",
    "read_rows",
    "read_shard_header",
    "shard_name",
    "shard_number",
    "write_csv",
    "write_meta",
    "write_shard",
]

FORMAT = "medssl-zoo-embeddings"
VERSION = 1
META_FILE = "meta.json"
FILES_FILE = "files.csv"
INDEX_FILE = "index.csv"
SKIPPED_FILE = "skipped.csv"
LOCK_FILE = ".lock"
TENSOR = "embeddings"
FILE_FIELDS = ("path", "size", "mtime_ns", "label", "split")
INDEX_FIELDS = (*FILE_FIELDS, "shard", "row")
SKIPPED_FIELDS = ("path", "reason")
OWN_FILES = frozenset({META_FILE, FILES_FILE, INDEX_FILE, SKIPPED_FILE, LOCK_FILE})
SHARD_NAME = re.compile(r"embeddings-(\d{5,9})\.safetensors")
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}
NAMES = {"float32": "F32", "float16": "F16"}
MAX_META_BYTES = 16 * 2**20  # meta.json: about 200 bytes a shard
MAX_SHARD_HEADER = (
    64 * 2**20
)  # a shard's JSON header: 2048 skipped files with 300-character reasons are 0.7 MB
MAX_ROW_BYTES = 16 * 1024  # a CSV row: a path of PATH_MAX (4096) characters, numbers, a label, a reason
MAX_REASON_CHARS = 300


def shard_name(k: int) -> str:
    """The file name of shard ``k``: ``embeddings-00042.safetensors``."""
    return f"embeddings-{k:05d}.safetensors"


def shard_number(name: str) -> int | None:
    """``k`` for a shard's file name, else None."""
    match = SHARD_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def is_output_name(name: str) -> bool:
    """Whether ``name`` is one this module writes into an output folder (or a temporary file of one)."""
    if is_temporary(name):
        name = name[1:].split(TEMP_MARK)[0]
    return name in OWN_FILES or shard_number(name) is not None


def foreign_entries(folder: Path) -> list[str]:
    """The names in ``folder`` that this project did not write there (sorted)."""
    return sorted(name for name in os.listdir(folder) if not is_output_name(name))


# --- meta.json ---------------------------------------------------------------------------------------------------


def read_meta(folder: Path) -> dict | None:
    """``meta.json`` of an output folder (None when there is none), bounded and checked to be this format's."""
    path = folder / META_FILE
    if not os.path.lexists(path):
        return None
    meta = read_json(path, MAX_META_BYTES, "metadata file")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not the metadata of an embedding output ({FORMAT})")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"{path} is format version {version!r}; this medssl-zoo reads up to {VERSION}: upgrade it"
        )
    key, complete = meta.get("key"), meta.get("complete")
    if not isinstance(key, dict) or meta.get("plan") != plan_id(key) or not isinstance(complete, bool):
        raise ValueError(f"{path} does not match its own plan; it is damaged: embed again with --overwrite")
    return meta


def plan_id(key: dict) -> str:
    """The sha256 of an output's key (canonical JSON): the plan every shard and ``meta.json`` name."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def write_meta(folder: Path, meta: dict) -> None:
    atomic_write_json(folder / META_FILE, meta)


# --- CSV files ---------------------------------------------------------------------------------------------------


def write_csv(path: Path, fields: tuple[str, ...], rows: Iterable[Iterable]) -> None:
    """A CSV file (a header, then ``rows``) written line by line through a temporary file and a rename."""
    with atomic_text_file(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(fields)
        writer.writerows(rows)


def read_csv(path: Path, fields: tuple[str, ...], max_rows: int) -> Iterator[list[str]]:
    """The rows of a CSV file of this format, streamed: a regular file of at most ``MAX_ROW_BYTES`` a row for
    ``max_rows`` rows, with exactly the header ``fields``; any other shape is a ``ValueError`` naming the file."""
    with open_regular(path, "embedding table") as raw:
        if os.fstat(raw.fileno()).st_size > 65536 + max_rows * MAX_ROW_BYTES:
            raise ValueError(f"{path} is larger than {max_rows} rows of {path.name} can be; it is not ours")
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        try:
            if tuple(next(reader, ())) != fields:
                raise ValueError(f"{path} does not start with the header {','.join(fields)}")
            for n, row in enumerate(reader):
                if n >= max_rows or len(row) != len(fields):
                    raise ValueError(
                        f"{path}, line {reader.line_num}: not a row of {len(fields)} fields, or one too many"
                    )
                yield row
        except (csv.Error, UnicodeDecodeError) as e:
            raise ValueError(f"{path}, line {reader.line_num}: unreadable CSV ({e})") from e


# --- shards ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardHeader:
    """What a shard's header declares: the plan it belongs to, the files it covers (``first_file`` .. +
    ``files``), which of them were skipped (position within the shard, reason), and where its rows are."""

    plan: str
    shard: int
    first_file: int
    files: int
    skipped: tuple[tuple[int, str], ...]
    rows: int
    width: int
    dtype: str  # "float32" or "float16"
    data_offset: int  # byte offset of row 0 in the file

    @property
    def row_bytes(self) -> int:
        return self.width * np.dtype(self.dtype).itemsize


def write_shard(
    path: Path,
    embeddings: torch.Tensor,
    plan: str,
    shard: int,
    first_file: int,
    files: int,
    skipped: list[tuple[int, str]],
) -> None:
    """Shard ``shard`` (rows x width) with its header, written whole through a temporary file and a rename.

    The header's own fields are one JSON value under one metadata key: safetensors writes several keys in a
    different order in every process, and a shard's bytes must not depend on which process wrote it."""
    fields = {
        "version": VERSION,
        "plan": plan,
        "shard": shard,
        "first_file": first_file,
        "files": files,
        "skipped": [[p, r[:MAX_REASON_CHARS]] for p, r in skipped],
    }
    save_safetensors({TENSOR: embeddings}, path, metadata={FORMAT: json.dumps(fields, sort_keys=True)})


def _raw_header(path: Path) -> tuple[dict, int, int]:
    """(the JSON header, its end offset, the file size) of a safetensors file, bounded: a regular file only."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise ValueError(f"{path} is not a regular file (a link, folder, pipe or device)")
    with open_regular(path, "embedding shard") as f:
        size = os.fstat(f.fileno()).st_size
        length = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        if not 2 <= length <= min(MAX_SHARD_HEADER, size - 8):
            raise ValueError(f"{path} is not a safetensors file (header of {length} bytes in {size})")
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} has an unreadable safetensors header ({e})") from e
    return header, 8 + length, size


def _header_field(fields: dict, key: str, path: Path) -> int:
    value = fields.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{path}: its header has no valid {key!r}; it is not a shard of an embedding output")
    return value


def _skipped(fields: dict, files: int, path: Path) -> tuple[tuple[int, str], ...]:
    try:
        items = tuple((int(p), str(r)) for p, r in fields.get("skipped", []))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its list of skipped files is unreadable ({e})") from e
    if any(not 0 <= p < files for p, _ in items) or len({p for p, _ in items}) != len(items):
        raise ValueError(f"{path}: its list of skipped files names positions outside the shard")
    return items


def _fields(header: dict, path: Path) -> dict:
    """The shard's own header fields (one JSON value under the format's metadata key)."""
    meta = header.get("__metadata__")
    try:
        fields = (
            json.loads(meta[FORMAT])
            if isinstance(meta, dict) and set(header) == {"__metadata__", TENSOR}
            else None
        )
    except (TypeError, ValueError):
        fields = None
    if not isinstance(fields, dict):
        raise ValueError(f"{path} is not a shard of an embedding output ({FORMAT})")
    return fields


def read_shard_header(path: Path) -> ShardHeader:
    """The header of shard ``path``, every declaration checked against the file (``ValueError`` otherwise): one
    tensor ``embeddings`` of float32 or float16, rows = files - skipped, its bytes exactly the rest of the file."""
    header, data_start, size = _raw_header(path)
    fields = _fields(header, path)
    files = _header_field(fields, "files", path)
    skipped = _skipped(fields, files, path)
    try:
        tensor = header[TENSOR]
        dtype, (rows, width), (begin, end) = tensor["dtype"], tensor["shape"], tensor["data_offsets"]
        rows, width, begin, end = int(rows), int(width), int(begin), int(end)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: the tensor {TENSOR!r} is not a rows x width matrix") from e
    name = {v: k for k, v in NAMES.items()}.get(dtype)
    if name is None or rows != files - len(skipped) or width < 1 or begin != 0:
        raise ValueError(f"{path}: {TENSOR} is {dtype} {rows} x {width}, not what its header declares")
    if end != rows * width * DTYPES[dtype].itemsize or data_start + end != size:
        raise ValueError(f"{path} is truncated or padded: {size} bytes for {rows} x {width} {name}")
    return ShardHeader(
        str(fields.get("plan", "")),
        _header_field(fields, "shard", path),
        _header_field(fields, "first_file", path),
        files,
        skipped,
        rows,
        width,
        name,
        data_start,
    )


def read_rows(
    path: Path, header: ShardHeader, start: int = 0, stop: int | None = None, buffer: np.ndarray | None = None
) -> np.ndarray:
    """Rows ``start:stop`` of a shard as a (stop - start) x width array of its dtype, read (not mapped) — into
    the front of ``buffer`` when one is given (a flat array of that dtype, large enough: reused, no new pages)."""
    stop = header.rows if stop is None else min(stop, header.rows)
    if not 0 <= start <= stop:
        raise ValueError(f"rows {start}:{stop} are outside {path.name} ({header.rows} rows)")
    shape, dtype = (stop - start, header.width), DTYPES[NAMES[header.dtype]]
    out = np.empty(shape, dtype) if buffer is None else buffer[: shape[0] * shape[1]].reshape(shape)
    with open_regular(path, "embedding shard") as f:
        f.seek(header.data_offset + start * header.row_bytes)
        if f.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise ValueError(f"{path} became shorter while being read")
    return out


def rows_in_chunks(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(start, stop) pairs covering ``range(total)`` in steps of ``chunk``."""
    for start in range(0, total, max(1, chunk)):
        yield start, min(total, start + chunk)


def chunk_rows(width: int, budget_bytes: int, extra_per_row: int = 0) -> int:
    """How many rows of ``width`` float32 values (plus ``extra_per_row`` bytes each) fit in ``budget_bytes``."""
    return max(1, math.floor(budget_bytes / (4 * width + extra_per_row)))
