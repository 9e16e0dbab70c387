"""Embedding an archive: images/s of medssl-embed against a plain loop and the model's forward-only bound, peak
memory against the archive's size, and search latency. Every measurement runs in a fresh process.

    python bench/embed_throughput.py                        # everything below (about 20 minutes on 2 cores)
    python bench/embed_throughput.py --only speed --images 256
    python bench/embed_throughput.py --only memory --sizes 10000,50000
    python bench/embed_throughput.py --only search --rows 100000 --width 1024

- speed: 700x460 RGB PNGs, test_resnet @ 64 and ResNet-50 @ 224 (random weights: speed does not depend on them).
  ``medssl-embed`` = ``zoo.embed`` end to end (scan, model load, worker start, shards written) and its loop alone;
  plain loop = the obvious user code: PIL open + timm's eval transform + one forward per image, fp32, in the main
  process; bound = the forward pass alone on ready batches, with embed's own settings (batch, channels_last, bf16
  where it is fast).
- memory: peak RSS of ``zoo.embed`` (the process, and the largest decoding worker) on archives of small PNGs.
- search: ``zoo.search`` over N x D random vectors (float32 shards), warm page cache, median of 5.
- hostile: each hostile input of the fault tests, refused (or read) in a fresh process: time, peak RSS.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPEED_MODELS = {"test_resnet @ 64": ("test_resnet", 64, 64), "ResNet-50 @ 224": ("resnet50", 224, 32)}


def model_folder(path: Path, architecture: str, size: int) -> Path:
    """An export folder of a randomly initialised timm model: the tests' generator (bench may import tests, the
    reverse would make the suite depend on benchmark scripts), so both measure and test the same folders."""
    from tests.helpers.embeddings import model_folder as make_folder

    return make_folder(path, size=size, architecture=architecture)


def small_pngs(root: Path, count: int) -> Path:
    """``count`` 32x32 PNGs, 1000 to a folder (the memory measurement: many files, little decoding)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    tiles = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(16)]
    for i in range(count):
        folder = root / f"part{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        tiles[i % 16].save(folder / f"{i:06d}.png", compress_level=1)
    return root


# --- measurements, each inside a fresh process --------------------------------------------------------------------


def _peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def measure_embed(
    model: str, data: str, out: str, batch_size: int, workers: int | None, bound: bool, threads: int
) -> dict:
    """``zoo.embed`` end to end, and the loop alone (the shards' generator, timed from first to last); with
    ``bound``, between two measurements of the forward-only bound in the same process (the machine's load
    drifts; without it the process's peak memory is embed's own)."""
    import torch

    import zoo

    torch.set_num_threads(threads)
    imports = _peak_mib(resource.RUSAGE_SELF)
    module = sys.modules["zoo.embeddings.embed"]  # the module (zoo.embeddings.embed is the function)
    real, loop = module.embed_shards, {}

    def timed(*args, **kwargs):
        loop["start"] = time.perf_counter()
        yield from real(*args, **kwargs)
        loop["end"] = time.perf_counter()

    module.embed_shards = timed
    bounds = [measure_bound(model, batch_size, 4 * batch_size)["per_s"]] if bound else []
    start = time.perf_counter()
    emb = zoo.embed(model, data, out, batch_size=batch_size, workers=workers, progress=False)
    total = time.perf_counter() - start
    bounds += [measure_bound(model, batch_size, 4 * batch_size)["per_s"]] if bound else []
    rows = len(emb) + emb.meta["skipped"]
    return {
        "images": rows,
        "imports_mib": imports,
        "seconds": total,
        "end_to_end_per_s": rows / total,
        "loop_per_s": rows / (loop["end"] - loop["start"]),
        "bound_per_s": sum(bounds) / len(bounds) if bounds else None,
        "bounds": bounds,
        "peak_rss_mib": _peak_mib(resource.RUSAGE_SELF),
        "worker_peak_rss_mib": _peak_mib(resource.RUSAGE_CHILDREN),
        "precision": emb.meta["key"]["precision"],
    }


def measure_plain(model: str, data: str, threads: int) -> dict:
    """The obvious loop: PIL in the main process, timm's eval transform, one forward per image, fp32."""
    import timm.data
    import torch
    from PIL import Image

    import zoo

    torch.set_num_threads(threads)
    encoder = zoo.load(model, features_only=True)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(encoder))
    paths = sorted(Path(data).rglob("*.png"))
    features = []
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            x = transform(Image.open(path).convert("RGB"))[None]
            features.append(encoder(x)[0])
    seconds = time.perf_counter() - start
    return {"images": len(paths), "per_s": len(paths) / seconds, "seconds": seconds}


