"""Linear probe end to end (feature extraction + fit + test) against the original study's linear.py protocol.

The baseline is a faithful re-implementation of SmallDataSSL's linear.py, run on the same encoder and split:
frozen backbone + MLP head (F → 512 → BN → LeakyReLU → C), Adam, StepLR(25, 0.5), batch 64, ``--epochs``
(200 in the study) epochs with the features recomputed through the backbone every epoch, val and test at batch
size 1, the best-val epoch kept. One deviation: lr 1e-3 instead of the script's default 1.0, which diverges.

    python bench/linear_probe_speed.py RUN_DIR [--epochs 200]
    python bench/linear_probe_speed.py          # pre-trains the embedded default first (~2 min)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def original_protocol(encoder, splits, transform, num_classes: int, epochs: int) -> float:
    """linear.py: recompute features every epoch; returns test accuracy of the best-val epoch."""
    import torch

    from zoo.probe import MLPHead

    torch.manual_seed(0)
    head = MLPHead(encoder.num_features, num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=25, gamma=0.5)
    encoder.eval()

    def accuracy(images, labels) -> float:  # batch size 1, as the original
        head.eval()
        correct = 0
        with torch.no_grad():
            for i in range(len(images)):
                correct += int(
                    head(encoder(transform(images[i : i + 1]))).argmax(1).item() == labels[i].item()
                )
        return correct / len(images)

    best_val, best_test = -1.0, 0.0
    train_x, train_y = splits["train"]
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            if len(idx) < 2:
                continue
            with torch.no_grad():
                features = encoder(transform(train_x[idx]))  # recomputed every epoch
            loss = torch.nn.functional.cross_entropy(head(features), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        val = accuracy(*splits["val"])
        if val > best_val:
            best_val, best_test = val, accuracy(*splits["test"])
    return best_test


def ours(encoder, splits, transform) -> float:
    from zoo.probe import extract_features, fit_linear_probe

    feats = {s: extract_features(encoder, x, transform) for s, (x, _) in splits.items()}
    probe = fit_linear_probe(feats["train"], splits["train"][1], feats["val"], splits["val"][1])
    return (probe.logits(feats["test"]).argmax(1) == splits["test"][1]).float().mean().item()


def extraction_throughput(encoder, images, transform) -> tuple[float, float]:
    """(images/s of extract_features incl. the eval transform, images/s of the bare forward on ready tensors)."""
    import torch

    from zoo.probe import extract_features

    extract_features(encoder, images[:128], transform)
    t = time.perf_counter()
    extract_features(encoder, images, transform)
    ours = len(images) / (time.perf_counter() - t)
    x = transform(images[:128]).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        encoder(x)
        t = time.perf_counter()
        for start in range(0, len(images), 128):
            encoder(x[: min(128, len(images) - start)])
    return ours, len(images) / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    from medssl_zoo.train.evaluation import EvalOptions, load_data, resolve_source
    from zoo.data import eval_transform

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = Path(tmp) / "default"
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "train" / "pretrain.py"),
                    "--output-dir",
                    str(run_dir),
                    "--export-name",
                    "null",
                    "--progress",
                    "false",
                ],
                check=True,
            )
        source = resolve_source(str(run_dir))
        data = load_data(source, EvalOptions())
        ds, splits = data.dataset, data.splits
        transform = eval_transform(source.data_config)
        encoder = source.encoder.eval()
        extract_ips, bound_ips = extraction_throughput(encoder, splits["train"][0], transform)
        t = time.perf_counter()
        ours_acc = ours(encoder, splits, transform)
        ours_s = time.perf_counter() - t
        t = time.perf_counter()
        base_acc = original_protocol(encoder, splits, transform, ds.num_classes, args.epochs)
        base_s = time.perf_counter() - t
    result = {
        "encoder": source.architecture,
        "dataset": ds.spec.name,
        "train_images": len(splits["train"][0]),
        "ours_s": round(ours_s, 2),
        "ours_test_accuracy": round(ours_acc, 4),
        "original_protocol_s": round(base_s, 1),
        "original_protocol_epochs": args.epochs,
        "original_protocol_test_accuracy": round(base_acc, 4),
        "speed_up": round(base_s / ours_s, 1),
        "feature_extraction_images_per_s": round(extract_ips),
        "forward_only_bound_images_per_s": round(bound_ips),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
