"""Bounds of the decoded disk cache under the faults of issue 18, each case measured in a fresh process (its peak
RSS from ``resource.getrusage``) on a folder of generated PNGs decoded at 256 px RGB:

- a disk that fills up during the build (``RLIMIT_FSIZE`` below the entry's size): time to the error, bytes left;
- eviction: one file touched between runs, then entries at other sizes under a small ``ZOO_CACHE_MAX``;
- the check at each open of a 10^4-image entry (record against the request, 66 sampled digests), warm and with
  the file's pages dropped from the page cache;
- reuse of a read-only cache owned by someone else.

    python bench/cache_bounds.py                    # 10,000 images (a 1.8 GiB entry; ~4 GiB of disk at most)
    python bench/cache_bounds.py --images 2000      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cache_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_full(archive: Path, cache: Path) -> dict:
    """The build of a 256 px entry on a 'disk' that takes at most 64 MiB more."""
    from zoo.data import load_dataset

    ds = load_dataset("folder", archive)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 2**20, 64 * 2**20))
    start = time.perf_counter()
    try:
        ds.decode("train", 256, cache="disk")
        error = None
    except OSError as e:
        error = str(e)
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "error": error,
        "left_bytes": cache_bytes(cache),
    }


def child_evict(archive: Path, cache: Path) -> dict:
    """Cache size after each step: 128 px, a file touched, 128 px again (the stale entry goes), then 96 and 160 px
    under a bound of 1.5 entries at 160 px (the least recently used goes)."""
    from zoo.data import load_dataset

    steps = {}
    ds = load_dataset("folder", archive)
    ds.decode("train", 128, cache="disk")
    steps["128 px"] = cache_bytes(cache)
    touched = ds.base / ds.records[0].key
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    ds = load_dataset("folder", archive)
    ds.decode("train", 128, cache="disk")
    steps["128 px after a file was touched"] = cache_bytes(cache)
    one = len(ds.records) * 3 * 160 * 160
    os.environ["ZOO_CACHE_MAX"] = str(int(1.5 * one))
    for size in (96, 160):
        ds.decode("train", size, cache="disk")
        steps[f"{size} px, ZOO_CACHE_MAX {int(1.5 * one) / 2**30:.2f} GiB"] = cache_bytes(cache)
    return {"steps": steps, "entries": len(list(cache.glob("*.u8")))}


def child_open(archive: Path, cache: Path, cold: bool) -> dict:
    """The reuse of a built entry: its key (one stat per file), then the record and the sampled digests."""
    from zoo.data import load_dataset
    from zoo.data.cache import cache_dir
    from zoo.data.cache_entry import CacheRequest, Entry, open_entry

    ds = load_dataset("folder", archive)
    idx = ds.indices("train")
    files, labels = [ds.records[i].key for i in idx], [ds.records[i].label for i in idx]
    request = CacheRequest.of("folder", ds.base, "train", files, labels, 256, 3)
    start = time.perf_counter()
    entry = Entry(cache_dir(), request.key())
    keyed = time.perf_counter()
    if cold:  # the entry's pages out of the page cache, as after a reboot
        fd = os.open(entry.data, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        keyed = time.perf_counter()
    images = open_entry(entry, request).images
    opened = time.perf_counter()
    return {
        "images": len(images),
        "key_ms": round((keyed - start) * 1000 if not cold else 0, 1),
        "check_ms": round((opened - keyed) * 1000, 1),
        "entry_gib": round(entry.data.stat().st_size / 2**30, 2),
    }


def child_reuse(archive: Path, cache: Path) -> dict:
    """Decode with the disk cache (building it, or reusing it), noting whether the cache can be written."""
    from zoo.data import load_dataset

    writable = True
    if cache.is_dir():
        try:
            (cache / "probe").touch()
            (cache / "probe").unlink()  # made just above
        except PermissionError:
            writable = False
    start = time.perf_counter()
    images, _ = load_dataset("folder", archive).decode("train", 256, cache="disk")
    return {"writable": writable, "seconds": round(time.perf_counter() - start, 2), "images": len(images)}


def without_root_powers():  # runs in the child before exec: root's file permissions become an ordinary user's
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    for cap in (0, 1, 2, 3, 4):  # CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID
        prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP


def fresh(kind: str, archive: Path, cache: Path, *extra: str, env: dict | None = None, **kwargs) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(archive), str(cache), *extra]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "ZOO_CACHE": str(cache), **(env or {})},
        **kwargs,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(argv: list[str]) -> int:
    kind, archive, cache = argv[0], Path(argv[1]), Path(argv[2])
    if kind == "full":
        result = child_full(archive, cache)
    elif kind == "evict":
        result = child_evict(archive, cache)
    elif kind == "open":
        result = child_open(archive, cache, cold=argv[3:] == ["cold"])
    else:
        result = child_reuse(archive, cache)
    print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return run_child(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    from bench.folder_cache import make_archive

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        make_archive(tmp / "archive", args.images)
        print("disk full:", fresh("full", tmp / "archive", tmp / "full"), flush=True)
        print("eviction:", fresh("evict", tmp / "archive", tmp / "evict"), flush=True)
        build = fresh("reuse", tmp / "archive", tmp / "cache")  # builds the 256 px entry
        print(f"build of the {args.images}-image entry: {build}", flush=True)
        for kind in ("warm", "cold"):
            print(f"open ({kind}):", fresh("open", tmp / "archive", tmp / "cache", kind), flush=True)
        cache = tmp / "cache"
        for path in (*cache.iterdir(), cache):
            path.chmod(0o555 if path.is_dir() else 0o444)
            if os.geteuid() == 0:
                os.chown(path, 65534, 65534)
        powers = without_root_powers if os.geteuid() == 0 else None
        print("read-only reuse:", fresh("reuse", tmp / "archive", cache, preexec_fn=powers), flush=True)
        cache.chmod(0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main())