def measure_bound(model: str, batch_size: int, images: int) -> dict:
    """The forward pass alone on ready batches, with embed's settings (channels_last, bf16 where fast)."""
    import torch

    import zoo
    from zoo.runtime import bf16_is_fast

    encoder = zoo.load(model, features_only=True).to(memory_format=torch.channels_last)
    size = encoder.pretrained_cfg["input_size"][-1]
    x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    bf16, steps = bf16_is_fast("cpu"), max(1, images // batch_size)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        encoder(x)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            encoder(x).float()
        seconds = time.perf_counter() - start
    return {"per_s": steps * batch_size / seconds, "bf16": bf16}


def measure_search(folder: str, queries: int, repeats: int = 5) -> dict:
    import statistics

    import torch

    import zoo

    emb = zoo.embeddings.open(folder)
    q = torch.randn(queries, emb.width, generator=torch.Generator().manual_seed(1))
    zoo.search(emb, q, k=10)  # page cache warm, as a served index would be
    before, times = _peak_mib(resource.RUSAGE_SELF), []
    for _ in range(repeats):
        start = time.perf_counter()
        zoo.search(emb, q, k=10)
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "rows": len(emb),
        "width": emb.width,
        "peak_rss_mib": _peak_mib(resource.RUSAGE_SELF),
        "rss_before_mib": before,
    }


