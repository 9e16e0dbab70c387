"""Seeded, stratified (optionally grouped) train/val/test splits and split manifests.

Splits depend only on the sorted records and the seed, never on file-system order. A *grouped* split keeps
every group (slide, source image, patient) on one side, which removes the leakage of random splits of
patches from the same slide. Multi-label records (``Record.targets``) are split by iterative stratification
(:mod:`zoo.data.stratify`), every label present in every split.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from zoo.data.stratify import iterative_split, missing_labels
from zoo.files import atomic_write_text, read_text, sha256_file

__all__ = [
    "DEFAULT_SPLIT_SEED",
    "Record",
    "SPLITS",
    "assign_splits",
    "target_text",
    "holdout",
    "write_manifest",
    "read_manifest",
    "file_sha256",
]

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_SEED = 16  # the original study's split seed
MANIFEST_FIELDS = ("path", "label", "split", "group")
MAX_FIELD_CHARS = 4096  # PATH_MAX on Linux: no relative path, label or group written here is longer
ROW_BYTES = 512  # what a manifest may take per row on average (real rows take 40 to 200 bytes)
MAX_MANIFEST_ROWS = 1_000_000  # images in a dataset, when the caller does not know how many to expect

log = logging.getLogger(__name__)


@dataclass
class Record:
    """One image: ``key`` (path relative to the dataset root, or an array id), class index, split, group; for a
    multi-label dataset ``targets`` (L float32: 1 present, 0 absent, NaN unknown — an uncertain label under the
    ``ignore`` policy) and ``label`` 0."""

    key: str
    label: int
    split: str | None
    group: str
    targets: np.ndarray | None = None


def target_text(targets: np.ndarray, names) -> str:
    """A multi-label record's label column in ``split.csv``: the present labels joined by ``|`` (NIH's own
    notation), an unknown one followed by ``?``; empty for none (``Edema|Effusion?``)."""
    present = [names[i] for i in np.flatnonzero(targets == 1)]
    unknown = [f"{names[i]}?" for i in np.flatnonzero(np.isnan(targets))]
    return "|".join(present + unknown)


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
    label_names: list[str] | None = None,
) -> None:
    """Set ``record.split`` in place (``label_names``: a multi-label dataset's, for messages).

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
    if records and records[0].targets is not None:
        names = label_names or [str(i) for i in range(len(records[0].targets))]
        _assign_multilabel(
            records, policy, seed, (val_fraction, test_fraction), grouped, merge_official_val, names
        )
        return

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


def _assign_multilabel(
    records: list[Record],
    policy: str,
    seed: int,
    fractions: tuple[float, float],
    grouped: bool,
    merge_official_val: bool,
    label_names: list[str],
) -> None:
    """Multi-label records: ``random`` draws train / val / test in one iterative stratification (test
    ``test_fraction``, val ``val_fraction`` of the rest); ``official`` keeps the official test (and val, unless
    merged) and draws val from the pool. A drawn split where some label has no positive image is an error."""
    val_fraction, test_fraction = fractions
    positives = np.stack([r.targets == 1 for r in records])  # N x L (unknown: not positive)
    groups = np.array([r.group for r in records]) if grouped else None
    everything = np.arange(len(records))
    if policy == "official":
        official = np.array([r.split for r in records], dtype=object)
        if not (official == "test").any():
            raise ValueError("the 'official' split policy needs a test split; use split_policy='random'")
        has_val = (official == "val").any() and not merge_official_val
        if has_val:
            return _set_splits(records, official)
        pool = everything[(official == "train") | (official == "val")]
        names, proportions = ("train", "val"), (1 - val_fraction, val_fraction)
    else:
        pool, names = everything, ("train", "val", "test")
        proportions = (
            (1 - test_fraction) * (1 - val_fraction),
            (1 - test_fraction) * val_fraction,
            test_fraction,
        )
    subset = iterative_split(positives[pool], proportions, seed, None if groups is None else groups[pool])
    missing = missing_labels(positives[pool], subset, len(names))
    if missing:
        label, k = missing[0]
        raise ValueError(
            f"label {label_names[label]!r} has {int(positives[pool, label].sum())} positive image(s): too few for it to appear in "
            f"every split (none in {names[k]}); add images of it, leave the label out (the dataset's labels "
            "option), or reuse a split manifest"
        )
    split = np.array([r.split for r in records], dtype=object)
    split[pool] = np.array(names, dtype=object)[subset]
    _set_splits(records, split)


def _set_splits(records: list[Record], split: np.ndarray) -> None:
    for r, name in zip(records, split, strict=True):
        r.split = str(name)


def write_manifest(path: str | Path, records: list[Record], class_names: list[str]) -> str:
    """Write the split as CSV (path, label name — for multi-label records :func:`target_text` —, split, group),
    atomically; returns its sha256."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(MANIFEST_FIELDS)
    for r in records:
        label = class_names[r.label] if r.targets is None else target_text(r.targets, class_names)
        writer.writerow([r.key, label, r.split, r.group])
    atomic_write_text(path, text.getvalue())
    return file_sha256(path)


def _manifest_text(path: str | Path, max_rows: int) -> str:
    """The manifest's text, bounded: a regular UTF-8 file of at most 64 KiB + ``ROW_BYTES`` a row."""
    try:
        return read_text(path, 65536 + max_rows * ROW_BYTES, "split manifest")
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"split manifest {path} does not exist; give an existing split.csv, or leave split_manifest unset to "
            "draw a split"
        ) from e


