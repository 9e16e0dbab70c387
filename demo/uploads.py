"""Visitors' uploads: each is read once and deleted from the server; what was read stays decoded in memory briefly.

Medical images should not pile up on a public server (20 uploads of 50 MB used to stay as 1.1 GB). Gradio's upload
route stores a file at ``<cache>/<sha256 of seed + content>/<name>``, so two visitors (or a script sending the same
file fifty times at once) uploading the same bytes share one path: deleting it after the first read would fail the
others. The decoded image is therefore kept, keyed by that content-addressed path, for ``RECENT_TTL_S`` seconds
within ``RECENT_BYTES`` (the same key always means the same content); the file itself goes as soon as it is read.
Gradio's ``delete_cache`` (set in ``demo/app.py``) removes uploads that were never classified.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from medssl_zoo.demo.imaging import ImageDecodeError, read_upload

__all__ = ["UploadError", "read_once", "without_paths"]

log = logging.getLogger("demo")
RECENT_BYTES = 128 * 1024 * 1024  # decoded uploads kept in memory at most (one image of the largest size)
RECENT_TTL_S = 120.0
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/]+/)+[^\s'\",)]*")


class UploadError(ValueError):
    """An upload cannot be read; the message is for the visitor (no server path in it)."""


class _Recent:
    """Decoded uploads by (path, channels): least recently stored dropped first, expired after ``ttl_s``."""

    def __init__(self, max_bytes: int, ttl_s: float):
        self.max_bytes, self.ttl_s = max_bytes, ttl_s
        self.items: OrderedDict[tuple, tuple[float, int, tuple]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> tuple | None:
        with self.lock:
            self._expire()
            item = self.items.get(key)
            return item[2] if item else None

    def put(self, key: tuple, value: tuple[Image.Image, str]) -> None:
        image = value[0]
        size = image.width * image.height * len(image.getbands())
        with self.lock:
            self.items.pop(key, None)
            if size <= self.max_bytes:
                self.items[key] = (time.monotonic(), size, value)
            self._expire()
            while sum(item[1] for item in self.items.values()) > self.max_bytes:
                self.items.popitem(last=False)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (stored, _, _) in self.items.items() if now - stored > self.ttl_s]:
            del self.items[key]


_RECENT = _Recent(RECENT_BYTES, RECENT_TTL_S)


def without_paths(message: str, path: Path) -> str:
    """A decoding error as a visitor may see it: the upload's server path (Gradio's ``/tmp/gradio/<hash>/``)
    replaced by "the upload", and any other absolute path by "…"."""
    forms = {str(path), str(path.resolve()), str(path.parent), str(path.resolve().parent)}
    for form in sorted(forms, key=len, reverse=True):
        message = message.replace(form, "the upload")
    return _ABSOLUTE_PATH.sub("…", message)


def uploads_of(request) -> set:
    """The files Gradio's upload route wrote for this app (its ``upload_file_set``); empty for a direct call."""
    blocks = getattr(getattr(getattr(request, "request", None), "app", None), "get_blocks", None)
    return getattr(blocks(), "upload_file_set", set()) if blocks else set()


def _gone(error: BaseException, path: Path) -> bool:
    """Whether reading failed because the file is not there (the decoder may wrap the FileNotFoundError)."""
    while error is not None:
        if isinstance(error, FileNotFoundError):
            return True
        error = error.__cause__ or error.__context__
    return not path.exists()


def read_once(path: Path, channels: int, request=None) -> tuple[Image.Image, str]:
    """The upload at ``path`` as an image in the model's channel mode (see ``read_upload``); a file that Gradio's
    upload route wrote for this app is deleted once read (never an example or a direct caller's file).
    ``UploadError`` with a message for the visitor otherwise (the full one is logged)."""
    uploaded, key = str(path) in uploads_of(request), (str(path), channels)
    try:
        result = read_upload(path, channels)
        if uploaded:
            _RECENT.put(key, result)  # before the file goes: a request for the same content finds it here
        return result
    except (ImageDecodeError, OSError) as e:
        if _gone(e, path):
            recent = _RECENT.get(key) if uploaded else None
            if recent is not None:  # the same content, uploaded again, read by another request meanwhile
                return recent
            raise UploadError(
                "it is no longer on the server (each upload is deleted once it has been read); upload it again"
            ) from e
        log.warning("upload %s: %s", path, e)
        raise UploadError(without_paths(str(e), path)) from e
    finally:
        if uploaded:
            path.unlink(missing_ok=True)  # a visitor's upload, written for this app by Gradio's upload route
