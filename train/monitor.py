"""Run monitoring: metrics.jsonl, the kNN monitor, representation-collapse detection, curve plots."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.data.run_data import RunData
from zoo.files import atomic_savefig, atomic_write_bytes, read_bytes, umask_mode
from zoo.optional import available, install_hint
from zoo.probe import extract_features, knn_accuracy, knn_multilabel, macro_auroc

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


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class MetricsLog:
    """``metrics.jsonl``, owned here: appended, read back and truncated by this class only.

    One JSON object per line. A *record* is one this project writes: ``event`` "step" (with a numeric ``loss``) or
    "eval" (with ``knn`` or ``spread``), and an integer ``step``. Anything else — the last line a kill cut off, a
    line someone else added — is skipped by :meth:`read` and never makes a run fail.
    """

    EVENTS = ("step", "eval")
    LIMIT = 2**30  # bytes read at most: ~7 million steps of records; a larger file is not a run's log

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, **record) -> None:
        """Append one record (never through a link: a run writes only its own files)."""
        if not self.enabled:
            return
        flags = (
            os.O_WRONLY
            | os.O_APPEND
            | os.O_CREAT
            | getattr(os, "O_NOFOLLOW", 0)
            | getattr(os, "O_CLOEXEC", 0)
        )
        fd = os.open(self.path, flags, umask_mode())
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _lines(self) -> list[bytes]:
        if not self.path.exists() and not self.path.is_symlink():
            return []
        return read_bytes(self.path, self.LIMIT, "metrics log").split(b"\n")

    @classmethod
    def as_record(cls, line: bytes) -> dict | None:
        """The record ``line`` holds, or None for a line that is not one of this project's records."""
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(record, dict) or record.get("event") not in cls.EVENTS:
            return None
        step = record.get("step")
        if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
            return None
        step_event = record["event"] == "step"
        numbers = ("loss", "lr", "spread") if step_event else ("knn", "spread", "effective_rank")
        required = ("loss",) if step_event else ("knn", "spread")
        if not all(_is_number(record[k]) for k in numbers if k in record):
            return None
        return record if any(k in record for k in required) else None

    def read(self) -> list[dict]:
        """Every record, in order (other lines skipped)."""
        return [r for line in self._lines() if (r := self.as_record(line)) is not None]

    def truncate(self, step: int) -> None:
        """Drop the records a crashed run logged after the checkpoint it resumes from, and the unfinished last
        line a kill cut off, so the resumed run logs no step twice; ``step = -1`` drops every record (a restart
        from step 0). Complete lines that are not records (someone else's) are kept as they are."""
        lines = self._lines() if self.enabled else []
        if not lines:
            return
        lines.pop()  # after the last newline: b"" when the file is whole, else the line a kill cut off
        kept = [
            line + b"\n"
            for line in lines
            if (record := self.as_record(line)) is None or record["step"] <= step
        ]
        atomic_write_bytes(self.path, b"".join(kept))


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
    """kNN accuracy of an encoder on a run's data: memory bank = train split, queries = val or test. On
    multi-label data, the mean AUROC over the labels of the per-label kNN vote (:func:`zoo.probe.knn_multilabel`)."""

    def __init__(self, data: RunData, k: int, metric: str):
        self.data, self.k, self.metric = data, k, metric

    @property
    def name(self) -> str:
        """What the monitor reports: ``accuracy``, or ``mean AUROC`` on multi-label data."""
        return "mean AUROC" if self.data.dataset.multilabel else "accuracy"

    def __call__(self, encoder: torch.nn.Module, split: str = "val") -> float:
        images, labels = self.data.splits[split]
        transform = self.data.eval_transform
        bank = extract_features(encoder, self.data.train[0], transform)
        queries = extract_features(encoder, images, transform)
        num_classes = self.data.dataset.num_classes
        if self.data.dataset.multilabel:
            scores = knn_multilabel(bank, self.data.train[1], queries, k=self.k, metric=self.metric)
            auroc = macro_auroc(scores, labels)
            if auroc is None:
                log.warning(
                    "kNN monitor: no label has a positive and a negative %s image; reporting 0.5", split
                )
            return 0.5 if auroc is None else auroc
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


def plot_curves(metrics: list[dict], path: Path, title: str, knn_name: str = "accuracy") -> None:
    """Loss and kNN accuracy (or ``knn_name``: mean AUROC on multi-label data) against the step (``metrics``:
    :meth:`MetricsLog.read` records), as a PNG written atomically; skipped with a warning when matplotlib (the
    ``[plots]`` extra) is not installed."""
    if not available("matplotlib"):
        log.warning("no curves.png: matplotlib is not installed (%s)", install_hint("matplotlib"))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m for m in metrics if m["event"] == "step"]
    evals = [m for m in metrics if m["event"] == "eval"]
    fig, (ax_loss, ax_knn) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot([m["step"] for m in steps], [m["loss"] for m in steps], lw=1)
    ax_loss.set(xlabel="step", ylabel="loss", title="SSL loss")
    if evals and "knn" in evals[0]:
        ax_knn.plot([m["step"] for m in evals], [m.get("knn", math.nan) for m in evals], marker="o")
        ax_knn.set(xlabel="step", ylabel=f"kNN {knn_name} (val)", title="kNN monitor", ylim=(0, 1))
    else:  # an unlabelled run: the embedding health
        ax_knn.plot(
            [m["step"] for m in evals], [m.get("effective_rank", math.nan) for m in evals], marker="o"
        )
        ax_knn.set(xlabel="step", ylabel="effective rank", title="embedding health (no labels)")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)
