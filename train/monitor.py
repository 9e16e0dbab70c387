"""Run monitoring: metrics.jsonl, kNN evaluation of the encoder, representation collapse, curve plots."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.probe import extract_features, knn_accuracy

log = logging.getLogger("train")

COLLAPSE_THRESHOLD = 0.05  # std of L2-normalised embeddings x sqrt(D); ~1 when spread, 0 when collapsed


class MetricsLog:
    """Append-only JSON lines; one object per logged event."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, **record) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def embedding_spread(z: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised embeddings, times sqrt(D) (lightly's collapse measure)."""
    z = F.normalize(z.detach().float(), dim=1)  # N x D
    return (z.std(dim=0).mean() * math.sqrt(z.shape[1])).item()


def knn_eval(encoder, bank: tuple, queries: tuple, transform, num_classes: int, k: int, metric: str) -> float:
    """kNN accuracy of ``encoder``: memory bank = (uint8 images, labels), scored on ``queries``."""
    bank_features = extract_features(encoder, bank[0], transform)
    query_features = extract_features(encoder, queries[0], transform)
    return knn_accuracy(bank_features, bank[1], query_features, queries[1], num_classes, k=k, metric=metric)


def plot_curves(metrics: list[dict], path: Path, title: str) -> None:
    """Loss and kNN accuracy against the step, as a PNG (written to a temporary file, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m for m in metrics if m.get("event") == "step"]
    evals = [m for m in metrics if m.get("event") == "eval"]
    fig, (ax_loss, ax_knn) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot([m["step"] for m in steps], [m["loss"] for m in steps], lw=1)
    ax_loss.set(xlabel="step", ylabel="loss", title="SSL loss")
    ax_knn.plot([m["step"] for m in evals], [m["knn"] for m in evals], marker="o")
    ax_knn.set(xlabel="step", ylabel="kNN accuracy (val)", title="kNN monitor", ylim=(0, 1))
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
