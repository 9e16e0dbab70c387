"""Decoding image files into uint8 tensors, with clear errors instead of PIL tracebacks and bounded memory.

Files come from strangers (uploads, downloaded datasets): before any pixel is decoded, the header's size is
checked against :data:`MAX_IMAGE_PIXELS` and the decoded bytes (16-bit and float images count 2 and 4 bytes a
pixel) against :data:`MAX_DECODED_BYTES`. The check is explicit, not PIL's decompression-bomb warning turned
into an error (``warnings.catch_warnings`` is not thread-safe: datasets are decoded by a thread pool). EXIF
orientation is applied (phone photos of slides), high bit depths are rescaled (not clipped) ignoring non-finite
values. Only regular files are opened (a FIFO named ``x.png`` would block ``PIL.Image.open`` forever); DICOM files
go through :mod:`zoo.data.dicom`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.files import open_regular

__all__ = [
    "ImageDecodeError",
    "MAX_DECODED_BYTES",
    "MAX_IMAGE_PIXELS",
    "check_image_size",
    "read_image",
    "rescale_to_uint8",
    "to_mode",
]

log = logging.getLogger(__name__)
MAX_IMAGE_PIXELS = 89_478_485  # PIL's default decompression-bomb limit (a 9459 x 9459 RGB image)
MAX_DECODED_BYTES = 128 * 1024 * 1024  # decoded pixel data of one image (PIL keeps RGB as 4 bytes a pixel)
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2}
EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """An image file could not be decoded (not an image, truncated, too large, or an unsupported mode)."""


def check_image_size(name: str, width: int, height: int, bytes_per_pixel: float, frames: int = 1) -> None:
    """Refuse an image whose pixels or decoded bytes exceed the limits, before it is decoded."""
    pixels = width * height
    decoded = pixels * bytes_per_pixel * frames
    if pixels > MAX_IMAGE_PIXELS or decoded > MAX_DECODED_BYTES:
        raise ImageDecodeError(
            f"{name}: {width}x{height}{f' x {frames} frames' if frames > 1 else ''} pixels "
            f"({decoded / 2**20:.0f} MiB decoded) exceeds the limit of {MAX_IMAGE_PIXELS} pixels and "
            f"{MAX_DECODED_BYTES // 2**20} MiB; downscale it first"
        )


def rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Min-max rescale a high-bit-depth array (16-bit X-ray, float) into 0..255 — rescaling, not clipping.

    Non-finite values (NaN, ±inf) are ignored for the range and become 0; float32 keeps the memory at 4 bytes a
    pixel (exact for 16-bit values)."""
    array = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    lo = float(np.min(array, where=finite, initial=np.inf))
    hi = float(np.max(array, where=finite, initial=-np.inf))
    if not hi > lo:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (array - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    scaled[~finite] = 0
    return np.rint(scaled, out=scaled).astype(np.uint8)


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image (16-bit, float, palette, RGBA, CMYK, ...) to ``L`` (1 channel) or ``RGB`` (3)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(rescale_to_uint8(np.asarray(image)), mode="L")
    elif image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent → white
        image = Image.alpha_composite(background, rgba)
    return image.convert("L" if channels == 1 else "RGB")


def _upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: EXIF orientation applied (only when there is one to apply)."""
    if image.getexif().get(EXIF_ORIENTATION, 1) in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """H x W or H x W x C uint8 → a C x H x W tensor (a copy)."""
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _read_dicom(path: Path, channels: int) -> tuple[torch.Tensor, str]:
    from zoo.data.dicom import read_dicom  # lazily: zoo.data.dicom builds on this module

    array, what = read_dicom(path)
    image = Image.fromarray(array).convert("L" if channels == 1 else "RGB")
    return _as_tensor(np.array(image, dtype=np.uint8)), what


def _looks_like_dicom(path: Path) -> bool:
    """A DICOM suffix, or no suffix and the DICOM prefix (PACS exports name files ``IM0001``)."""
    from zoo.data.dicom import DICOM_SUFFIXES, has_dicom_magic

    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or (not suffix and has_dicom_magic(path))


def _open(path: Path):
    """The file open for reading, if it is a regular file: PIL would wait forever on a FIFO named ``x.png``."""
    try:
        return open_regular(path, "image")
    except ValueError as e:
        raise ImageDecodeError(f"{path}: not a regular file (a folder, device or pipe), not an image") from e


def read_image(path: str | Path, channels: int = 3, with_mode: bool = False):
    """Read ``path`` as a uint8 tensor C x H x W with ``channels`` 1 or 3 (with ``with_mode``: and the file's
    own PIL mode, e.g. ``I;16`` or ``RGBA``, or ``DICOM`` / ``DICOM frame 3 of 5``).

    Only regular files are opened. DICOMs (``.dcm``, or no suffix and the DICOM prefix) are read by
    :mod:`zoo.data.dicom`. Raises :class:`ImageDecodeError` naming the file for unreadable, truncated or oversized
    images.
    """
    path = Path(path)
    if _looks_like_dicom(path):
        tensor, what = _read_dicom(path, channels)
        return (tensor, what) if with_mode else tensor
    try:
        with _open(path) as f, Image.open(f) as image:
            width, height = image.size
            check_image_size(str(path), width, height, BYTES_PER_PIXEL.get(image.mode, 4))
            image.load()
            source_mode = image.mode
            image = to_mode(_upright(image), channels)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    except (OSError, SyntaxError, ValueError, MemoryError) as e:  # truncated files, broken headers
        raise ImageDecodeError(f"{path}: corrupt or truncated image ({e})") from e
    tensor = _as_tensor(np.array(image, dtype=np.uint8))  # a writable copy
    return (tensor, source_mode) if with_mode else tensor
