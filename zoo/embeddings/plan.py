"""What an embedding run will write: the sorted file list of the data and the key that names the output.

The data is scanned the way the datasets are (:func:`zoo.data.load_dataset`): a folder at any depth (``folder``:
every image below it, DICOMs included, links back up and special files skipped and named), any registered
dataset below its root (labels and splits kept), or a MedMNIST ``.npz``. Each image becomes a row of
``files.csv`` — its path relative to the data root, size, modification time, label and split — in sorted order;
that text's sha256 is the file list's identity. The *key* (model, revision, weights, pooling, preprocessing,
precision, dtype, shard size, file list) decides whether an existing output may be continued: any difference is
named, never mixed in.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

from zoo.data import MedicalDataset, get_dataset_spec, load_dataset
from zoo.embeddings.format import FILE_FIELDS, FILES_FILE, read_csv

__all__ = ["Plan", "describe_changes", "key_differences", "scan"]

SHOWN = 5  # changed files named per kind of change


@dataclass
class Plan:
    """The images to embed, in order: ``rows[i]`` = (path, size, mtime_ns, label, split) of image ``i``, which
    ``dataset.read(i)`` decodes."""

    root: Path
    dataset: MedicalDataset
    rows: list[tuple[str, int, int, str, str]]
    labelled: bool

    @property
    def count(self) -> int:
        return len(self.rows)

    @functools.cached_property
    def files_text(self) -> str:
        """``files.csv`` as written (its sha256 is the file list's identity)."""
        text = io.StringIO(newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(FILE_FIELDS)
        writer.writerows(self.rows)
        return text.getvalue()

    def file_path(self, i: int) -> Path | None:
        """The file image ``i`` is read from (None for arrays: a ``.npz`` is read whole before the run)."""
        return None if self.dataset.base is None else self.dataset.base / self.dataset.records[i].key


def _dataset_name(data: Path, dataset: str | None) -> str:
    if dataset:
        return dataset
    if data.suffix.lower() == ".npz":
        return "medmnist"
    if data.is_dir():
        return "folder"
    raise ValueError(
        f"{data} is neither a folder nor a MedMNIST .npz file; give a folder of images (any depth), a .npz, or "
        "--dataset NAME with the dataset's root"
    )


def _prefix(root: Path, base: Path) -> str:
    """The dataset's own folder relative to the data root (``archive/BreaKHis 400X/``), or ''."""
    relative = os.path.relpath(base, root)
    return "" if relative == "." else relative.replace(os.sep, "/") + "/"


def _file_rows(root: Path, ds: MedicalDataset, labelled: bool) -> list[tuple[str, int, int, str, str]]:
    prefix, rows = _prefix(root, ds.base), []
    for r in ds.records:
        info = os.stat(ds.base / r.key)
        label = ds.class_names[r.label] if labelled else ""
        rows.append(
            (prefix + r.key, info.st_size, info.st_mtime_ns, label, (r.split or "") if labelled else "")
        )
    return rows


def _array_rows(data: Path, ds: MedicalDataset) -> list[tuple[str, int, int, str, str]]:
    """Rows of an array dataset: the row's key (``train/17``) with the size and time of the ``.npz`` itself."""
    info = os.stat(data)
    return [
        (r.key, info.st_size, info.st_mtime_ns, ds.class_names[r.label], r.split or "") for r in ds.records
    ]


def scan(
    data: str | Path, dataset: str | None = None, options: dict | None = None, channels: int = 3
) -> Plan:
    """The plan for ``data`` (a folder, a dataset root with ``dataset``, or a ``.npz``) read with ``channels``."""
    root = Path(os.path.abspath(Path(data).expanduser()))
    if not root.exists():
        raise FileNotFoundError(
            f"{data} does not exist; give a folder of images, a dataset root or a .npz file"
        )
    name = _dataset_name(root, dataset)
    spec = get_dataset_spec(name)
    if spec.kind == "synthetic":
        raise ValueError(
            "synthetic tiles are generated, not an archive: give a folder, a dataset root or a .npz"
        )
    if spec.kind == "npz" and not root.is_file():
        raise ValueError(f"{root}: give the MedMNIST .npz file itself (e.g. {root}/pathmnist.npz)")
    ds = load_dataset(name, root, channels=channels, **(options or {}))
    labelled = spec.kind != "unlabelled"
    rows = _array_rows(root, ds) if ds.base is None else _file_rows(root, ds, labelled)
    return Plan(root, ds, rows, labelled)


def _flat(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for name, item in value.items() for k, v in _flat(item, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): value}


def key_differences(old: dict, new: dict) -> list[str]:
    """``name: old → new`` for each entry of two keys that differs (``files.sha256`` left to the caller)."""
    a, b = _flat(old), _flat(new)
    names = sorted(set(a) | set(b), key=lambda n: (n.startswith("files."), n))
    return [
        f"{n}: {a.get(n)!r} → {b.get(n)!r}" for n in names if a.get(n) != b.get(n) and n != "files.sha256"
    ]


def _shown(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def describe_changes(folder: Path, old_count: int, plan: Plan) -> str:
    """Which files were added, removed or changed since ``folder/files.csv`` was planned (bounded lists)."""
    try:
        old = {row[0]: tuple(row[1:]) for row in read_csv(folder / FILES_FILE, FILE_FIELDS, old_count)}
    except (OSError, ValueError) as e:
        return f"the earlier file list cannot be read ({e})"
    new = {row[0]: tuple(map(str, row[1:])) for row in plan.rows}
    added = [p for p in new if p not in old]
    removed = [p for p in old if p not in new]
    changed = [p for p in new if p in old and new[p] != old[p]]
    parts = [
        f"{len(v)} {k} ({_shown(v)})"
        for k, v in (("added", added), ("removed", removed), ("modified or relabelled", changed))
        if v
    ]
    return "; ".join(parts) or "the same paths with other contents"
