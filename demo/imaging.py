"""Reading an uploaded file for the demo: PNG, JPEG, TIFF (16-bit too) and DICOM, as a PIL image in the model's
channel mode, with clear errors for anything else and bounded memory (the same limits as every other image).
DICOMs are read by :mod:`zoo.data.dicom`, as in dataset folders."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from zoo.data.dicom import is_dicom, read_dicom
from zoo.data.images import ImageDecodeError, read_image

__all__ = ["read_upload", "ImageDecodeError"]


def read_upload(path: str | Path, channels: int) -> tuple[Image.Image, str]:
    """The uploaded file as an ``L`` (channels=1) or ``RGB`` (3) PIL image, and what it was (``RGBA``,
    ``I;16``, ``DICOM frame 3 of 5`` …) for the page."""
    path = Path(path)
    if is_dicom(path):
        array, what = read_dicom(path)
        return Image.fromarray(array).convert("L" if channels == 1 else "RGB"), what
    tensor, source_mode = read_image(path, channels, with_mode=True)  # 16-bit rescaled, bombs refused
    array = tensor.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")
    return image, source_mode
