"""An unlabelled archive larger than RAM: pre-training on a folder of generated images with the decoded cache on
disk, measuring the peak anonymous memory (what the process really holds; the page cache behind the memory map
is the kernel's to drop, see notes) and how soon a second run reads batches (cache reused).

    python bench/folder_cache.py                      # 50,000 images, cache 256 px RGB (9.8 GB decoded)
    python bench/folder_cache.py --images 2000        # a quick look

Each run is a real `train/pretrain.py` process (test_resnet at 224 px, a few steps); its /proc status is sampled
every 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from zoo.run_dir import METRICS_FILE  # noqa: E402


def make_archive(root: Path, count: int) -> None:
    """``count`` small RGB PNGs in nested folders (as scanners write them), made cheaply and in parallel."""
    import numpy as np
    from PIL import Image

    def write(i: int) -> None:
        rng = np.random.default_rng(i)
        folder = root / f"scanner{i % 7}" / f"{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
            folder / f"{i}.png", compress_level=1
        )

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write, range(count)))


def status(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {k: int(fields[k].split()[0]) // 1024 for k in ("RssAnon", "RssFile", "VmHWM") if k in fields}


def run(archive: Path, out: Path, cache: Path, steps: int) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "train" / "pretrain.py"),
        "--dataset",
        "folder",
        "--data-root",
        str(archive),
    ]
    cmd += [
        "--dataset-options",
        "{}",
        "--backbone",
        "test_resnet",
        "--image-size",
        "224",
        "--cache-size",
        "256",
    ]
    cmd += ["--cache", "disk", "--batch-size", "64", "--max-steps", str(steps), "--log-every", "1"]
    cmd += [
        "--eval-every",
        "100000",
        "--checkpoint-every",
        "100000",
        "--export-name",
        "null",
        "--progress",
        "false",
    ]
    cmd += ["--output-dir", str(out)]
    env = {**os.environ, "ZOO_CACHE": str(cache)}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_anon = peak_file = 0
    first_step = None
    while proc.poll() is None:
        try:
            s = status(proc.pid)
        except (FileNotFoundError, ProcessLookupError, KeyError):
            break
        peak_anon, peak_file = max(peak_anon, s.get("RssAnon", 0)), max(peak_file, s.get("RssFile", 0))
        metrics = out / METRICS_FILE
        if first_step is None and metrics.is_file() and '"event": "step"' in metrics.read_text():
            first_step = time.monotonic() - start
        time.sleep(0.1)
    if proc.wait() != 0:
        raise RuntimeError(f"pretraining failed: {' '.join(cmd)}")
    return {
        "seconds": round(time.monotonic() - start, 1),
        "first_step_s": first_step,
        "peak_rss_anon_mb": peak_anon,
        "peak_rss_file_mb": peak_file,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder (needs ~10 GB for 50,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        start = time.monotonic()
        make_archive(tmp / "archive", args.images)
        print(f"made {args.images} PNGs in {time.monotonic() - start:.0f} s", flush=True)
        first = run(tmp / "archive", tmp / "run1", tmp / "cache", args.steps)
        print(f"first run (decodes the cache): {first}", flush=True)
        second = run(tmp / "archive", tmp / "run2", tmp / "cache", args.steps)
        print(f"second run (reuses it): {second}", flush=True)
        size = sum(p.stat().st_size for p in (tmp / "cache").glob("*.u8")) / 2**30
        print(
            f"\n| images | decoded cache | first run | peak anonymous RSS | second run: first step after | peak anonymous RSS |"
            f"\n|---|---|---|---|---|---|\n| {args.images} | {size:.1f} GiB | {first['seconds']} s | "
            f"{first['peak_rss_anon_mb']} MiB | {second['first_step_s']:.1f} s | {second['peak_rss_anon_mb']} MiB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
