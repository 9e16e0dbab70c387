"""Seeded, stratified (optionally grouped) train/val/test splits and split manifests.

Splits depend only on the sorted records and the seed, never on file-system order. A *grouped* split keeps
every group (slide, source image, patient) on one side, which removes the leakage of random splits of
patches from the same slide.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

__all__ = ["Record", "SPLITS", "assign_splits", "holdout", "write_manifest", "read_manifest", "file_sha256"]

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ("path", "label", "split", "group")

log = logging.getLogger(__name__)


@dataclass
class Record:
    """One image: ``key`` (path relative to the dataset root, or an array id), class index, split, group."""

    key: str
    label: int
    split: str | None
    group: str


def holdout(
    indices: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held out ≈ ``fraction``), stratified by label and, with ``groups``,
    never splitting a group. Raises ``ValueError`` when a class is too small to appear on both sides."""
    if not 0 < fraction < 1:
        raise ValueError(f"a split fraction must be in (0, 1), got {fraction}")
    y = labels[indices]
    counts = np.bincount(y)
    if (counts[counts > 0] < 2).any():
        raise ValueError(
            f"cannot stratify a {fraction:.0%} hold-out: some class has a single image "
            f"(class counts {counts.tolist()}); add images or use a manifest."
        )
    if groups is None:
        n_classes = int((counts > 0).sum())
        n_held = max(int(round(fraction * len(indices))), n_classes)
        if n_held > len(indices) - n_classes:
            raise ValueError(f"{len(indices)} images are too few for a stratified {fraction:.0%} hold-out")
        kept, held = train_test_split(indices, test_size=n_held, stratify=y, random_state=seed)
        return np.sort(kept), np.sort(held)
    n_groups = len(np.unique(groups[indices]))
    n_splits = min(max(2, round(1 / fraction)), n_groups)
    if n_splits < 2:
        raise ValueError(f"a grouped hold-out needs at least 2 groups, found {n_groups}")
    if n_splits < round(1 / fraction):
        log.warning(
            "only %d groups: the grouped hold-out is 1/%d instead of %.0f%%",
            n_groups,
            n_splits,
            100 * fraction,
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    kept, held = next(folds.split(indices, y, groups[indices]))
    return np.sort(indices[kept]), np.sort(indices[held])


def assign_splits(
    records: list[Record],
    *,
    policy: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    grouped: bool = False,
    merge_official_val: bool = True,
) -> None:
    """Set ``record.split`` in place.

    Policies:
        ``official``: keep the dataset's official test split; official train (+ val if
            ``merge_official_val``) is pooled and ``val_fraction`` of it becomes val — the study's protocol.
        ``random``: a stratified ``test_fraction`` hold-out, then ``val_fraction`` of the rest → val.
        ``all-train``: everything is train (unlabelled archives: there is nothing to validate or test on).
    """
    if policy == "all-train":
        for r in records:
            r.split = "train"
        return
    if policy not in ("official", "random"):
        raise ValueError(f"unknown split policy {policy!r}; valid: official, random, all-train")

    labels = np.array([r.label for r in records])
    groups = np.array([r.group for r in records]) if grouped else None
    everything = np.arange(len(records))
    if policy == "official":
        official = np.array([r.split for r in records], dtype=object)
        if not (official == "test").any():
            raise ValueError("the 'official' split policy needs a test folder; use split_policy='random'")
        test = everything[official == "test"]
        pool_mask = (official == "train") | ((official == "val") & merge_official_val)
        pool = everything[pool_mask]
        fixed_val = everything[(official == "val") & (not merge_official_val)]
    else:
        pool, test = holdout(everything, labels, groups, test_fraction, seed)
        fixed_val = np.array([], dtype=int)
    if len(fixed_val):
        train, val = pool, fixed_val
    else:
        train, val = holdout(pool, labels, groups, val_fraction, seed)
    for name, idx in (("train", train), ("val", val), ("test", test)):
        for i in idx:
            records[i].split = name


def write_manifest(path: str | Path, records: list[Record], class_names: list[str]) -> str:
    """Write the split as CSV (path, label name, split, group), atomically; returns its sha256."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_FIELDS)
        for r in records:
            writer.writerow([r.key, class_names[r.label], r.split, r.group])
    tmp.replace(path)
    return file_sha256(path)


def read_manifest(path: str | Path) -> list[tuple[str, str, str, str]]:
    """Rows (path, label name, split, group) of a manifest written by :func:`write_manifest`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if tuple(header or ()) != MANIFEST_FIELDS:
            raise ValueError(
                f"{path} is not a split manifest: expected the header {','.join(MANIFEST_FIELDS)}"
            )
        rows = [tuple(row) for row in reader]
    bad = [row for row in rows if len(row) != 4 or row[2] not in SPLITS]
    if bad:
        raise ValueError(f"{path}: {len(bad)} malformed rows, e.g. {bad[0]}; splits must be one of {SPLITS}")
    return rows


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (the split manifest hash recorded in model cards)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
