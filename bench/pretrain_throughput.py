"""Pre-training throughput on this machine's CPU or GPU: samples/s (two views each), the share of step time the
loop waits for data, and the bare forward+backward bound, each configuration in a fresh process; with
``--conventional``, also the pipeline a user would otherwise write (torchvision ``ImageFolder`` + per-image v2 SSL
transforms + ``DataLoader(num_workers=cores, pin_memory=True)``) on the same images, model and optimizer.

    python bench/pretrain_throughput.py                                  # the presets below
    python bench/pretrain_throughput.py --only r50-png --batch-size 256 --conventional   # + the ratio
    python bench/pretrain_throughput.py --only methods                   # one row per SSL method, same backbone
    python bench/pretrain_throughput.py --recipe simclr-breast --data-root DIR --steps 5  # any recipe

Timings: wall clock over ``--steps`` steps after ``--warmup`` (CUDA synchronised at both ends only, so input work
may overlap with compute as in a real run). Data wait: on CUDA the time the device sits idle between one step's
last kernel and the next step's first (CUDA events), on the CPU the host time blocked on the next batch's views.
Every configuration gets enough images for at least ``MIN_BATCHES`` batches per epoch (epoch ends, where the
loaders restart, are part of what is measured). The bound is the real step (forward, backward, optimizer step,
EMA, channels_last views) on random input; the conventional pipeline decodes the same original files (the run's
train split) at their resolution every time, with every core a loader worker.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PNG = ["--dataset", "imagefolder", "--dataset-options", "{}", "--crop-scale", "null", "--image-size", "224"]
PRESETS = {
    "r50-png": ["--method", "simclr", "--backbone", "resnet50", "--batch-size", "32", *PNG],  # 700x460 PNGs
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
MIN_BATCHES = 8  # per epoch, at every batch size
TRAIN_SHARE = 0.6  # lower bound of the train split's share of a dataset (the default split keeps ~70 %)
METHODS = {  # the default run's backbone and batch, one row per method (DINO also with its multi-crop)
    "simclr": [],
    "byol": ["--method", "byol"],
    "mocov3": ["--method", "mocov3"],
    "dino (2 views)": ["--method", "dino"],
    "dino (2 + 4 local crops of 32 px)": ["--method", "dino", "--local-crops", "4", "--local-size", "32"],
    "vicreg": ["--method", "vicreg"],
}


def make_png_folder(root: Path, count: int = 96) -> Path:
    """``count`` 700x460 RGB PNGs in two class folders, made cheaply (smooth random images, fast compression)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 256, (23, 35, 3), dtype=np.uint8))
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        small.resize((700, 460), Image.BILINEAR).save(folder / f"{i:03d}.png", compress_level=1)
    return root


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches_forever(trainer):
    epoch = 0
    while True:
        trainer.loader.set_epoch(epoch)
        for batch in trainer.loader:
            yield epoch, batch
        epoch += 1


def _views_forever(trainer):
    """The trainer's own pipeline over epoch after epoch, as its loop runs it."""
    for _, views in trainer.pipeline(_batches_forever(trainer)):
        yield views


def _timed_steps(trainer, steps: int, warmup: int) -> tuple[float, float]:
    """(seconds for ``steps`` steps, seconds of them waiting for input) through the trainer's own pipeline: on CUDA
    the device's idle time between a step's end and the next step's start (events), on the CPU host time in next()."""
    import torch

    device = trainer.accelerator.device
    views = _views_forever(trainer)
    for _ in range(warmup + trainer.pipeline.settling_batches):  # auto: past the pipeline's timed trial
        trainer.optimize(next(views))
    _sync(device)
    gaps = []  # CUDA: (end of step k, start of step k+1) event pairs
    start, waited, ended = time.perf_counter(), 0.0, None
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(views)
        waited += time.perf_counter() - t0
        if device.type == "cuda":
            begun = torch.cuda.Event(enable_timing=True)
            begun.record()
            if ended is not None:
                gaps.append((ended, begun))
        trainer.optimize(batch)
        if device.type == "cuda":
            ended = torch.cuda.Event(enable_timing=True)
            ended.record()
    _sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        waited = sum(a.elapsed_time(b) for a, b in gaps) / 1000
    views.close()  # the pipeline's producer thread, if any, ends before the other measurements
    return seconds, waited


def compute_bound(trainer, cfg, steps: int) -> float:
    """Two-view samples/s of the real step on random input on the trainer's device: forward, backward, optimizer
    step, EMA and schedules (``Trainer.optimize``), with channels_last views like the pipeline's."""
    import torch

    device, channels = trainer.accelerator.device, trainer.data.dataset.channels

    def view(size: int) -> torch.Tensor:
        x = torch.randn(cfg.batch_size, channels, size, size, device=device)
        return x.contiguous(memory_format=torch.channels_last)

    views = (view(cfg.image_size), view(cfg.image_size), *[view(cfg.local_size)] * cfg.local_crops)
    for i in range(steps + 2):
        if i == 2:
            _sync(device)
            start = time.perf_counter()
        trainer.optimize(views)
    _sync(device)
    return cfg.batch_size * steps / (time.perf_counter() - start)


