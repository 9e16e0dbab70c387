"""Files, defined once: atomic writes, the temporary-name convention, hashing, bounded reads and locks.

Everything the project writes (run directories, exports, caches, reports) goes through a temporary sibling and an
atomic rename, so a crash leaves the previous file or none, never half of one. Temporary files are created
exclusively (``O_EXCL | O_NOFOLLOW``) under an unpredictable name: a link planted where one will be written is
never followed, and nothing outside the project's own files is truncated. ``safetensors`` creates its files with
mode 0600 (through a temporary file of its own); they are given the umask's usual mode, so a shared ``$ZOO_HOME``
or runs folder stays readable by the group as any other file would be.

Small files the project reads (recipes, registries, manifests, records) come from strangers as often as from the
project: :func:`read_text` takes only regular files (never a FIFO or ``/dev/zero``) and refuses anything larger
than the caller's bound before reading it; :func:`read_yaml` also refuses YAML aliases (a few hundred bytes of
nested aliases expand to gigabytes).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

import torch

__all__ = [
    "TEMP_MARK",
    "FileTooLargeError",
    "atomic_file",
    "atomic_folder",
    "atomic_savefig",
    "atomic_text_file",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_free_space",
    "file_lock",
    "is_temporary",
    "load_yaml",
    "lock_exclusive_now",
    "lock_shared",
    "open_regular",
    "read_bytes",
    "read_json",
    "read_text",
    "read_yaml",
    "remove_stale_temporaries",
    "save_safetensors",
    "sha256_file",
    "temporary_path",
    "umask_mode",
]

TEMP_MARK = ".tmp-"  # every temporary name is ".<name>.tmp-<pid>-<random>"
_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class FileTooLargeError(ValueError):
    """A file is larger than what the project reads from a file of its kind."""


def umask_mode() -> int:
    """The mode a new regular file gets under the process umask (0o644 for the usual 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):  # not Linux: read it by setting it (and set it back)
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def temporary_path(path: str | Path) -> Path:
    """A fresh temporary sibling of ``path``: ``.<name>.tmp-<pid>-<random>`` (hidden, unpredictable, and
    recognisable by :func:`is_temporary` so a later run can remove what a killed one left)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of this project's temporary names."""
    return name.startswith(".") and TEMP_MARK in name


def _owner_alive(name: str) -> bool:
    """Whether the process that made temporary ``name`` still runs (names without a pid count as alive)."""
    try:
        pid = int(name.rsplit(TEMP_MARK, 1)[1].split("-")[0])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return False  # ours, from an earlier failure of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path, stem: str = "") -> list[Path]:
    """Remove this project's temporary files and folders in ``folder`` (named ``.<stem>…tmp-<pid>-…``) whose
    process no longer runs; links are removed as links, never followed. Returns what was removed."""
    folder, removed = Path(folder), []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (is_temporary(name) and name[1:].startswith(stem)) or _owner_alive(name):
            continue
        path = folder / name
        # a temporary name of this project whose writer is gone: its own half-written output
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def _exclusive(path: Path, binary: bool, readable: bool = False, newline: str | None = None) -> Iterator:
    """A new temporary sibling of ``path`` open for writing (and reading); renamed over ``path`` when the block
    succeeds, removed when it fails."""
    tmp = temporary_path(path)
    flags = (_EXCLUSIVE & ~os.O_WRONLY) | os.O_RDWR if readable else _EXCLUSIVE
    mode = ("r+b" if readable else "wb") if binary else "w"
    fd = os.open(tmp, flags, umask_mode() | 0o600)
    try:
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8", "newline": newline})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # our own half-written temporary file
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename: the file is whole or absent."""
    with _exclusive(Path(path), binary=True) as f:
        f.write(data)


def atomic_file(path: str | Path) -> contextlib.AbstractContextManager[BinaryIO]:
    """A new, empty temporary sibling of ``path`` open for reading and writing (to size, memory-map and fill in
    place), created exclusively like every temporary file; renamed over ``path`` when the block succeeds, removed
    when it fails (close any memory map of it inside the block)."""
    return _exclusive(Path(path), binary=True, readable=True)


def atomic_text_file(path: str | Path) -> contextlib.AbstractContextManager[TextIO]:
    """A new temporary sibling of ``path`` open for writing UTF-8 text line by line (``newline=""``, as the
    ``csv`` module wants), renamed over ``path`` when the block succeeds, removed when it fails: for files too
    large to build in memory first (an index of 10^6 rows)."""
    return _exclusive(Path(path), binary=False, newline="")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling and a rename."""
    with _exclusive(Path(path), binary=False) as f:
        f.write(text)


