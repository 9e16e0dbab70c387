"""Reading an uploaded file for the demo: PNG, JPEG, TIFF (16-bit too) and DICOM, as a PIL image in the model's
channel mode, with clear errors for anything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.images import ImageDecodeError, read_image, rescale_to_uint8

__all__ = ["read_upload", "ImageDecodeError"]

DICOM_SUFFIXES = (".dcm", ".dicom")


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_dicom(path: Path) -> np.ndarray:
    """A DICOM image as uint8: modality rescale, the file's VOI window (or min-max), MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken files
        raise ImageDecodeError(f"{path.name}: not a readable DICOM image ({type(e).__name__}: {e})") from e
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):  # a multi-frame series: show the middle frame
        pixels = pixels[len(pixels) // 2]
    if pixels.ndim == 2:
        values = apply_modality_lut(pixels, ds)
        if "WindowCenter" in ds:
            values = apply_voi_lut(values, ds)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            values = values.max() - values
        return rescale_to_uint8(values)
    return pixels.astype(np.uint8) if pixels.dtype == np.uint8 else rescale_to_uint8(pixels)


def read_upload(path: str | Path, channels: int) -> tuple[Image.Image, str]:
    """The uploaded file as an ``L`` (channels=1) or ``RGB`` (3) PIL image, and what it was (``RGBA``,
    ``I;16``, ``DICOM`` …) for the page."""
    path = Path(path)
    if _is_dicom(path):
        return Image.fromarray(_read_dicom(path)).convert("L" if channels == 1 else "RGB"), "DICOM"
    tensor, source_mode = read_image(path, channels, with_mode=True)  # 16-bit rescaled, bombs refused
    array = tensor.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")
    return image, source_mode