def conventional(trainer, cfg, steps: int, warmup: int) -> float:
    """samples/s of the usual pipeline on the same images, model and optimizer: the run's train split read from its
    original files (decoded every time, at their resolution) + per-image v2 SSL transforms +
    DataLoader(num_workers=cores, pin_memory=True, persistent workers)."""
    import torch

    from zoo.data import TwoViews, ssl_transform

    ds = trainer.data.dataset
    per_image = ssl_transform(cfg.image_size, ds.channels, ds.mean, ds.std)

    def loss(v1, v2_):
        with trainer.accelerator.autocast():
            channels_last = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2_))
            return trainer.method(*channels_last)["loss"]

    return _peer_samples_per_s(trainer, ds.split("train", transform=TwoViews(per_image)), loss, steps, warmup)


def _peer_samples_per_s(trainer, dataset, loss_of, steps: int, warmup: int) -> float:
    """samples/s of a plain loop over ``dataset``'s ``((view 1, view 2), label)`` items in a
    DataLoader(num_workers=cores, pin_memory on GPUs, persistent workers) at the run's batch size: copy,
    ``loss_of(v1, v2)``, backward, the trainer's optimizer step; timed after ``warmup`` steps (CUDA synchronised at
    both ends)."""
    from torch.utils.data import DataLoader

    device, optimizer = trainer.accelerator.device, trainer.optimizer
    loader = DataLoader(
        dataset,
        batch_size=trainer.cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=os.cpu_count() or 1,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
    )

    def batches():
        while True:
            for (v1, v2_), _ in loader:
                yield v1.to(device, non_blocking=True), v2_.to(device, non_blocking=True)

    it = batches()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        loss_of(*next(it)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return loader.batch_size * steps / (time.perf_counter() - start)


def lightly_style(trainer, cfg, steps: int, warmup: int) -> float:
    """samples/s of the loop lightly's SimCLR example writes, on the same cached images, model and optimizer:
    ``lightly.transforms.SimCLRTransform`` per image in a DataLoader(num_workers=cores), ``lightly.loss.NTXentLoss``
    on the model's projections, the run's autocast (SimCLR runs). lightly is not a dependency of the project:
    ``pip install lightly`` (or put an unpacked wheel on PYTHONPATH) to run it."""
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from PIL import Image
    from torch.utils.data import Dataset

    class CachedPIL(Dataset):
        """The run's train split from its uint8 cache as PIL images (what lightly's transforms take)."""

        def __init__(self, images, transform):
            self.images, self.transform = images, transform

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, i: int):
            views = self.transform(Image.fromarray(self.images[i].permute(1, 2, 0).numpy()))
            return views, 0  # no label

    ds = trainer.data.dataset
    transform = SimCLRTransform(input_size=cfg.image_size, normalize={"mean": ds.mean, "std": ds.std})
    if cfg.method != "simclr":
        raise SystemExit(f"--lightly times lightly's SimCLR loop; this configuration trains {cfg.method}")
    criterion = NTXentLoss(temperature=trainer.method.criterion.temperature)

    def loss(v1, v2_):
        with trainer.accelerator.autocast():
            out = trainer.method(v1, v2_)
        return criterion(out["z1"].float(), out["z2"].float())

    return _peer_samples_per_s(trainer, CachedPIL(trainer.data.train[0], transform), loss, steps, warmup)


