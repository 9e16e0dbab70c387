"""A tiny pre-training configuration for tests: seconds, not minutes."""

import json
from pathlib import Path

TINY = [
    "--backbone",
    "test_resnet",
    "--dataset",
    "synthetic",
    "--dataset-options",
    "{num_images: 96}",
    "--image-size",
    "32",
    "--crop-scale",
    "[0.3, 1.0]",
    "--batch-size",
    "16",
    "--optimizer",
    "adamw",
    "--lr",
    "2e-3",
    "--knn-k",
    "5",
    "--progress",
    "false",
    "--eval-every",
    "1000",
]


def args(out: Path, *extra: str) -> list[str]:
    return [*TINY, "--output-dir", str(out), *extra]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def step_losses(run_dir: Path) -> list[float]:
    return [m["loss"] for m in metrics(run_dir) if m["event"] == "step"]
