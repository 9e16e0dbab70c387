"""Walking a stranger's folder tree: every real folder once, only regular files, and a bounded account of what
was left out.

Archives come with links (datasets assembled with ``ln -s``), macOS droppings, pipes and devices, folder names
in old encodings and trees of any depth. The walk is a loop over a queue, not a recursion; a folder is identified
by (device, inode), so a folder reached through several links — or a link back up — is read once; a link is
followed only after every folder of the tree itself, so each image keeps its own path. What is skipped is
collected by :class:`Skipped` and logged as one line per reason: the count and the first few names.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["JUNK_DIRS", "Skipped", "identity", "is_junk", "walk_files"]

log = logging.getLogger(__name__)
JUNK_DIRS = {"__MACOSX", ".git", "__pycache__"}
SHOWN = 5  # names shown per reason
NAME_CHARS = 120  # a shown name is cut to this many characters

JUNK = "junk files and folders (hidden, ._*, __MACOSX)"
OTHER = "files that are not images (other extensions)"
SPECIAL = "entries that are neither regular files nor folders (pipes, devices, sockets, broken links)"
LINKED = "links to folders read already or above the root (each folder is read once)"
UNLISTABLE = "folders that could not be read"
NOT_UTF8 = "names that are not valid UTF-8 (rename them to use them)"
QUIET = {JUNK, OTHER, LINKED}  # expected in any archive: logged at INFO, the others at WARNING


def is_junk(name: str) -> bool:
    """Hidden files and folders, AppleDouble ``._*`` files and ``__MACOSX`` folders."""
    return name.startswith(".") or name in JUNK_DIRS


def _shown(name: str) -> str:
    return name if len(name) <= NAME_CHARS else f"{name[: NAME_CHARS // 2 - 1]}…{name[-NAME_CHARS // 2 :]}"


@dataclass
class Skipped:
    """What a scan left out, by reason: a count and the first :data:`SHOWN` names of each."""

    base: str = ""  # names are shown relative to this folder (else to the folder walked)
    counts: dict[str, int] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, name: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown = self.names.setdefault(reason, [])
        if len(shown) < SHOWN:
            shown.append(_shown(name))

    def log(self, where: str | Path) -> None:
        """One line per reason, e.g. ``skipped 3 junk files … below DIR: .DS_Store, ._a.png, __MACOSX``."""
        for reason, count in self.counts.items():
            more = f" and {count - SHOWN} more" if count > SHOWN else ""
            level = logging.INFO if reason in QUIET else logging.WARNING
            names = ", ".join(self.names[reason])
            log.log(level, "skipped %d %s below %s: %s%s", count, reason, where, names, more)


def identity(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of the folder ``path`` leads to — the same for every link to it — or None if unreadable."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _above(root: str) -> set[tuple[int, int]]:
    """The identities of ``root`` and every folder above it: a link to one of them is never followed."""
    real = Path(os.path.realpath(root))
    return {i for i in map(identity, [str(real), *map(str, real.parents)]) if i is not None}


def _utf8(name: str) -> bool:
    """Whether a name can be written to a manifest (undecodable bytes come back from os as surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class _Walk:
    """One walk below ``root``: :meth:`run` returns the paths of the files ``accept`` takes."""

    def __init__(self, root: str, accept, skipped: Skipped):
        self.accept, self.skipped = accept, skipped
        base = skipped.base.rstrip(os.sep)
        shown_from = base if base and root.startswith(base + os.sep) else root.rstrip(os.sep)
        self.prefix = len(shown_from) + 1
        self.seen = _above(root)
        self.folders, self.links, self.found = deque([root]), deque(), []

    def name(self, path: str) -> str:
        return path[self.prefix :] or path

    def run(self) -> list[str]:
        while self.folders or self.links:
            if self.folders:
                self.read(self.folders.popleft())
            else:
                self.follow(self.links.popleft())
        return self.found

    def follow(self, link: str) -> None:
        folder = identity(link)
        if folder is None:
            self.skipped.add(SPECIAL, self.name(link))
        elif folder in self.seen:
            self.skipped.add(LINKED, self.name(link))
        else:
            self.seen.add(folder)
            self.folders.append(link)

    def read(self, folder: str) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.skipped.add(UNLISTABLE, f"{self.name(folder)} ({e.strerror})")
            return
        for entry in entries:
            self.entry(entry)

    def entry(self, entry: os.DirEntry) -> None:
        path = entry.path
        if is_junk(entry.name):
            return self.skipped.add(JUNK, self.name(path))
        if not _utf8(entry.name):
            return self.skipped.add(NOT_UTF8, repr(os.fsencode(self.name(path))))
        try:
            is_dir, is_link, is_file = entry.is_dir(), entry.is_symlink(), entry.is_file()
        except OSError:
            is_dir = is_file = False
        if is_dir and is_link:
            self.links.append(path)  # followed after the tree's own folders
        elif is_dir:
            self.follow(path)
        elif not is_file:
            self.skipped.add(SPECIAL, self.name(path))
        else:
            reason = self.accept(path)
            if reason is None:
                self.found.append(path)
            else:
                self.skipped.add(reason, self.name(path))


def walk_files(root: str, accept, skipped: Skipped) -> list[str]:
    """Paths of the regular files below ``root`` for which ``accept(path)`` returns None (else the reason it
    returns is recorded in ``skipped``), every real folder read once, in no particular order."""
    return _Walk(root, accept, skipped).run()
