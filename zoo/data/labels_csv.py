"""Multi-label findings from a CSV beside an image folder, in the two layouts chest X-ray datasets ship.

- **NIH style** (ChestX-ray14's ``Data_Entry_2017.csv``): an ``Image Index`` column naming each file (found
  anywhere below the folder: the images come in ``images_001/images/`` … zips) and a ``Finding Labels`` column of
  findings separated by ``|``, ``No Finding`` meaning none. The labels are every finding named (sorted), or the
  ``labels`` option.
- **CheXpert style** (``train.csv``, also MIMIC-CXR's ``chexpert.csv``): a ``Path`` column and one column per
  finding holding ``1`` (present), ``0`` (absent), ``-1`` (uncertain) or nothing (not mentioned: absent, as the
  CheXpert labeller's own evaluation counts it). Every column that is not metadata (``Sex``, ``Age``,
  ``Frontal/Lateral``, ``AP/PA``, a patient column) is a finding, or the ``labels`` option names them. Uncertain
  labels follow the ``uncertain`` policy of Irvin et al., "CheXpert", AAAI 2019: ``zeros`` (U-Zeros), ``ones``
  (U-Ones) or ``ignore`` (U-Ignore: the label is unknown for that image, NaN, and left out of every loss and
  metric).

The CSV comes from anywhere, so it is read as a stream and bounded before anything grows with it: a regular
UTF-8 file of at most :data:`MAX_CSV_BYTES`, at most :data:`MAX_COLUMNS` columns and :data:`MAX_LABELS` labels
(checked on the header, before a row is read), fields of at most :data:`MAX_FIELD_CHARS` characters and at most
:data:`MAX_ROWS` rows. Only rows naming an image of the folder are kept; a row naming a path outside the folder
(absolute, or with ``..``) refuses the whole file.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.files import FileTooLargeError, open_regular

__all__ = [
    "MAX_COLUMNS",
    "MAX_CSV_BYTES",
    "MAX_LABELS",
    "MAX_ROWS",
    "UNCERTAIN_POLICIES",
    "LabelsTable",
    "read_labels_csv",
]

log = logging.getLogger(__name__)
MAX_CSV_BYTES = 256 * 2**20  # CheXpert's train.csv is 31 MB (223 k rows), NIH's 7.9 MB
MAX_COLUMNS = 1024  # CheXpert has 19 columns, PadChest's findings are fewer than 200
MAX_LABELS = 1000
MAX_ROWS = 2_000_000  # MIMIC-CXR's label file has 377 k rows
MAX_FIELD_CHARS = 4096  # PATH_MAX on Linux
MAX_NAME_CHARS = 200  # a label name (config.json's label_names are at most this)
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
LAYOUTS = ("auto", "nih", "chexpert")
NIH_IMAGE, NIH_FINDINGS, NO_FINDING = "Image Index", "Finding Labels", "No Finding"
CHEXPERT_IMAGE = "Path"
PATIENT_COLUMNS = ("Patient ID", "patient_id", "PatientID", "subject_id")
METADATA = {"Sex", "Age", "Frontal/Lateral", "AP/PA", "Follow-up #", "Patient Age", "Patient Gender"}
CHEXPERT_VALUES = {"": 0.0, "0": 0.0, "0.0": 0.0, "1": 1.0, "1.0": 1.0, "-1": -1.0, "-1.0": -1.0}


@dataclass
class LabelsTable:
    """The rows of a labels CSV that name images of the folder.

    Shape:
        targets: N x L float32 (1 present, 0 absent, NaN unknown); keys, patients: N.
    """

    layout: str
    label_names: list[str]
    keys: list[str]
    targets: np.ndarray
    patients: list[str | None]
    missing: int  # rows whose image is not in the folder
    missing_examples: list[str]


@dataclass(frozen=True)
class Columns:
    """Where a layout's values are: the image column, the patient column (or None), the finding columns."""

    layout: str
    image: int
    patient: int | None
    findings: tuple[int, ...]  # CheXpert: one column per label; NIH: the one Finding Labels column


def _fail(path: Path, line: int, why: str) -> ValueError:
    return ValueError(f"labels CSV {path.name}, line {line}: {why}")


