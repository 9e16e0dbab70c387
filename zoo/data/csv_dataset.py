"""The ``multilabel-csv`` dataset: an image folder and a labels CSV (:mod:`zoo.data.labels_csv`) as records.

The CSV is the ``csv`` option (a path below the folder) or the one ``.csv`` file in the folder or a sub-folder of
it. Its image values are matched against the images found below the folder (:func:`list_image_paths`: junk,
links back up and unreadable names skipped), never opened by themselves: a value is a path relative to the
folder (or to the CSV's own folder; CheXpert's ``CheXpert-v1.0-small/train/…`` also when the folder given is
``CheXpert-v1.0-small`` itself), or a bare file name found anywhere below it (NIH's ``images_001/images/``). A
value that is absolute or climbs out with ``..`` refuses the CSV. Groups (for grouped splits) are the patient
column's values, else CheXpert's ``patientNNNNN`` folder, else the image itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

from zoo.data.labels_csv import PATIENT_IN_PATH, LabelsTable, read_labels_csv
from zoo.data.layout import is_junk, list_image_paths
from zoo.data.splits import Record

__all__ = ["find_labels_csv", "load_csv_records"]

log = logging.getLogger(__name__)
AMBIGUOUS = ""  # a file name found more than once below the folder


def _inside(root: Path, value: str, what: str) -> PurePosixPath:
    """``value`` as a relative path that stays below ``root``; ``ValueError`` naming it otherwise."""
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute() or (len(value) > 1 and value[1] == ":") or ".." in path.parts:
        raise ValueError(
            f"{what} {value[:120]!r} names a file outside the dataset folder {root}; give paths relative to it"
        )
    return path


def find_labels_csv(root: Path, name: str | None) -> Path:
    """The labels CSV: ``name`` below ``root``, or the only ``.csv`` in ``root`` or one of its sub-folders."""
    if name is not None:
        if not isinstance(name, str):
            raise ValueError(f"csv must be a file name below the dataset folder, got {name!r}")
        path = root / _inside(root, name, "csv option")
        if not path.is_file():
            raise FileNotFoundError(
                f"multilabel-csv: no labels CSV {name!r} in {root}; name a .csv file below it"
            )
        return path
    found = sorted(p for p in root.glob("*.csv") if not is_junk(p.name))
    if not found:
        found = sorted(p for p in root.glob("*/*.csv") if not is_junk(p.name) and not is_junk(p.parent.name))
    if len(found) != 1:
        listed = ", ".join(p.relative_to(root).as_posix() for p in found[:6]) or "none"
        raise ValueError(
            f"multilabel-csv: {len(found)} .csv files in {root} ({listed}); name the labels CSV with "
            "--dataset-options '{csv: NAME.csv}'"
        )
    return found[0]


class _Matcher:
    """CSV values → keys of the images below ``root`` (relative POSIX paths), see the module docstring."""

    def __init__(self, root: Path, csv_path: Path, keys: list[str]):
        self.root, self.keys, self.where = root, set(keys), f"labels CSV {csv_path.name}, line"
        self.csv_dir = PurePosixPath(csv_path.parent.relative_to(root).as_posix())
        self.by_name: dict[str, str] = {}
        for key in keys:
            name = key.rsplit("/", 1)[-1]
            self.by_name[name] = AMBIGUOUS if name in self.by_name else key
        self.own_names = {root.name, csv_path.parent.name}

    def __call__(self, line: int, value: str) -> str | None:
        path = _inside(self.root, value, f"{self.where} {line}:")
        if len(path.parts) == 1:
            key = self.by_name.get(path.name)
            if key == AMBIGUOUS:
                raise ValueError(
                    f"{self.where} {line}: {value!r} is the name of several images below {self.root}; give paths in the CSV"
                )
            return key
        candidates = [path, self.csv_dir / path]
        if path.parts[0] in self.own_names:
            candidates.append(PurePosixPath(*path.parts[1:]))
        return next((c.as_posix() for c in candidates if c.as_posix() in self.keys), None)


def _group(key: str, patient: str | None) -> str:
    if patient:
        return f"patient/{patient}"
    match = PATIENT_IN_PATH.search(key)
    return match.group(1) if match else key


def load_csv_records(
    root: Path, extensions: tuple[str, ...], csv: str | None = None, **options
) -> tuple[list[str], list[Record], bool]:
    """(label names, records with their targets, whether the groups are patients) of an image folder and its
    labels CSV; ``options`` go to :func:`read_labels_csv`."""
    path = find_labels_csv(root, csv)
    prefix = len(os.fspath(root).rstrip(os.sep)) + 1
    keys = [p[prefix:].replace(os.sep, "/") for p in list_image_paths(root, extensions)]
    matcher = _Matcher(root, path, keys)
    table = read_labels_csv(path, matcher, **options)
    _report(root, path, table, len(keys))
    records = [
        Record(key, 0, None, _group(key, patient), targets)
        for key, patient, targets in zip(table.keys, table.patients, table.targets, strict=True)
    ]
    patients = any(p for p in table.patients) or any(PATIENT_IN_PATH.search(k) for k in table.keys)
    return table.label_names, records, patients


def _report(root: Path, path: Path, table: LabelsTable, images: int) -> None:
    if len(table.keys) < 2:
        raise ValueError(
            f"multilabel-csv: {len(table.keys)} row(s) of {path.name} name one of the {images} images below {root} "
            f"(e.g. {', '.join(table.missing_examples[:3]) or 'no rows'}); the CSV's image column must name them"
        )
    if table.missing:
        log.warning(
            "%s: %d row(s) name images that are not below %s (skipped), e.g. %s",
            path.name,
            table.missing,
            root,
            ", ".join(table.missing_examples),
        )
    unlabelled = images - len(table.keys)
    if unlabelled:
        log.info(
            "%s: %d image(s) below %s have no row in %s (not used)", root.name, unlabelled, root, path.name
        )
    log.info(
        "%s: %s layout, %d labels, %d labelled images",
        path.name,
        table.layout,
        len(table.label_names),
        len(table.keys),
    )
