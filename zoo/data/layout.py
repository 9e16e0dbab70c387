"""Finding a dataset inside a user's unzipped folder and listing its images, quirks included.

Handles an ``archive/`` wrapper or a doubly nested folder (the dataset root is searched a few levels down),
the ``chest_xray/chest_xray`` duplicate (the shallowest match wins), ``__MACOSX`` trees, ``.DS_Store`` and
``._*`` files, upper-case extensions, and spaces in folder names. Symbolic links are followed, except links back
to a folder's own ancestors (``ln -s $ROOT $ROOT/loop`` would otherwise make a class of every image, or never
end), and every real folder is read once (:mod:`zoo.data.walk`); names that are not valid UTF-8 are skipped
(they cannot go into a manifest). DICOM files (``.dcm``, or no suffix and the DICOM prefix) are images when
pydicom is installed, else skipped and named with the hint to install it. Whatever is skipped is named: one log
line per reason, with the count and the first few names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from zoo.data import dicom
from zoo.data.walk import JUNK_DIRS, OTHER, Skipped, identity, is_junk, walk_files

__all__ = [
    "JUNK_DIRS",
    "Skipped",
    "is_junk",
    "find_child",
    "candidate_roots",
    "list_images",
    "list_image_paths",
    "subfolders",
]

log = logging.getLogger(__name__)
NO_PYDICOM = f"DICOM files ({dicom.INSTALL_HINT})"


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


def _acceptor(extensions: tuple[str, ...]):
    """``accept(path)`` for :func:`zoo.data.walk.walk_files`: None for an image file, else why it is skipped."""
    dicoms = any(s in extensions for s in dicom.DICOM_SUFFIXES)
    readable = dicom.available()

    def accept(path: str) -> str | None:
        suffix = os.path.splitext(path)[1].lower()
        is_dicom = suffix in dicom.DICOM_SUFFIXES or (not suffix and dicoms and dicom.has_dicom_magic(path))
        if is_dicom and dicoms:
            return None if readable else NO_PYDICOM
        return None if suffix in extensions else OTHER

    return accept


def candidate_roots(root: Path, max_depth: int = 4) -> list[Path]:
    """``root`` and its sub-folders down to ``max_depth``, shallowest first, junk folders excluded; a folder
    reached again through another link is not listed twice (link fan-outs would multiply the list)."""
    out, frontier, seen = [root], [root], {identity(root)}
    for _ in range(max_depth):
        deeper = []
        for child in (child for folder in frontier for child in subfolders(folder)):
            real = identity(child)
            if real not in seen:
                seen.add(real)
                deeper.append(child)
        frontier = deeper
        out.extend(frontier)
    return out


def list_images(folder: Path, extensions: tuple[str, ...], skipped: Skipped | None = None) -> list[Path]:
    """Image files under ``folder`` (every real folder once, see :func:`list_image_paths`), sorted, matching
    ``extensions`` case-insensitively."""
    return [Path(p) for p in list_image_paths(folder, extensions, skipped)]


def list_image_paths(
    folder: Path | str, extensions: tuple[str, ...], skipped: Skipped | None = None
) -> list[str]:
    """:func:`list_images` as path strings (sorted part by part, as Paths sort).

    The walk is iterative (a tree 1100 folders deep is no recursion problem) and reads every real folder once:
    the folders below ``folder`` under their own names first, then the folders that links lead to, each only if
    no other path has reached it (links in a "diamond" — L0…L24 each with two links to the next — would
    otherwise list 2^25 paths), never one above ``folder``. Only regular files are taken (a FIFO named ``x.png``
    would block its reader forever). What is left out is named by ``skipped`` — logged here unless the caller
    passes its own to log once for several folders.
    """
    own = skipped is None
    skipped = Skipped() if own else skipped
    accept = _acceptor(extensions)
    found = walk_files(os.fspath(folder), accept, skipped)  # strings, not Paths: 10^5 files list in a second
    if own:
        skipped.log(folder)
    return sorted(found, key=lambda p: p.split(os.sep))