def _layout(path: Path, header: list[str], layout: str, image_column: str | None) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout != "auto":
        return layout
    if NIH_FINDINGS in header:
        return "nih"
    if CHEXPERT_IMAGE in header or (image_column and image_column in header):
        return "chexpert"
    raise _fail(
        path,
        1,
        f"neither NIH style ({NIH_IMAGE!r} and {NIH_FINDINGS!r} columns) nor CheXpert style (a {CHEXPERT_IMAGE!r} "
        f"column and one column per finding); its columns: {', '.join(header[:8])}",
    )


def _column(path: Path, header: list[str], name: str, what: str) -> int:
    if name not in header:
        raise _fail(path, 1, f"no {what} column {name!r}; its columns: {', '.join(header[:8])}")
    return header.index(name)


def _check_names(path: Path, names: list[str], line: int = 1) -> list[str]:
    if len(names) > MAX_LABELS:
        raise _fail(
            path, line, f"{len(names)} labels, more than {MAX_LABELS}; name the ones to use (labels option)"
        )
    for name in names:
        if not name.strip() or len(name) > MAX_NAME_CHARS or "|" in name or name.endswith("?"):
            raise _fail(
                path,
                line,
                f"label name {name[:40]!r} is not usable (empty, over {MAX_NAME_CHARS} characters, with '|' or "
                "ending in '?')",
            )
    return names


def _columns(path: Path, header: list[str], options: dict) -> tuple[Columns, list[str] | None]:
    """The layout's columns and, for CheXpert, the label names (NIH's are found in the rows)."""
    layout = _layout(path, header, options["layout"], options["image_column"])
    image = options["image_column"] or (NIH_IMAGE if layout == "nih" else CHEXPERT_IMAGE)
    image_at = _column(path, header, image, "image")
    patient = options["patient_column"] or next((c for c in PATIENT_COLUMNS if c in header), None)
    patient_at = _column(path, header, patient, "patient") if patient else None
    if layout == "nih":
        return Columns(layout, image_at, patient_at, (_column(path, header, NIH_FINDINGS, "findings"),)), None
    used = {image, patient, *METADATA}
    names = list(options["labels"] or [h for h in header if h not in used])
    findings = tuple(_column(path, header, name, "finding") for name in _check_names(path, names))
    if not findings:
        raise _fail(path, 1, "no finding columns besides the image and metadata columns")
    return Columns(layout, image_at, patient_at, findings), names


def _header(path: Path, reader) -> list[str]:
    header = next(reader, None)
    if not header:
        raise ValueError(f"labels CSV {path.name} is empty; give a CSV with a header row")
    if len(header) > MAX_COLUMNS:
        raise _fail(
            path, 1, f"{len(header)} columns, more than {MAX_COLUMNS}; keep the image and finding columns"
        )
    header = [h.strip() for h in header]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise _fail(path, 1, f"column {twice[0]!r} appears more than once")
    return header


def _chexpert_targets(path: Path, line: int, row: list[str], columns: Columns, uncertain: str) -> np.ndarray:
    targets = np.empty(len(columns.findings), np.float32)
    for i, at in enumerate(columns.findings):
        value = CHEXPERT_VALUES.get(row[at].strip())
        if value is None:
            raise _fail(
                path,
                line,
                f"{row[at][:40]!r} is not 1, 0, -1 or empty; name the finding columns (labels option)",
            )
        if value < 0:
            value = {"zeros": 0.0, "ones": 1.0, "ignore": np.nan}[uncertain]
        targets[i] = value
    return targets


class _Findings:
    """NIH's ``Finding Labels``: names discovered row by row (bounded), then sorted into label indices."""

    def __init__(self, path: Path, labels: list[str] | None):
        self.path, self.fixed = path, labels
        self.index: dict[str, int] = {name: i for i, name in enumerate(labels or [])}

    def __call__(self, line: int, text: str) -> list[int]:
        names = [n.strip() for n in text.split("|") if n.strip() and n.strip() != NO_FINDING]
        for name in names:
            if name not in self.index and self.fixed is None:
                _check_names(self.path, [*self.index, name], line)
                self.index[name] = len(self.index)
        return [self.index[n] for n in names if n in self.index]

    def targets(self, rows: list[list[int]]) -> tuple[list[str], np.ndarray]:
        names = list(self.fixed) if self.fixed is not None else sorted(self.index)
        position = {self.index[n]: i for i, n in enumerate(names)}
        targets = np.zeros((len(rows), len(names)), np.float32)
        for r, found in enumerate(rows):
            targets[r, [position[i] for i in found]] = 1.0
        return names, targets


