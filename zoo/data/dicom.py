"""Reading a DICOM file as an 8-bit image, bounded: the demo's uploads and DICOMs inside dataset folders.

The pixel values follow DICOM PS3.4 C.11 (the grayscale pipeline): the modality LUT (rescale slope / intercept:
stored values → Hounsfield units for CT), then the file's VOI window when it has one (else min-max), then
MONOCHROME1 inverted (0 is white there). A multi-frame file gives its middle frame. Before any pixel is decoded
the frame is checked against the same limits as every other image (:func:`zoo.data.images.check_image_size`), and
a deflated data set (which pydicom inflates whole before reading a single tag) is measured in chunks first.

pydicom is needed only here and imported lazily: without it, :func:`available` is false, dataset scans skip
DICOMs and name them, and reading one is an :class:`~zoo.data.images.ImageDecodeError` saying what to install.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from zoo.data.images import MAX_DECODED_BYTES, ImageDecodeError, check_image_size, rescale_to_uint8
from zoo.files import open_regular
from zoo.optional import install_hint

__all__ = ["DICOM_SUFFIXES", "INSTALL_HINT", "available", "has_dicom_magic", "is_dicom", "read_dicom"]

DICOM_SUFFIXES = (".dcm", ".dicom")
INSTALL_HINT = f"pydicom is not installed: {install_hint('pydicom')}"
DEFLATED = (
    "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole data set is zlib-compressed
)


def available() -> bool:
    """Whether pydicom can be imported (checked each time: cheap once it has been imported)."""
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def has_dicom_magic(path: str | Path) -> bool:
    """Whether ``path`` is a regular file with the DICOM Part 10 prefix (``DICM`` after a 128-byte preamble)."""
    try:
        with open_regular(path, "DICOM file") as f:
            head = f.read(132)
    except (OSError, ValueError):
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom(path: str | Path) -> bool:
    """A ``.dcm`` / ``.dicom`` name, or any file with the DICOM prefix (uploads and PACS exports lack suffixes)."""
    path = Path(path)
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(path)


def _check_inflated_size(path: Path, meta) -> None:
    """A deflated DICOM is inflated whole by pydicom before any tag is read: count its inflated size in chunks
    (nothing kept) and refuse it beyond the decoded-bytes limit."""
    inflater, total, limit = zlib.decompressobj(-zlib.MAX_WBITS), 0, MAX_DECODED_BYTES + (1 << 20)
    # preamble (128) + "DICM" (4) + the group-length element (12 bytes, explicit VR UL) + the rest of group 2
    meta_end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    with open_regular(path, "DICOM file") as f:
        f.seek(meta_end)
        for block in iter(lambda: f.read(1 << 16), b""):
            data = block
            while data and total <= limit:
                total += len(inflater.decompress(data, 1 << 20))
                data = inflater.unconsumed_tail
            if total > limit:
                raise ImageDecodeError(
                    f"{path.name}: the deflated DICOM inflates to more than {MAX_DECODED_BYTES // 2**20} MiB"
                )


def _read_header(path: Path):
    if not available():
        raise ImageDecodeError(f"{path.name}: a DICOM file, but {INSTALL_HINT}")
    import pydicom
    from pydicom.filereader import read_file_meta_info

    try:
        open_regular(path, "DICOM file").close()  # never hand pydicom a FIFO: it would wait forever
        meta = read_file_meta_info(path)
        if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
            _check_inflated_size(path, meta)
        return pydicom.dcmread(path, stop_before_pixels=True)
    except ImageDecodeError:
        raise
    except Exception as e:  # pydicom raises many types for broken files
        raise ImageDecodeError(f"{path.name}: not a readable DICOM file ({type(e).__name__}: {e})") from e


def _grayscale(pixels: np.ndarray, ds) -> np.ndarray:
    """Modality LUT, VOI window (if the file has one), MONOCHROME1 inverted, rescaled to 0..255."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds)
    if "WindowCenter" in ds:
        values = apply_voi_lut(values, ds)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        values = values.max() - values
    return rescale_to_uint8(values)


def read_dicom(path: str | Path) -> tuple[np.ndarray, str]:
    """A DICOM image as uint8 H x W (gray) or H x W x 3 (colour), its middle frame for a multi-frame file; and
    a description (``DICOM``, ``DICOM frame 3 of 5``). Raises :class:`ImageDecodeError` naming the file."""
    path = Path(path)
    ds = _read_header(path)  # first: it says when pydicom is missing
    from pydicom.pixels import pixel_array

    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
    if rows <= 0 or columns <= 0 or frames <= 0:
        raise ImageDecodeError(f"{path.name}: a DICOM file without an image (rows {rows}, columns {columns})")
    check_image_size(path.name, columns, rows, samples * max(1, bits // 8))  # one frame is decoded
    middle = frames // 2
    try:
        pixels = pixel_array(path, index=middle if frames > 1 else None)
    except Exception as e:  # pydicom raises many types for broken pixel data
        raise ImageDecodeError(f"{path.name}: unreadable DICOM pixel data ({type(e).__name__}: {e})") from e
    what = f"DICOM frame {middle + 1} of {frames}" if frames > 1 else "DICOM"
    if pixels.ndim == 2:
        return _grayscale(pixels, ds), what
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        rgb = pixels[..., :3]
        return (rgb if rgb.dtype == np.uint8 else rescale_to_uint8(rgb)), what
    raise ImageDecodeError(f"{path.name}: unsupported DICOM pixel layout {pixels.shape}")
