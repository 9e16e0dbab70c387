"""Reading a MedMNIST ``.npz`` that came from a stranger: everything is checked before a pixel is read.

A ``.npz`` is a zip of ``.npy`` arrays; ``np.load`` trusts both. Here the zip directory and each array's ``.npy``
header (its dtype, shape and order, a few hundred bytes) are read first, and refused in one line when:

- the zip directory is not the few hundred bytes of a handful of members that an npz has;
- a member inflates to more than :data:`MAX_INFLATION` times its compressed size — a zip bomb (the minimum
  inflate ratio of Apache POI's ``ZipSecureFile``, 0.01) — or its declared size is not what its header describes;
- the arrays are not 2D images (3D volumes), or hold types that are not numbers;
- decoding would take more than :func:`decoded_limit` (half of this machine's memory).

Only then is one uint8 array of the final size allocated and filled member by member, in chunks (no second copy,
no ``np.concatenate``). Labels must be integer class indices in ``0..MAX_CLASSES - 1``, or for a multi-label
flag (ChestMNIST: N x 14) 0 / 1 per label, at most ``MAX_CLASSES`` labels. Images that are not uint8
are converted over the whole file (every split alike): integers already in 0..255 are kept; floats in [0, 1] are
scaled by 255 (``np.rint``); anything else is min-max rescaled to 0..255 like
:func:`zoo.data.images.rescale_to_uint8` (non-finite values ignored for the range, then 0).
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.splits import SPLITS
from zoo.files import open_regular

__all__ = ["MAX_CLASSES", "MAX_INFLATION", "decoded_limit", "is_multilabel", "read_npz"]

log = logging.getLogger(__name__)
MAX_CLASSES = 1000  # MedMNIST's flags have 2 to 11 classes
MAX_INFLATION = 100  # Apache POI ZipSecureFile: MIN_INFLATE_RATIO = 0.01
INFLATION_FLOOR = 16 * 2**20  # members smaller than this are never a memory problem (labels compress well)
MAX_MEMBERS = 64  # an npz of MedMNIST holds six
MAX_DIRECTORY = 1 << 20  # bytes of zip central directory (an npz of six arrays has about 600)
CHUNK_ITEMS = 4 * 2**20  # values read and converted at a time (float64 working copies of 32 MiB)
WORKING_BYTES = 4 * 8 * CHUNK_ITEMS  # a chunk, its float64 copy, its mask and result, at most
KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))


@dataclass(frozen=True)
class Array:
    """One ``.npy`` member as the zip directory and its header declare it (none of its data read)."""

    key: str
    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool

    @property
    def count(self) -> int:
        return self.shape[0] if self.shape else 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def decoded_limit() -> int:
    """Half of this machine's physical memory (8 GiB where it cannot be read): the most an npz may decode to."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, OSError, ValueError):
        return 8 * 2**30


def _check_directory(path: Path, f) -> None:
    """The end-of-central-directory record (PKWARE APPNOTE 4.3.16): zipfile reads the whole central directory
    into memory (one object per entry), so its declared size is checked first."""
    size = f.seek(0, os.SEEK_END)
    tail_start = max(0, size - (22 + 0xFFFF))  # the record, then at most a 64 KiB comment
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise ValueError(f"{path.name} is not a .npz file (not a zip archive); give a MedMNIST .npz")
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    directory = int.from_bytes(tail[at + 12 : at + 16], "little")
    if entries > MAX_MEMBERS or directory > MAX_DIRECTORY:
        raise ValueError(
            f"{path.name} holds {entries} members in a {directory}-byte directory; a MedMNIST .npz holds six arrays"
        )
    f.seek(0)


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy format version {version}")


