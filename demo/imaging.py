"""Reading an uploaded file for the demo: PNG, JPEG, TIFF (16-bit too) and DICOM, as a PIL image in the model's
channel mode, with clear errors for anything else and bounded memory (the same limits as every other image)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.images import (
    MAX_DECODED_BYTES,
    ImageDecodeError,
    check_image_size,
    read_image,
    rescale_to_uint8,
)

__all__ = ["read_upload", "ImageDecodeError"]

DICOM_SUFFIXES = (".dcm", ".dicom")
DEFLATED = (
    "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole data set is zlib-compressed
)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_inflated_size(path: Path, meta) -> None:
    """A deflated DICOM is inflated whole by pydicom before any tag is read: count its inflated size in chunks
    (nothing kept) and refuse it beyond the decoded-bytes limit."""
    inflater, total, limit = zlib.decompressobj(-zlib.MAX_WBITS), 0, MAX_DECODED_BYTES + (1 << 20)
    # preamble (128) + "DICM" (4) + the group-length element (12 bytes, explicit VR UL) + the rest of group 2
    meta_end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    with open(path, "rb") as f:
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
    import pydicom
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
        if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
            _check_inflated_size(path, meta)
        return pydicom.dcmread(path, stop_before_pixels=True)
    except ImageDecodeError:
        raise
    except Exception as e:  # pydicom raises many types for broken files
        raise ImageDecodeError(f"{path.name}: not a readable DICOM file ({type(e).__name__}: {e})") from e


def _read_dicom(path: Path) -> tuple[np.ndarray, str]:
    """A DICOM image as uint8 (its middle frame for a multi-frame file): modality rescale, the file's VOI window
    (or min-max), MONOCHROME1 inverted; and a description for the page."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    ds = _read_header(path)
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
        values = apply_modality_lut(pixels, ds)
        if "WindowCenter" in ds:
            values = apply_voi_lut(values, ds)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            values = values.max() - values
        return rescale_to_uint8(values), what
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        rgb = pixels[..., :3]
        return (rgb if rgb.dtype == np.uint8 else rescale_to_uint8(rgb)), what
    raise ImageDecodeError(f"{path.name}: unsupported DICOM pixel layout {pixels.shape}")


def read_upload(path: str | Path, channels: int) -> tuple[Image.Image, str]:
    """The uploaded file as an ``L`` (channels=1) or ``RGB`` (3) PIL image, and what it was (``RGBA``,
    ``I;16``, ``DICOM frame 3 of 5`` …) for the page."""
    path = Path(path)
    if _is_dicom(path):
        array, what = _read_dicom(path)
        return Image.fromarray(array).convert("L" if channels == 1 else "RGB"), what
    tensor, source_mode = read_image(path, channels, with_mode=True)  # 16-bit rescaled, bombs refused
    array = tensor.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")
    return image, source_mode