def atomic_write_json(path: str | Path, value, indent: int | None = 2) -> None:
    """``value`` as JSON, written atomically."""
    atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def atomic_savefig(fig, path: str | Path, **kwargs) -> None:
    """A matplotlib figure saved atomically (format from the suffix)."""
    path = Path(path)
    with _exclusive(path, binary=True) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", **kwargs)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A new temporary sibling folder of ``path`` to fill; on success it is renamed to ``path`` (which must not
    exist then: the caller decides what happens to an existing one), on failure removed."""
    path = Path(path)
    tmp = temporary_path(path)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own half-written temporary folder
        raise


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None
) -> None:
    """``safetensors.torch.save_file`` written atomically, with the umask's mode instead of 0600."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = temporary_path(path)
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    try:
        save_file(contiguous, str(tmp), metadata=metadata)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # our own half-written temporary file
        raise


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_regular(
    path: str | Path, what: str = "file", *, follow_links: bool = True, limit: int | None = None
) -> BinaryIO:
    """``path`` open for binary reading if it is a regular file (a link to one is followed, unless
    ``follow_links=False``); a FIFO, a device (``/dev/zero``), a socket or a folder is refused with a ``ValueError``
    naming it, and so is a file larger than ``limit`` bytes. It is opened without blocking, then checked: opening a
    FIFO for reading would otherwise wait for a writer forever.

    ``follow_links=False`` refuses a symbolic link instead (``O_NOFOLLOW``): a link planted in a folder the project
    publishes or copies (``curves.png -> ~/secret.txt``) would otherwise hand out any file of this machine; what is
    read is the file that was checked, even if the name is replaced afterwards."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        if path.is_symlink():  # O_NOFOLLOW below is the guarantee; this names the problem on every OS
            raise ValueError(
                f"{what} {path} is a symbolic link; links are never followed: put the file there"
            )
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError as e:
        raise ValueError(f"{what} {path} is a folder, not a file") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(f"{what} {path} is a symbolic link; links are never followed") from e
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError(f"{what} {path} is not a regular file (a folder, device or pipe); give a file")
    if limit is not None and info.st_size > limit:
        os.close(fd)
        raise FileTooLargeError(f"{what} {path} is {info.st_size} bytes; a {what} is at most {limit} bytes")
    return os.fdopen(fd, "rb")


def read_bytes(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them: a FIFO, a device (``/dev/zero``), a
    folder or a larger file is refused (``ValueError`` naming it) before anything is read."""
    path = Path(path)
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileTooLargeError(f"{what} {path} is {size} bytes; a {what} is at most {limit} bytes")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise FileTooLargeError(f"{what} {path} is larger than {limit} bytes")
    return data


def read_text(path: str | Path, limit: int, what: str = "file") -> str:
    """:func:`read_bytes` decoded as UTF-8 (``ValueError`` naming the file otherwise)."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from e


def read_json(path: str | Path, limit: int, what: str = "file"):
    """A bounded JSON file (``ValueError`` naming the file when it is not JSON)."""
    try:
        return json.loads(read_text(path, limit, what))
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON ({e})") from e


def read_yaml(path: str | Path, limit: int, what: str = "file"):
    """A bounded YAML file, plain values only: no ``!!python`` tags (safe loading) and no aliases."""
    return load_yaml(read_text(path, limit, what), f"{what} {path}")


def load_yaml(text: str, source: str = "YAML"):
    """``yaml.safe_load`` without aliases: ``&a [*b, *b, …]`` chains expand exponentially when the value is copied
    (a 571-byte document reached 4 GB), so an alias is one error naming ``source``."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ValueError(
                    f"{source}: YAML aliases (*name) are not accepted (line {mark.line + 1}); write the values out"
                )
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        problem = str(e).splitlines()[0]
        raise ValueError(f"{source}: not valid YAML ({problem}); only plain YAML values are read") from e


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """``OSError`` (ENOSPC) saying how much is needed and free before ``needed`` bytes are written."""
    free = shutil.disk_usage(folder).free  # what an unprivileged writer may use
    if needed > free:
        raise OSError(
            28,
            f"{what} needs {needed / 2**30:.2f} GiB in {folder} but only {free / 2**30:.2f} GiB are free; "
            "free some space or point it elsewhere",
        )


def file_lock(path: str | Path, timeout: float = -1):
    """An exclusive inter-process lock on ``path`` (``filelock`` >= 3.20.3: never follows a link, never truncates,
    works on every OS); use as a context manager."""
    from filelock import FileLock

    return FileLock(str(path), timeout=timeout)


def lock_shared(fd: int) -> bool:
    """A shared lock on the open file ``fd`` (``flock``, not waiting), held until every descriptor of that open
    file is closed, a memory map's own included: readers mark a file as in use with it. False when someone holds
    it exclusively."""
    return _flock_now(fd, exclusive=False)


def lock_exclusive_now(fd: int) -> bool:
    """An exclusive lock on the open file ``fd`` if nobody holds any (``flock``, not waiting): False while a
    :func:`lock_shared` reader uses the file."""
    return _flock_now(fd, exclusive=True)


def _flock_now(fd: int, exclusive: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): there an open or mapped file cannot be deleted anyway
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock (ENOLCK): nothing to hold
        return True
    return True
