"""Finding a dataset inside a user's unzipped folder and listing its images, quirks included.

Handles an ``archive/`` wrapper or a doubly nested folder (the dataset root is searched a few levels down),
the ``chest_xray/chest_xray`` duplicate (the shallowest match wins), ``__MACOSX`` trees, ``.DS_Store`` and
``._*`` files, upper-case extensions, and spaces in folder names. Symbolic links are followed, except links back
to a folder's own ancestors (``ln -s $ROOT $ROOT/loop`` would otherwise make a class of every image, or never
end); names that are not valid UTF-8 are skipped with a warning naming them (they cannot go into a manifest).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["is_junk", "find_child", "candidate_roots", "list_images", "list_image_paths", "subfolders"]

log = logging.getLogger(__name__)
JUNK_DIRS = {"__MACOSX", ".git", "__pycache__"}


def is_junk(name: str) -> bool:
    """Hidden files and folders, AppleDouble ``._*`` files and ``__MACOSX`` folders."""
    return name.startswith(".") or name in JUNK_DIRS


def _utf8(path: Path | str) -> bool:
    """Whether a file name can be written to a manifest; a warning names the file when it cannot."""
    try:
        os.fspath(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        log.warning("skipping %r: its name is not valid UTF-8; rename it to use it", os.fsencode(path))
        return False


def _links_back(child: Path, chain: set[str]) -> bool:
    """A folder that is (a link to) one of the folders above it, or to itself."""
    return os.path.realpath(child) in chain


def _chain(folder: Path) -> set[str]:
    """The real paths of ``folder`` and every folder above it."""
    real = Path(os.path.realpath(folder))
    return {str(real), *(str(p) for p in real.parents)}


def subfolders(folder: Path) -> list[Path]:
    """The usable sub-folders of ``folder``, sorted: no junk, no links back up, valid UTF-8 names."""
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return []
    chain = _chain(folder)
    return [
        c for c in children if not is_junk(c.name) and c.is_dir() and not _links_back(c, chain) and _utf8(c)
    ]


def find_child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name`` (case-insensitive), or None."""
    if not folder.is_dir():
        return None
    exact = folder / name
    if exact.is_dir() and not _links_back(exact, _chain(folder)):
        return exact
    return next((c for c in subfolders(folder) if c.name.lower() == name.lower()), None)


def candidate_roots(root: Path, max_depth: int = 4) -> list[Path]:
    """``root`` and its sub-folders down to ``max_depth``, shallowest first, junk folders excluded."""
    out, frontier = [root], [root]
    for _ in range(max_depth):
        frontier = [child for folder in frontier for child in subfolders(folder)]
        out.extend(frontier)
    return out


def list_images(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Image files under ``folder`` (recursively, following links except back up), sorted, matching
    ``extensions`` case-insensitively."""
    return [Path(p) for p in list_image_paths(folder, extensions)]


def list_image_paths(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """:func:`list_images` as path strings (sorted part by part, as Paths sort)."""
    found: list[str] = []  # strings, not Paths, until the end: an archive of 10^5 files lists in a second
    chains = {os.fspath(folder): _chain(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        chain = chains.pop(dirpath)
        kept = []
        for d in sorted(dirnames):
            child = os.path.join(dirpath, d)
            if is_junk(d) or _links_back(Path(child), chain) or not _utf8(child):
                continue
            chains[child] = chain | {os.path.realpath(child)}
            kept.append(d)
        dirnames[:] = kept
        found += [
            os.path.join(dirpath, f)
            for f in filenames
            if not is_junk(f)
            and os.path.splitext(f)[1].lower() in extensions
            and _utf8(os.path.join(dirpath, f))
        ]
    return sorted(found, key=lambda p: p.split(os.sep))
