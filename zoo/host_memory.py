"""Host memory that a training loop frees is kept for its next step, not handed back to the OS and faulted in again.

glibc's malloc serves a block of 128 KiB or more with a fresh ``mmap`` and returns it with ``munmap`` when freed
(the threshold adapts upwards to 32 MiB at most), and gives the heap's free top back to the OS past a trim
threshold. A training step allocates and frees the same tensors every step (views of a batch: 6 MiB each at batch
128 and 64 px; activations of a ResNet-50 at 224 px: 50 MiB and more), so every step pays a page fault per 4 KiB
page for memory it freed a moment ago, and the kernel zeroes each page again. Measured on a 2-core AMD EPYC
(bench/pretrain_throughput.py, the same code with and without): a view of the default run's batch 25-35 -> 12-15 ms,
the default run 723 -> 814-826 samples/s, a ResNet-50 step at batch 32 and 224 px 5.26 -> 4.68 s; embedding with
a ResNet-50 at 224 px (bench/embed_throughput.py): forward 35.4 -> 44.8 images/s, medssl-embed 27.3 -> 29.6.

:func:`keep_freed_host_memory` sets glibc's ``M_MMAP_MAX`` to 0 (every block from the heap, where a freed block is
reused) and ``M_TRIM_THRESHOLD`` to "never" (the heap keeps what it has): the process then holds its peak memory,
which a training loop reaches every step anyway (up to twice a large block allocated again while something made
after it lives: glibc 2.36 cannot reuse a freed block for an aligned request of its own size, torch's). Blocks
over 64 MiB made by a thread other than the main one are still mapped and unmapped each time (a thread arena's heap
is 64 MiB), as without the call. It is what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1``
in the environment do (see ``man 3 mallopt``: -1 "disables trimming completely"; the largest positive int,
2147483647, would trim the heap whenever a step frees more than 2 GiB, its pages faulted in again at the next);
a user who sets any of glibc's malloc variables, or preloads another allocator (jemalloc, tcmalloc, mimalloc),
keeps their choice. A process with no glibc (macOS, Windows, musl) is left as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_host_memory"]

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
# mallopt's int, read by glibc as a size_t: -1 is SIZE_MAX, "never trim" (2**31 - 1 would be 2 GiB only)
TRIM_THRESHOLD = -1
# glibc's malloc environment variables (glibc's manual, "Memory Allocation Tunables": each tunable's alias);
# MALLOC_ARENA_MAX and MALLOC_ARENA_TEST have no trailing underscore
_GLIBC_MALLOC_VARIABLES = (
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
    "MALLOC_CHECK_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_PERTURB_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
)
_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
_kept = False


def keep_freed_host_memory() -> str:
    """Keep freed host memory in this process for reuse (see the module's docstring); once per process.

    Returns what was done, for the run's log: ``"kept"``, or why the allocator was left as it is."""
    global _kept
    if _kept:
        return "kept"
    reason = _users_choice()
    if reason:
        return reason
    libc = _glibc()
    if libc is None:
        return "left as it is (not glibc)"
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "left as it is (mallopt refused)"
    _kept = True
    return "kept"


def _users_choice() -> str | None:
    """Why the user's own allocator settings stand, if they made any."""
    chosen = [name for name in _GLIBC_MALLOC_VARIABLES if name in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        chosen.append("GLIBC_TUNABLES")
    if chosen:
        return f"left as set ({', '.join(chosen)})"
    preloaded = os.environ.get("LD_PRELOAD", "")
    if any(name in preloaded for name in _ALLOCATORS):
        return f"left as set (LD_PRELOAD={preloaded})"
    return None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        process = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(process, "gnu_get_libc_version") or not hasattr(process, "mallopt"):
        return None  # musl or another libc: its mallopt, if any, takes other parameters
    process.mallopt.argtypes, process.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return process