def _check_row(path: Path, line: int, row: list[str], width: int, count: int) -> None:
    if count > MAX_ROWS:
        raise _fail(path, line, f"more than {MAX_ROWS} rows; keep the rows of the images used")
    if len(row) != width:
        raise _fail(path, line, f"{len(row)} fields under a header of {width}")
    longest = max(map(len, row), default=0)
    if longest > MAX_FIELD_CHARS:
        raise _fail(path, line, f"a field of {longest} characters; fields are at most {MAX_FIELD_CHARS}")


def _rows(path: Path, f, options: dict, match: Callable[[int, str], str | None]) -> LabelsTable:
    reader = csv.reader(io.TextIOWrapper(f, encoding="utf-8-sig", newline=""))
    header = _header(path, reader)
    columns, names = _columns(path, header, options)
    nih = _Findings(path, options["labels"]) if columns.layout == "nih" else None
    keys, found, patients, missing, examples, seen = [], [], [], 0, [], {}
    for row in reader:
        line = reader.line_num
        _check_row(path, line, row, len(header), len(keys) + missing + 1)
        key = match(line, row[columns.image].strip())
        if key is None:
            missing, examples = missing + 1, (examples + [row[columns.image][:80]])[:5]
            continue
        if key in seen:
            raise _fail(path, line, f"{key!r} is labelled twice (lines {seen[key]} and {line}); keep one row")
        seen[key] = line
        keys.append(key)
        patients.append(row[columns.patient].strip() if columns.patient is not None else None)
        if nih is not None:
            found.append(nih(line, row[columns.findings[0]]))
        else:
            found.append(_chexpert_targets(path, line, row, columns, options["uncertain"]))
    if nih is not None:
        names, targets = nih.targets(found)
    else:
        targets = np.stack(found) if found else np.zeros((0, len(names)), np.float32)
    return LabelsTable(columns.layout, names, keys, targets, patients, missing, examples)


def _options(options: dict) -> dict:
    unknown = set(options) - {"layout", "uncertain", "labels", "image_column", "patient_column"}
    if unknown:
        raise ValueError(f"unknown labels-CSV options {sorted(unknown)}")
    out = {
        "layout": "auto",
        "uncertain": "ignore",
        "labels": None,
        "image_column": None,
        "patient_column": None,
    }
    out.update({k: v for k, v in options.items() if v is not None})
    if out["uncertain"] not in UNCERTAIN_POLICIES:
        raise ValueError(
            f"uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got {out['uncertain']!r}"
        )
    labels = out["labels"]
    if labels is not None and not (
        isinstance(labels, (list, tuple)) and labels and all(isinstance(n, str) for n in labels)
    ):
        raise ValueError(f"labels must be a list of finding names, got {labels!r}")
    if labels is not None and len(set(labels)) != len(labels):
        raise ValueError("labels names a finding twice")
    for key in ("image_column", "patient_column"):
        if out[key] is not None and not isinstance(out[key], str):
            raise ValueError(f"{key} must be a column name, got {out[key]!r}")
    return out


def read_labels_csv(path: str | Path, match: Callable[[int, str], str | None], **options) -> LabelsTable:
    """The labels of the images ``match(line, value)`` finds (their key, or None when the folder lacks the image;
    it raises for a value that names a path outside the folder).

    Options: ``layout`` (``auto``, ``nih``, ``chexpert``), ``uncertain`` (``zeros``, ``ones``, ``ignore``:
    default, unknown = NaN), ``labels`` (the finding names to use, in order), ``image_column``,
    ``patient_column`` (default: ``Patient ID``, ``patient_id``, ``PatientID`` or ``subject_id`` if present).
    """
    path, options = Path(path), _options(options)
    try:
        with open_regular(path, "labels CSV", limit=MAX_CSV_BYTES) as f:
            return _rows(path, f, options, match)
    except FileTooLargeError as e:
        raise FileTooLargeError(f"{e}; keep the rows of the images you use") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"labels CSV {path.name} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except csv.Error as e:  # e.g. a field over the csv module's own limit of 128 KiB
        raise ValueError(
            f"labels CSV {path.name}: unreadable CSV ({e}); fields are at most {MAX_FIELD_CHARS} characters"
        ) from e


PATIENT_IN_PATH = re.compile(r"(?:^|/)(patient\d+)/")  # CheXpert: .../patient00001/study1/view1_frontal.jpg
