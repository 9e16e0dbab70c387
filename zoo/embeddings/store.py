"""Reading a complete embedding output: its metadata, rows in bounded chunks, the index, and verification.

An output may come from anyone (a colleague's folder, a download): ``meta.json`` is read bounded and checked, each
shard's header is checked against what ``meta.json`` declares when the output is opened, and rows are read with
plain reads in chunks whose size the caller bounds — never the whole archive unless :meth:`Embeddings.to_numpy`
is asked for. :meth:`Embeddings.verify` also checks every shard's sha256 and the index.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.embeddings.format import (
    DTYPES,
    INDEX_FIELDS,
    INDEX_FILE,
    NAMES,
    ShardHeader,
    read_csv,
    read_meta,
    read_rows,
    read_shard_header,
    rows_in_chunks,
)
from zoo.files import sha256_file

__all__ = ["Embeddings", "ModelMismatchError", "open_embeddings"]

log = logging.getLogger(__name__)
MAX_SHARDS = 100_000


class ModelMismatchError(ValueError):
    """The embeddings were made with another model than the one they are used with."""


@dataclass(frozen=True)
class _Shard:
    path: Path
    first_row: int
    header: ShardHeader
    sha256: str


def _shards(folder: Path, meta: dict) -> list[_Shard]:
    entries = meta.get("shards")
    if not isinstance(entries, list) or len(entries) > MAX_SHARDS:
        raise ValueError(f"{folder}/meta.json lists no shards; the output is damaged: embed again")
    shards, first_row = [], 0
    for entry in entries:
        try:
            name, rows, declared = str(entry["file"]), int(entry["rows"]), int(entry["first_row"])
            path = folder / Path(name).name  # a name inside the folder, never a path elsewhere
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{folder}/meta.json: a malformed shard entry ({e})") from e
        if not os.path.lexists(path):
            raise ValueError(
                f"{folder}/meta.json lists {path.name}, which is not there: the output is damaged"
            )
        header = read_shard_header(path)
        if header.plan != meta["plan"] or header.rows != rows or declared != first_row:
            raise ValueError(
                f"{path} is not the shard meta.json declares; the output is damaged: embed again"
            )
        shards.append(_Shard(path, first_row, header, str(entry.get("sha256", ""))))
        first_row += rows
    return shards


class Embeddings:
    """A complete embedding output (``medssl-embed``, :func:`zoo.embed`), opened for reading.

    Attributes: ``folder``, ``meta`` (``meta.json``), ``width``, ``dtype``; ``len()`` is the number of rows.

    Example:
        >>> emb = zoo.embeddings.open("out/")
        >>> hits = emb.search(query, k=5)  # exact cosine nearest neighbours
        >>> emb.records(hits.rows[0])      # their paths, labels, splits
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta = read_meta(self.folder)
        if meta is None:
            raise FileNotFoundError(
                f"{self.folder} holds no embedding output (no meta.json); make one with medssl-embed"
            )
        if meta.get("complete") is not True:
            raise ValueError(
                f"{self.folder} is not complete yet; run the same medssl-embed command again to finish it"
            )
        self.meta = meta
        self.shards = _shards(self.folder, meta)
        widths = {s.header.width for s in self.shards}
        if len(widths) > 1:
            raise ValueError(
                f"{self.folder}: shards of different widths {sorted(widths)}; the output is damaged"
            )
        self.width = widths.pop() if widths else int(meta["key"]["model"]["width"])
        self.dtype = self.shards[0].header.dtype if self.shards else meta["key"]["dtype"]

    def __len__(self) -> int:
        return sum(s.header.rows for s in self.shards)

    def __repr__(self) -> str:
        return f"Embeddings({str(self.folder)!r}, {len(self)} x {self.width} {self.dtype}, model {self.model_name!r})"

    @property
    def model_name(self) -> str:
        return str(self.meta.get("model_name", ""))

    @property
    def model(self) -> dict:
        """The model's identity: architecture, revision, weights_sha256, pooling, width."""
        return dict(self.meta["key"]["model"])

    @property
    def preprocessing(self) -> dict:
        return dict(self.meta["key"]["preprocessing"])

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 array of at most ``rows`` x width) over all rows in order: memory of one chunk.
        The array is a view of a buffer reused for the next chunk: copy it to keep it."""
        raw = np.empty(rows * self.width, dtype=DTYPES[NAMES[self.dtype]])
        as_float = raw if raw.dtype == np.float32 else np.empty(rows * self.width, dtype=np.float32)
        for shard in self.shards:
            for start, stop in rows_in_chunks(shard.header.rows, rows):
                part = read_rows(shard.path, shard.header, start, stop, raw)
                if as_float is not raw:  # float16 storage: converted into the float32 buffer
                    converted = as_float[: part.size].reshape(part.shape)
                    np.copyto(converted, part)
                    part = converted
                yield shard.first_row + start, part

    def to_numpy(self) -> np.ndarray:
        """Every row as one N x width array of the stored dtype (the whole archive in memory)."""
        parts = [read_rows(s.path, s.header) for s in self.shards]
        return np.concatenate(parts) if parts else np.empty((0, self.width), dtype=self.dtype)

    def records(self, rows: Iterable[int] | None = None) -> list[dict]:
        """The index rows (path, size, mtime_ns, label, split, shard, row) of ``rows`` in the order given (all
        rows when None); one pass over ``index.csv``, only the wanted rows kept."""
        wanted = None if rows is None else [int(r) for r in rows]
        keep = None if wanted is None else set(wanted)
        found = {}
        for i, fields in enumerate(read_csv(self.folder / INDEX_FILE, INDEX_FIELDS, len(self))):
            if keep is None or i in keep:
                found[i] = _record(fields)
        missing = [] if wanted is None else [r for r in wanted if r not in found]
        if missing:
            raise IndexError(f"rows {missing[:5]} are not in {self.folder} ({len(self)} rows)")
        return list(found.values()) if wanted is None else [found[r] for r in wanted]

    def search(self, queries, k: int = 10, **options):
        """Exact cosine nearest neighbours of ``queries`` (see :func:`zoo.embeddings.search.search`)."""
        from zoo.embeddings.search import search

        return search(self, queries, k, **options)

    def check_model(self, identity: dict, name: str = "the model") -> None:
        """Refuse (``ModelMismatchError``) when ``identity`` (:attr:`zoo.embeddings.Encoder.identity`) is not the
        model these embeddings were made with: weights, revision, pooling or width."""
        ours = self.model
        keys = ("weights_sha256", "revision", "pooling", "width")
        different = [
            f"{k} {ours.get(k)!r} here, {identity.get(k)!r} for {name}"
            for k in keys
            if ours.get(k) != identity.get(k)
        ]
        if different:
            raise ModelMismatchError(
                f"{self.folder} was embedded with {self.model_name or 'another model'}, not {name}: "
                f"{'; '.join(different)}. Embed the archive with {name} (medssl-embed)"
            )

    def verify(self) -> None:
        """Check every shard's sha256 against ``meta.json`` and the index's length (``ValueError`` naming the
        first problem)."""
        for shard in self.shards:
            if sha256_file(shard.path) != shard.sha256:
                raise ValueError(
                    f"{shard.path} does not match its sha256 in meta.json; it was changed or damaged"
                )
        rows = sum(1 for _ in read_csv(self.folder / INDEX_FILE, INDEX_FIELDS, len(self)))
        if rows != len(self):
            raise ValueError(f"{self.folder / INDEX_FILE} has {rows} rows for {len(self)} embeddings")


def _record(fields: list[str]) -> dict:
    record = dict(zip(INDEX_FIELDS, fields, strict=True))
    for name in ("size", "mtime_ns", "shard", "row"):
        record[name] = int(record[name])
    return record


def open_embeddings(folder: str | Path) -> Embeddings:
    """A complete embedding output, opened for reading (``zoo.embeddings.open``)."""
    return Embeddings(folder)
