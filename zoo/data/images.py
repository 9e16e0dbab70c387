"""Decoding image files into uint8 tensors, with clear errors instead of PIL tracebacks."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageDecodeError", "read_image", "to_mode", "rescale_to_uint8"]

log = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """An image file could not be decoded (not an image, truncated, too large, or an unsupported mode)."""


def rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Min-max rescale a high-bit-depth array (16-bit X-ray, float) into 0..255 — rescaling, not clipping."""
    array = array.astype(np.float64)
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - lo) / (hi - lo) * 255.0).astype(np.uint8)


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image (16-bit, float, palette, RGBA, CMYK, ...) to ``L`` (1 channel) or ``RGB`` (3)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(rescale_to_uint8(np.asarray(image)), mode="L")
    elif image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent → white
        image = Image.alpha_composite(background, rgba)
    return image.convert("L" if channels == 1 else "RGB")


def read_image(path: str | Path, channels: int = 3, with_mode: bool = False):
    """Read ``path`` as a uint8 tensor C x H x W with ``channels`` 1 or 3 (with ``with_mode``: and the file's
    own PIL mode, e.g. ``I;16`` or ``RGBA``).

    Raises :class:`ImageDecodeError` naming the file for unreadable, truncated or decompression-bomb images.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                source_mode = image.mode
                image = to_mode(image, channels)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated files, broken headers
        raise ImageDecodeError(f"{path}: corrupt or truncated image ({e})") from e
    array = np.array(image, dtype=np.uint8)  # a writable copy
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # C x H x W
    return (tensor, source_mode) if with_mode else tensor
