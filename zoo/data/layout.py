"""Finding a dataset inside a user's unzipped folder and listing its images, quirks included.

Handles an ``archive/`` wrapper or a doubly nested folder (the dataset root is searched a few levels down),
the ``chest_xray/chest_xray`` duplicate (the shallowest match wins), ``__MACOSX`` trees, ``.DS_Store`` and
``._*`` files, upper-case extensions, and spaces in folder names.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["is_junk", "find_child", "candidate_roots", "list_images"]

JUNK_DIRS = {"__MACOSX", ".git", "__pycache__"}


def is_junk(name: str) -> bool:
    """Hidden files and folders, AppleDouble ``._*`` files and ``__MACOSX`` folders."""
    return name.startswith(".") or name in JUNK_DIRS


def find_child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name`` (case-insensitive), or None."""
    if not folder.is_dir():
        return None
    exact = folder / name
    if exact.is_dir():
        return exact
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def candidate_roots(root: Path, max_depth: int = 4) -> list[Path]:
    """``root`` and its sub-folders down to ``max_depth``, shallowest first, junk folders excluded."""
    out, frontier = [root], [root]
    for _ in range(max_depth):
        nxt = []
        for folder in frontier:
            try:
                children = sorted(c for c in folder.iterdir() if c.is_dir() and not is_junk(c.name))
            except OSError:
                continue
            nxt.extend(children)
        out.extend(nxt)
        frontier = nxt
    return out


def list_images(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, matching ``extensions`` case-insensitively."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        found += [
            Path(dirpath) / f
            for f in filenames
            if not is_junk(f) and os.path.splitext(f)[1].lower() in extensions
        ]
    return sorted(found)