def _parse(path: str | Path, text: str, max_rows: int) -> list[tuple[str, ...]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if tuple(header or ()) != MANIFEST_FIELDS:
            raise ValueError(
                f"{path} is not a split manifest: expected the header {','.join(MANIFEST_FIELDS)}"
            )
        rows = []
        for row in reader:
            if len(rows) == max_rows:
                raise ValueError(f"split manifest {path} has more than {max_rows} rows")
            rows.append(tuple(row))
    except csv.Error as e:  # e.g. a field over csv's own limit of 128 KiB
        raise ValueError(
            f"split manifest {path}, line {reader.line_num}: unreadable CSV ({e}); paths, labels and groups are "
            f"at most {MAX_FIELD_CHARS} characters"
        ) from e
    return rows


def _check_rows(path: str | Path, rows: list[tuple[str, ...]]) -> None:
    too_long = next((row for row in rows if any(len(f) > MAX_FIELD_CHARS for f in row)), None)
    if too_long is not None:
        raise ValueError(
            f"split manifest {path}: a field of {max(map(len, too_long))} characters (row starting "
            f"{too_long[0][:40]!r}); paths, labels and groups are at most {MAX_FIELD_CHARS} characters"
        )
    bad = [row for row in rows if len(row) != 4 or row[2] not in SPLITS]
    if bad:
        raise ValueError(f"{path}: {len(bad)} malformed rows, e.g. {bad[0]}; splits must be one of {SPLITS}")
    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        j = first.setdefault(row[0], i)
        if j != i:
            how = f"in {rows[j][2]} and in {row[2]}" if rows[j][2] != row[2] else "twice"
            raise ValueError(
                f"split manifest {path} lists {row[0]!r} {how} (data rows {j + 1} and {i + 1}); "
                "each image must be listed once"
            )


def read_manifest(path: str | Path, max_rows: int = MAX_MANIFEST_ROWS) -> list[tuple[str, str, str, str]]:
    """Rows (path, label name, split, group) of a manifest written by :func:`write_manifest`.

    A manifest may come from anywhere (``split_manifest:`` in a recipe), so it is read bounded — a regular UTF-8
    file of at most 64 KiB + ``ROW_BYTES`` per row for ``max_rows`` rows (never a device such as ``/dev/zero``,
    nor a folder) — and every row checked: four fields of at most ``MAX_FIELD_CHARS`` characters, a known split,
    each path once. Each problem is one ``ValueError`` naming the file.
    """
    rows = _parse(path, _manifest_text(path, max_rows), max_rows)
    _check_rows(path, rows)
    return rows


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (the split manifest hash recorded in model cards)."""
    return sha256_file(path)