def _declared(path: Path, zf: zipfile.ZipFile, key: str) -> Array:
    """The member ``key.npy`` as declared: refused if it is a zip bomb, not an array, or not what it claims."""
    info = zf.getinfo(f"{key}.npy")
    if info.file_size > INFLATION_FLOOR and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
        raise ValueError(
            f"{path.name}: {key} inflates from {info.compress_size} to {info.file_size} bytes (more than "
            f"{MAX_INFLATION} times): a zip bomb, not a MedMNIST file"
        )
    try:
        with zf.open(info) as member:
            shape, fortran, dtype = _read_header(member)
            header = member.tell()
    except (
        ValueError,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as e:
        raise ValueError(f"{path.name}: {key} is not a readable .npy array ({e})") from e
    array = Array(key, info, dtype, tuple(shape), fortran)
    if dtype.hasobject:
        raise ValueError(f"{path.name}: {key} holds Python objects (pickles), which are never loaded")
    if info.file_size != header + array.nbytes:
        raise ValueError(
            f"{path.name}: {key} declares {info.file_size} bytes but its header describes {header + array.nbytes} "
            f"({dtype} {tuple(shape)}); the file is damaged"
        )
    return array


def is_multilabel(arrays: dict[str, Array]) -> bool:
    """A multi-label flag declares N x L labels with L > 1 (ChestMNIST: 14 findings, 0 / 1 each)."""
    labels = arrays["train_labels"].shape
    return len(labels) == 2 and labels[1] > 1


def _check_task(path: Path, arrays: dict[str, Array]) -> None:
    """Only 2D flags: a 3D volume read as 2D images would be a silently different task, so it is refused."""
    shape = arrays["train_images"].shape  # N x H x W (gray), N x H x W x 3 (RGB), N x D x H x W (3D)
    if path.stem.split("_")[0].endswith("3d") or not (
        len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3)
    ):
        raise ValueError(
            f"{path.name} holds 3D volumes {shape[1:]}: the zoo trains 2D encoders; 3D MedMNIST flags are not "
            "supported (use a 2D flag such as organamnist, or slice the volumes into an imagefolder)"
        )
    labels = arrays["train_labels"].shape
    if is_multilabel(arrays) and labels[1] > MAX_CLASSES:
        raise ValueError(
            f"{path.name} declares {labels[1]} labels per image, more than {MAX_CLASSES}; a MedMNIST multi-label "
            "flag has 14"
        )


def _check_types(path: Path, arrays: dict[str, Array]) -> None:
    """Images: numbers of one shape per image in every split; labels: one integer per image, or (multi-label) the
    same number of 0 / 1 values per image in every split."""
    pixel = arrays["train_images"].shape[1:]
    width = arrays["train_labels"].shape[1] if is_multilabel(arrays) else 1
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype.kind not in "uif":
            raise ValueError(
                f"{path.name}: {split}_images holds {images.dtype} values; images must be integers (uint8, as "
                "MedMNIST's) or floats"
            )
        if images.shape[1:] != pixel or 0 in pixel:
            raise ValueError(f"{path.name}: {split}_images are {images.shape[1:]}, train_images {pixel}")
        if labels.dtype.kind not in "uib":
            raise ValueError(
                f"{path.name}: {split}_labels are {labels.dtype}; labels must be integer class indices"
            )
        expected = ((images.count, width),) if width > 1 else ((images.count,), (images.count, 1))
        if labels.shape not in expected:
            raise ValueError(
                f"{path.name}: {split}_labels has shape {labels.shape} for {images.count} images; "
                f"expected {expected[0]}"
            )
    if not sum(arrays[f"{s}_images"].count for s in SPLITS):
        raise ValueError(f"{path.name} holds no images")


def _check_size(path: Path, arrays: dict[str, Array]) -> None:
    """What decoding will hold at once: the uint8 images, the labels (and their int64 copy), one chunk's work."""
    images = [arrays[f"{s}_images"] for s in SPLITS]
    needed = sum(a.count * math.prod(a.shape[1:]) for a in images) + WORKING_BYTES
    labels = [arrays[f"{s}_labels"] for s in SPLITS]
    needed += sum(a.nbytes + 8 * math.prod(a.shape) for a in labels)
    limit = decoded_limit()
    if needed > limit:
        raise ValueError(
            f"{path.name} decodes to {needed / 2**30:.1f} GiB, more than {limit / 2**30:.1f} GiB (half of this "
            "machine's memory); use a smaller size of the flag (e.g. its _64 file), or save the images as an "
            "imagefolder and train with --cache disk"
        )


def _chunks(array: Array, zf: zipfile.ZipFile):
    """The member's values as flat arrays of at most :data:`CHUNK_ITEMS` values, in stored order; a member shorter
    than declared or failing its CRC is refused."""
    step = CHUNK_ITEMS * array.dtype.itemsize
    left = array.nbytes
    with zf.open(array.info) as member:
        _read_header(member)
        while left:
            data = member.read(min(step, left))
            if not data:
                raise zipfile.BadZipFile(f"{array.key} ends {left} bytes early")
            left -= len(data)
            yield np.frombuffer(data, dtype=array.dtype)
        member.read(1)  # at the end: zipfile checks the CRC


