"""Writing files whole or not at all, with the permissions the user's umask gives any other file.

Everything the project writes (run directories, exports) goes through a temporary sibling and an atomic rename,
so a crash leaves the previous file or none, never half of one. ``safetensors`` creates its files with mode
0600 (through a temporary file of its own); they are given the umask's usual mode, so a shared ``$ZOO_HOME`` or
runs folder stays readable by the group as any other file would be.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["atomic_write_text", "save_safetensors", "umask_mode"]


def umask_mode() -> int:
    """The mode a new regular file gets under the process umask (0o644 for the usual 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):  # not Linux: read it by setting it (and set it back)
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename: the file is whole or absent."""
    path = Path(path)
    tmp = _temporary(path)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None
) -> None:
    """``safetensors.torch.save_file`` written atomically, with the umask's mode instead of 0600."""
    path = Path(path)
    tmp = _temporary(path)
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(contiguous, str(tmp), metadata=metadata)
    os.chmod(tmp, umask_mode())
    tmp.replace(path)
