"""Pre-training throughput: samples/s (two views each) and the share of step time spent waiting for data.

Each configuration runs in a fresh process (no warm caches or thread pools shared between them); the figure is
the median over steps after warm-up. In the same process the backbone's bare forward+backward on two views
of random input is timed as the compute bound.

    python bench/pretrain_throughput.py                      # the presets below, one process each
    python bench/pretrain_throughput.py --only r50-png       # one preset
    python bench/pretrain_throughput.py --config simclr-breast --data-root DIR --steps 5   # any recipe
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRESETS = {
    # the reference point: ResNet-50 @ 224, SimCLR, batch 32, 700x460 PNG inputs
    "r50-png": [
        "--method",
        "simclr",
        "--backbone",
        "resnet50",
        "--image-size",
        "224",
        "--batch-size",
        "32",
        "--dataset",
        "imagefolder",
        "--dataset-options",
        "{}",
        "--crop-scale",
        "null",
    ],
    "r18-synthetic-64": [
        "--method",
        "simclr",
        "--backbone",
        "resnet18",
        "--image-size",
        "64",
        "--batch-size",
        "128",
    ],
    "default": [],
}


def make_png_folder(root: Path, count: int = 64) -> Path:
    """``count`` 700x460 RGB PNGs of synthetic tissue in a two-class image folder."""
    import numpy as np
    from PIL import Image

    from zoo.data.synthetic import render_tile

    for i in range(count):
        tile = render_tile(np.random.default_rng([7, i]), i % 4, size=700)[:460]
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tile).save(folder / f"{i:03d}.png")
    return root


def measure(argv: list[str], steps: int, warmup: int) -> dict:
    """Run inside a fresh process: build the real trainer, time `steps` optimizer steps after `warmup`."""
    import torch

    from medssl_zoo.train.config import parse_args
    from medssl_zoo.train.pretrain import Trainer

    cfg, _ = parse_args(argv)
    start = time.perf_counter()
    trainer = Trainer(cfg, resume=None)
    setup_s = time.perf_counter() - start
    step_times, data_times = [], []
    batches = iter(trainer.loader)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            images, ids = next(batches)
        except StopIteration:
            batches = iter(trainer.loader)
            images, ids = next(batches)
        views = trainer.make_views(images, ids, epoch=0)
        t1 = time.perf_counter()
        trainer.optimize(*views)
        t2 = time.perf_counter()
        if i >= warmup:
            step_times.append(t2 - t0)
            data_times.append(t1 - t0)
    bound = compute_bound(trainer, cfg, steps=max(2, steps // 2))
    median = statistics.median(step_times)
    return {
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "dataset": cfg.dataset,
        "threads": torch.get_num_threads(),
        "precision": trainer.accelerator.mixed_precision,
        "setup_s (decode + cache)": round(setup_s, 1),
        "samples_per_s": round(cfg.batch_size / median, 2),
        "step_s_median": round(median, 3),
        "data_wait_share": round(sum(data_times) / sum(step_times), 4),
        "bound_samples_per_s": round(bound, 2),
    }


def compute_bound(trainer, cfg, steps: int) -> float:
    """Two-view samples/s of the bare model (same precision) on random input: forward + backward only."""
    import torch

    model = trainer.accelerator.unwrap_model(trainer.model)
    shape = (cfg.batch_size, trainer.data.dataset.channels, cfg.image_size, cfg.image_size)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with trainer.accelerator.autocast():
            loss = model(x, x)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return cfg.batch_size / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=sorted(PRESETS), help="run one preset")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:  # inside the fresh process
        print("RESULT " + json.dumps(measure(rest, args.steps, args.warmup)), flush=True)
        return 0
    runs = {"custom": rest} if rest else {k: v for k, v in PRESETS.items() if args.only in (None, k)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        png_root = make_png_folder(Path(tmp) / "png") if "r50-png" in runs else None
        for name, extra in runs.items():
            argv = [
                *extra,
                "--output-dir",
                str(Path(tmp) / f"run-{name}"),
                "--progress",
                "false",
                "--export-name",
                "null",
                "--eval-every",
                "100000",
            ]
            if name == "r50-png":
                argv += ["--data-root", str(png_root)]
            env = {**os.environ, "ZOO_HOME": str(Path(tmp) / "zoo_home")}
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                *argv,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            results.append({"config": name, **json.loads(line[7:])})
            print(json.dumps(results[-1]), flush=True)
    print("\n| config | samples/s | bound (fwd+bwd) | data wait | step s | precision | threads |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['config']} ({r['backbone']} @ {r['image_size']}, batch {r['batch_size']}) | {r['samples_per_s']} | "
            f"{r['bound_samples_per_s']} | {r['data_wait_share']:.1%} | {r['step_s_median']} | {r['precision']} | "
            f"{r['threads']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