def _labels(path: Path, zf: zipfile.ZipFile, array: Array, multilabel: bool) -> np.ndarray:
    """The labels as int64: N class indices in 0..MAX_CLASSES - 1, or (``multilabel``) N x L values in {0, 1}
    (else one error naming the first bad value), checked in their own type (a uint64 beyond int64 would wrap to a
    negative number)."""
    top, what = (1, "multi-label values") if multilabel else (MAX_CLASSES - 1, "class indices")
    parts, offset = [np.zeros(0, np.int64)], 0
    for chunk in _chunks(array, zf):
        bad = np.flatnonzero((chunk < 0) | (chunk > top))
        if len(bad):
            raise ValueError(
                f"{path.name}: {array.key}[{offset + bad[0]}] is {chunk[bad[0]]}, but labels are {what} "
                f"0..{top}; fix the labels"
            )
        parts.append(chunk.astype(np.int64))
        offset += chunk.size
    values = np.concatenate(parts)
    if not multilabel:
        return values
    return values.reshape(array.shape, order="F" if array.fortran else "C")


@dataclass(frozen=True)
class Scale:
    """How the file's image values become 0..255, one rule for the whole file: ``keep`` (already 0..255
    integers), ``unit`` (floats in [0, 1], times 255) or ``range`` (min-max from ``lo``..``hi``)."""

    rule: str
    lo: float = 0.0
    hi: float = 255.0

    def apply(self, values: np.ndarray) -> np.ndarray:
        if values.dtype == np.uint8:
            return values
        x = values.astype(np.float64)
        finite = np.isfinite(x)
        if self.rule == "unit":
            x *= 255.0
        elif self.rule == "range":
            x = (x - self.lo) * (255.0 / (self.hi - self.lo)) if self.hi > self.lo else np.zeros_like(x)
        x[~finite] = 0
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _scale(path: Path, zf: zipfile.ZipFile, members: list[Array]) -> Scale:
    """The rule for non-uint8 images, from one pass over their values (chunk by chunk)."""
    if all(a.dtype == np.uint8 for a in members):
        return Scale("keep")
    lo, hi, integral = math.inf, -math.inf, True
    for array in members:
        for chunk in _chunks(array, zf):
            finite = chunk[np.isfinite(chunk)] if chunk.dtype.kind == "f" else chunk
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
                integral = integral and (chunk.dtype.kind != "f" or bool(np.all(finite == np.floor(finite))))
    kinds = sorted({str(a.dtype) for a in members})
    if any(a.dtype.kind == "f" for a in members) and lo >= 0 and hi <= 1:
        log.info("%s: %s images in [0, 1] scaled by 255", path.name, "/".join(kinds))
        return Scale("unit")
    if integral and lo >= 0 and hi <= 255:
        return Scale("keep")
    log.warning(
        "%s: %s images in [%g, %g] rescaled to 0..255 (min-max over the file)",
        path.name,
        "/".join(kinds),
        lo,
        hi,
    )
    return Scale("range", lo, hi)


def _images(path: Path, zf: zipfile.ZipFile, members: list[Array]) -> np.ndarray:
    """Every split's images in one uint8 array, allocated once and filled chunk by chunk."""
    scale = _scale(path, zf, members)
    out = np.empty((sum(a.count for a in members), *members[0].shape[1:]), np.uint8)
    start = 0
    for array in members:
        part = out[start : start + array.count]
        flat = part.T.flat if array.fortran else part.reshape(-1)  # Fortran order: stored as the transpose
        position = 0
        for chunk in _chunks(array, zf):
            flat[position : position + chunk.size] = scale.apply(chunk)
            position += chunk.size
        start += array.count
    return out


def _read(path: Path, zf: zipfile.ZipFile) -> tuple[np.ndarray, np.ndarray, list[int]]:
    names = set(zf.namelist())
    missing = [key for key in KEYS if f"{key}.npy" not in names]
    if missing:
        raise ValueError(f"{path} is not a MedMNIST file: missing keys {missing}")
    arrays = {key: _declared(path, zf, key) for key in KEYS}
    _check_task(path, arrays)
    _check_types(path, arrays)
    _check_size(path, arrays)
    multilabel = is_multilabel(arrays)
    labels = np.concatenate([_labels(path, zf, arrays[f"{s}_labels"], multilabel) for s in SPLITS])
    images = _images(path, zf, [arrays[f"{s}_images"] for s in SPLITS])
    return images, labels, [arrays[f"{s}_images"].count for s in SPLITS]


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(images N x H x W or N x H x W x 3 uint8, labels N int64 — N x L 0 / 1 for a multi-label flag —, images per
    split in SPLITS order) of a MedMNIST ``.npz``, every declaration checked before anything large is read (see
    the module docstring)."""
    path = Path(path)
    with open_regular(path, "MedMNIST file") as f:
        _check_directory(path, f)
        try:
            with zipfile.ZipFile(f) as zf:
                return _read(path, zf)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise ValueError(f"{path.name}: the .npz is damaged ({e}); download it again") from e