def measure(
    argv: list[str], steps: int, warmup: int, with_conventional: bool, with_lightly: bool = False
) -> dict:
    """Inside a fresh process: the real trainer, timed."""
    import torch

    from medssl_zoo.train.config import parse_args
    from medssl_zoo.train.pretrain import Trainer

    cfg, _ = parse_args(argv)
    start = time.perf_counter()
    trainer = Trainer(cfg, resume=None)
    setup_s = time.perf_counter() - start
    if trainer.batches_per_epoch < MIN_BATCHES:
        raise SystemExit(
            f"{trainer.batches_per_epoch} batches per epoch: give at least {MIN_BATCHES} (more images or a smaller "
            "batch), or the measurement is mostly epoch ends"
        )
    seconds, waited = _timed_steps(trainer, steps, warmup)
    result = {
        "device": torch.cuda.get_device_name(0) if trainer.accelerator.device.type == "cuda" else "cpu",
        "method": cfg.method,
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "precision": trainer.accelerator.mixed_precision,
        "input_overlap": trainer.pipeline.mode,
        "setup_s": round(setup_s, 1),
        "batches_per_epoch": trainer.batches_per_epoch,
        "samples_per_s": round(cfg.batch_size * steps / seconds, 1),
        "step_ms": round(1000 * seconds / steps, 1),
        "data_wait_share": round(waited / seconds, 4),
        "bound_samples_per_s": round(compute_bound(trainer, cfg, max(2, steps // 2)), 1),
    }
    result["share_of_bound"] = round(result["samples_per_s"] / result["bound_samples_per_s"], 3)
    if with_lightly:
        result["lightly_samples_per_s"] = round(lightly_style(trainer, cfg, steps, warmup), 1)
        result["speedup_vs_lightly"] = round(result["samples_per_s"] / result["lightly_samples_per_s"], 2)
    if with_conventional:
        result["conventional_samples_per_s"] = round(conventional(trainer, cfg, steps, warmup), 1)
        result["speedup_vs_conventional"] = round(
            result["samples_per_s"] / result["conventional_samples_per_s"], 2
        )
    return result


def configured(argv: list[str]):
    """The run configuration these trainer arguments give (the recipe's, with the flags over it)."""
    from medssl_zoo.train.config import parse_args

    return parse_args([*argv, "--output-dir", "null"])[0]


def images_for(batch_size: int, at_least: int = 0) -> int:
    """Images for at least ``MIN_BATCHES`` train batches per epoch."""
    return max(at_least, math.ceil(MIN_BATCHES * batch_size / TRAIN_SHARE))


def run_child(name: str, argv: list[str], args, tmp: Path, png_root: Path | None) -> dict | None:
    argv = [*argv, "--output-dir", str(tmp / f"run-{len(os.listdir(tmp))}"), "--progress", "false"]
    argv += ["--export-name", "null", "--eval-every", "100000", "--checkpoint-every", "100000"]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    if png_root is not None:
        argv += ["--data-root", str(png_root)]
    elif (cfg := configured(argv)).dataset == "synthetic":  # enough images for MIN_BATCHES batches per epoch
        argv += ["--dataset-options", f"{{num_images: {images_for(cfg.batch_size, args.images)}}}"]
    env = {**os.environ, "ZOO_HOME": str(tmp / "zoo_home"), "ZOO_CACHE": str(tmp / "cache")}
    conv = ["--conventional"] if args.conventional and png_root else []
    conv += ["--lightly"] if args.lightly else []
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        *conv,
        *argv,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return {"config": name, **json.loads(line[7:])}


def child_main() -> int:
    """Inside the fresh process: its own few options; everything else is the trainer's."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--conventional", action="store_true")
    parser.add_argument("--lightly", action="store_true")
    args, trainer_argv = parser.parse_known_args()
    print(
        "RESULT "
        + json.dumps(measure(trainer_argv, args.steps, args.warmup, args.conventional, args.lightly)),
        flush=True,
    )
    return 0


def main() -> int:
    if "--child" in sys.argv[1:2]:
        return child_main()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=[*PRESETS, "methods"], help="one preset, or the per-method rows")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="override the presets' batch size")
    parser.add_argument(
        "--conventional", action="store_true", help="also time the conventional pipeline (PNGs)"
    )
    parser.add_argument(
        "--lightly",
        action="store_true",
        help="also time a loop written as lightly's SimCLR example (needs `pip install lightly`; SimCLR, RGB)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=0,
        help=f"images at least (at least {MIN_BATCHES} batches per epoch anyway)",
    )
    parser.add_argument(
        "--input-overlap",
        nargs="+",
        choices=["auto", "thread", "none"],
        default=["auto"],
        help="CPU input pipeline modes, one row each (auto: what a run chooses)",
    )
    args, rest = parser.parse_known_args()
    if args.lightly and importlib.util.find_spec("lightly") is None:
        parser.error("--lightly needs lightly: `pip install lightly` (or an unpacked wheel on PYTHONPATH)")
    runs = METHODS if args.only == "methods" else {k: v for k, v in PRESETS.items() if args.only in (None, k)}
    runs = {"custom": rest} if rest else runs
    results = []
    batch_flag = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, extra in runs.items():
            png = None
            if name == "r50-png":
                png = make_png_folder(
                    tmp / "png", images_for(configured(extra + batch_flag).batch_size, args.images)
                )
            for mode in args.input_overlap:
                result = run_child(name, [*extra, "--input-overlap", mode], args, tmp, png)
                if result is None:
                    return 1
                results.append(result)
                print(json.dumps(result), flush=True)
    print_table(results, relative=args.only == "methods")
    return 0


def print_table(results: list[dict], relative: bool) -> None:
    print(
        "\n| config | device | input overlap | samples/s | bound (fwd+bwd) | of bound | data wait | conventional | "
        "speed-up | lightly-style | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = results[0]["step_ms"] if results else 1.0
    for r in results:
        extra = f" ({r['step_ms'] / base:.2f}x SimCLR's step)" if relative else ""
        print(
            f"| {r['config']} ({r['backbone']} @ {r['image_size']}, batch {r['batch_size']}){extra} | {r['device']} | {r['input_overlap']} | "
            f"{r['samples_per_s']} | {r['bound_samples_per_s']} | {r['share_of_bound']:.0%} | "
            f"{r['data_wait_share']:.1%} | {r.get('conventional_samples_per_s', '–')} | {r.get('speedup_vs_conventional', '–')} | "
            f"{r.get('lightly_samples_per_s', '–')} | {r.get('speedup_vs_lightly', '–')} |"
        )


if __name__ == "__main__":
    sys.exit(main())
