"""Run monitoring: metrics.jsonl, the kNN monitor, representation-collapse detection, curve plots."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.probe import extract_features, knn_accuracy
from zoo.run_dir import RunData

__all__ = [
    "COLLAPSE_THRESHOLD",
    "CollapseDetector",
    "EmbeddingHealth",
    "effective_rank",
    "KnnMonitor",
    "MetricsLog",
    "embedding_spread",
    "plot_curves",
]

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
        """Every complete record (a line cut off by a kill is skipped)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records


def embedding_spread(z: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of L2-normalised embeddings, times sqrt(D) (lightly's collapse measure); a 0-d
    tensor on z's device (no host synchronisation).

    Shape:
        z: N x D. Output: scalar tensor, ~1 when the embeddings spread, 0 when they collapse to a point.
    """
    z = F.normalize(z.detach().float(), dim=1)  # N x D
    return z.std(dim=0).mean() * math.sqrt(z.shape[1])


class CollapseDetector:
    """Warns once when the embedding spread falls below ``threshold`` after the warmup."""

    def __init__(self, threshold: float = COLLAPSE_THRESHOLD, after_step: int = 0):
        self.threshold, self.after_step, self.warned = threshold, after_step, False

    def update(self, step: int, spread: float) -> bool:
        """Record one step; True when this step is the collapse being reported."""
        if self.warned or step <= self.after_step or spread >= self.threshold:
            return False
        log.warning("representation collapse: embedding spread %.3f at step %d", spread, step)
        self.warned = True
        return True


class KnnMonitor:
    """kNN accuracy of an encoder on a run's data: memory bank = train split, queries = val or test."""

    def __init__(self, data: RunData, k: int, metric: str):
        self.data, self.k, self.metric = data, k, metric

    def __call__(self, encoder: torch.nn.Module, split: str = "val") -> float:
        images, labels = self.data.splits[split]
        transform = self.data.eval_transform
        bank = extract_features(encoder, self.data.train[0], transform)
        queries = extract_features(encoder, images, transform)
        num_classes = self.data.dataset.num_classes
        return knn_accuracy(
            bank, self.data.train[1], queries, labels, num_classes, k=self.k, metric=self.metric
        )


def effective_rank(features: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of the centred features (Roy & Vetterli 2007): from 1 (all
    embeddings on a line: collapse) to D (spread over every dimension).

    Shape:
        features: N x D. Output: a float in [1, min(N, D)].
    """
    centred = features.double() - features.double().mean(dim=0)
    singular = torch.linalg.svdvals(centred)
    p = singular / singular.sum().clamp(min=1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))


class EmbeddingHealth:
    """Without labels, the encoder's health on a fixed sample of train images: the spread of its L2-normalised
    features and their effective rank (both fall when the representation collapses)."""

    def __init__(self, data: RunData, sample: int = 256):
        self.images = data.train[0][:sample]
        self.transform = data.eval_transform

    def __call__(self, encoder: torch.nn.Module) -> dict[str, float]:
        features = extract_features(encoder, self.images, self.transform)  # N x F
        return {"spread": float(embedding_spread(features)), "effective_rank": effective_rank(features)}


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
    if evals and "knn" in evals[0]:
        ax_knn.plot([m["step"] for m in evals], [m["knn"] for m in evals], marker="o")
        ax_knn.set(xlabel="step", ylabel="kNN accuracy (val)", title="kNN monitor", ylim=(0, 1))
    else:  # an unlabelled run: the embedding health
        ax_knn.plot([m["step"] for m in evals], [m.get("effective_rank") for m in evals], marker="o")
        ax_knn.set(xlabel="step", ylabel="effective rank", title="embedding health (no labels)")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