def make_search_output(folder: str, rows: int, width: int) -> dict:
    import torch

    from zoo.embeddings.format import INDEX_FIELDS, plan_id, write_csv, write_meta, write_shard

    out, shards, shard_size = Path(folder), [], 16384
    key = {"model": {"width": width}, "dtype": "float32"}
    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for k, start in enumerate(range(0, rows, shard_size)):
        part = torch.randn(min(shard_size, rows - start), width, generator=g)
        write_shard(out / f"embeddings-{k:05d}.safetensors", part, plan_id(key), k, start, len(part), [])
        shards.append({"file": f"embeddings-{k:05d}.safetensors", "first_row": start, "rows": len(part)})
    write_csv(
        out / "index.csv",
        INDEX_FIELDS,
        ((f"{i}.png", 0, 0, "", "", i // shard_size, i % shard_size) for i in range(rows)),
    )
    write_meta(
        out,
        {
            "format": "medssl-zoo-embeddings",
            "version": 1,
            "complete": True,
            "plan": plan_id(key),
            "key": key,
            "shards": shards,
        },
    )
    return {}


def measure_refusal(action: str, target: str, model: str = "", data: str = "") -> dict:
    """One hostile case in a fresh process: the time and the peak RSS above the imports until it is refused (or
    done, for the data folder with links)."""
    import zoo

    imports = _peak_mib(resource.RUSAGE_SELF)
    start, outcome = time.perf_counter(), "done"
    try:
        if action == "search":
            zoo.search(target, [1.0, 0.0, 0.0, 0.0])
        else:
            zoo.embed(model, data, target, overwrite=True, workers=0, progress=False, max_bad=0.5)
    except ValueError as e:
        outcome = f"refused: {str(e).replace(target, 'DIR')[:110]}"
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "growth_mib": _peak_mib(resource.RUSAGE_SELF) - imports, "outcome": outcome}


CHILDREN = {
    "embed": measure_embed,
    "plain": measure_plain,
    "search": measure_search,
    "search-output": make_search_output,
    "refusal": measure_refusal,
}


def child(kind: str, **kwargs) -> dict:
    """``CHILDREN[kind](**kwargs)`` in a fresh Python process (its own peak RSS, nothing warm)."""
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


# --- the three parts ----------------------------------------------------------------------------------------------


def speed(tmp: Path, images: int, r50_images: int, threads: int) -> list[str]:
    from bench.pretrain_throughput import make_png_folder

    rows = [
        "| model | images | medssl-embed end to end | medssl-embed loop | plain loop | forward-only bound | loop / bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (arch, size, batch) in SPEED_MODELS.items():
        count = r50_images if arch == "resnet50" else images
        data = tmp / f"png-{count}"
        if not data.exists():
            make_png_folder(data, count)
        model = str(model_folder(tmp / arch, arch, size))
        out = str(tmp / f"out-{arch}")
        run = child(
            "embed",
            model=model,
            data=str(data),
            out=out,
            batch_size=batch,
            workers=None,
            bound=True,
            threads=threads,
        )
        plain = child("plain", model=model, data=str(data), threads=threads)
        bound = run["bound_per_s"]
        rows.append(
            f"| {name} (batch {batch}, {run['precision']}, {threads} thread{'s' * (threads > 1)}) | {count} | {run['end_to_end_per_s']:.1f}/s | "
            f"{run['loop_per_s']:.1f}/s | {plain['per_s']:.1f}/s | {bound:.1f}/s "
            f"({min(run['bounds']):.1f}–{max(run['bounds']):.1f}) | {run['loop_per_s'] / bound:.0%} |"
        )
        print(rows[-1], flush=True)
    return rows


def memory(tmp: Path, sizes: list[int], threads: int) -> list[str]:
    rows = [
        "| images (32x32 PNG) | peak RSS, embedding process | peak RSS, largest decoding worker | time (end to end) |",
        "|---|---|---|---|",
    ]
    model = str(model_folder(tmp / "tiny", "test_resnet", 32))
    for n in sizes:
        data = small_pngs(tmp / f"small-{n}", n)
        out = str(tmp / f"mem-{n}")
        run = child(
            "embed",
            model=model,
            data=str(data),
            out=out,
            batch_size=64,
            workers=None,
            bound=False,
            threads=threads,
        )
        growth = run["peak_rss_mib"] - run["imports_mib"]
        rows.append(
            f"| {n} | {run['peak_rss_mib']:.0f} MiB ({run['imports_mib']:.0f} after the imports, "
            f"+{growth:.0f}) | {run['worker_peak_rss_mib']:.0f} MiB | {run['seconds']:.0f} s |"
        )
        print(rows[-1], flush=True)
    return rows


def search(tmp: Path, rows: int, width: int) -> list[str]:
    folder = str(tmp / f"search-{rows}x{width}")
    child("search-output", folder=folder, rows=rows, width=width)
    table = ["| vectors | queries | median latency | peak RSS (process) |", "|---|---|---|---|"]
    for queries in (1, 64):
        r = child("search", folder=folder, queries=queries)
        table.append(
            f"| {rows} x {width} float32 | {queries} | {1000 * r['median_s']:.0f} ms | {r['peak_rss_mib']:.0f} MiB |"
        )
        print(table[-1], flush=True)
    return table


def hostile(tmp: Path) -> list[str]:
    """Each hostile input of tests/faults/test_embed_faults.py, refused (or read) in a fresh process."""
    import os

    from tests.helpers.embeddings import hostile_outputs, image_folder

    cases = [(name, "search", str(folder), {}) for name, folder in hostile_outputs(tmp / "outputs").items()]
    model = str(model_folder(tmp / "tiny", "test_resnet", 32))
    data = image_folder(tmp / "data", 8)
    (tmp / "fifo-out").mkdir()
    os.mkfifo(tmp / "fifo-out" / "meta.json")
    cases.append(("meta.json is a FIFO", "embed", str(tmp / "fifo-out"), {}))
    (tmp / "stranger").mkdir()
    (tmp / "stranger" / "index.csv").write_text("theirs\n")
    cases.append(("a folder that is not ours, --overwrite", "embed", str(tmp / "stranger"), {}))
    links = image_folder(tmp / "links", 8)
    (links / "loop").symlink_to(links, target_is_directory=True)
    (links / "zero.png").symlink_to("/dev/zero")
    (links / "passwd.png").symlink_to("/etc/passwd")
    (links / "outside").symlink_to(data, target_is_directory=True)
    cases.append(
        (
            "data: links to its root, /dev/zero, /etc/passwd, a folder outside",
            "embed",
            str(tmp / "o"),
            {"data": str(links)},
        )
    )
    rows = ["| hostile input | outcome | time | peak RSS above the imports |", "|---|---|---|---|"]
    for name, action, target, extra in cases:
        r = child("refusal", action=action, target=target, model=model, data=extra.get("data", str(data)))
        rows.append(f"| {name} | {r['outcome']} | {r['seconds']:.2f} s | {r['growth_mib']:.1f} MiB |")
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        print("RESULT " + json.dumps(CHILDREN[sys.argv[2]](**json.loads(sys.argv[3]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["speed", "memory", "search", "hostile"])
    parser.add_argument(
        "--images", type=int, default=512, help="700x460 PNGs for test_resnet (default: %(default)s)"
    )
    parser.add_argument(
        "--r50-images", type=int, default=192, help="700x460 PNGs for ResNet-50 (default: %(default)s)"
    )
    parser.add_argument("--sizes", default="10000,50000", help="archive sizes for the memory rows")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: %(default)s)"
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        tables = []
        if args.only in (None, "speed"):
            tables.append(speed(Path(tmp), args.images, args.r50_images, args.threads))
        if args.only in (None, "memory"):
            tables.append(memory(Path(tmp), [int(n) for n in args.sizes.split(",")], args.threads))
        if args.only in (None, "search"):
            tables.append(search(Path(tmp), args.rows, args.width))
        if args.only in (None, "hostile"):
            tables.append(hostile(Path(tmp)))
    print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("\n\n".join("\n".join(t) for t in tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
