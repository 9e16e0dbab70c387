"""The protocols of a comparison, run on one encoder's frozen embeddings of the train / val / test split.

kNN (cosine, k = 20: DINO's evaluation, capped at the smallest class), logistic regression (:mod:`zoo.probe.linear`:
L-BFGS, L2 chosen on val), SimpleShot (:mod:`zoo.probe.simpleshot`), few-shot SimpleShot over seeded episodes of
n labelled images per class (UNI's ``eval_patch_features``: mean ± std over episodes) and kNN / logistic
regression on label fractions of train (:func:`zoo.probe.label_fraction_indices`, over seeds). Every encoder sees
the same rows, episodes and fractions, so the numbers are comparable across encoders and runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from zoo.probe import (
    few_shot_episodes,
    fit_linear_probe,
    knn_predict,
    label_fraction_indices,
    simpleshot_predict,
)

__all__ = ["METRICS", "Split", "run_protocols", "scores"]

METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "auroc")


@dataclass
class Split:
    """Frozen features and labels of train, val and test (same rows for every encoder)."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    num_classes: int


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    return scores / scores.sum(dim=1, keepdim=True).clamp(min=1e-12)


def _knn(data: Split, subset: torch.Tensor, k: int) -> torch.Tensor:
    x, y = data.x["train"][subset], data.y["train"][subset]
    counts = torch.bincount(y)
    k = min(k, int(counts[counts > 0].min()))  # more neighbours than a class has votes the majority class
    return _normalised(knn_predict(x, y, data.x["test"], data.num_classes, k=k, metric="cosine"))


def _linear(data: Split, subset: torch.Tensor) -> torch.Tensor:
    probe = fit_linear_probe(data.x["train"][subset], data.y["train"][subset], data.x["val"], data.y["val"])
    return torch.softmax(probe.logits(data.x["test"]), dim=1)


def _simpleshot(data: Split, subset: torch.Tensor) -> torch.Tensor:
    x, y = data.x["train"][subset], data.y["train"][subset]
    return simpleshot_predict(x, y, data.x["test"], data.num_classes)


def scores(probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, balanced accuracy and macro-F1 from the confusion matrix, AUROC by sklearn (binary, or macro
    one-vs-rest; None when a class is absent): :func:`zoo.probe.classification_metrics`' values, without its
    other metrics (sklearn's per-call validation made them most of a comparison's time)."""
    y, pred = labels.numpy(), probabilities.argmax(dim=1).numpy()
    confusion = np.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
    true, predicted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    present = true > 0
    recall = hits[present] / true[present]
    precision = np.divide(hits, predicted, out=np.zeros(num_classes), where=predicted > 0)
    all_recall = np.divide(hits, true, out=np.zeros(num_classes), where=present)
    f1 = np.divide(2 * precision * all_recall, precision + all_recall, out=np.zeros(num_classes),
                   where=precision + all_recall > 0)  # fmt: skip
    labelled = present | (predicted > 0)  # sklearn's macro average: classes in the labels or the predictions
    auroc = None
    if present.all():
        p = probabilities.double().numpy()
        auroc = float(roc_auc_score(y, p[:, 1]) if num_classes == 2 else
                      roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(num_classes))))  # fmt: skip
    return {
        "accuracy": float(hits.sum() / len(y)),
        "balanced_accuracy": float(recall.mean()),
        "f1_macro": float(f1[labelled].mean()),
        "auroc": auroc,
    }


def _scores(data: Split, probabilities: torch.Tensor) -> dict:
    return scores(probabilities, data.y["test"], data.num_classes)


def _summary(protocol: str, setting: str, repeats: list[dict]) -> dict:
    """Mean ± std of each metric over seeds or episodes (None where a metric is undefined)."""
    row = {"protocol": protocol, "setting": setting, "repeats": len(repeats)}
    for key in METRICS:
        values = [r[key] for r in repeats if r[key] is not None]
        row[key] = float(np.mean(values)) if values else None
        row[f"{key}_std"] = float(np.std(values)) if values else None
    return row


def run_protocols(data: Split, options) -> list[dict]:
    """One summary row per (protocol, setting): ``knn`` / ``linear`` / ``simpleshot`` on all of train, ``fewshot``
    at each shot count, ``knn`` / ``linear`` at each label fraction below 1."""
    everything = torch.arange(len(data.y["train"]))
    rows = [
        _summary("knn", "all labels", [_scores(data, _knn(data, everything, options.knn_k))]),
        _summary("linear", "all labels", [_scores(data, _linear(data, everything))]),
        _summary("simpleshot", "all labels", [_scores(data, _simpleshot(data, everything))]),
    ]
    for shots in options.shots:
        episodes = few_shot_episodes(data.y["train"], shots, options.episodes, options.seed)
        repeats = [_scores(data, _simpleshot(data, support)) for support in episodes]
        rows.append({**_summary("fewshot", f"{shots}-shot", repeats), "shots": shots})
    for fraction in (f for f in options.fractions if f < 1):
        subsets = [label_fraction_indices(data.y["train"], fraction, seed) for seed in options.seeds]
        predictors = {"knn": lambda s: _knn(data, s, options.knn_k), "linear": lambda s: _linear(data, s)}
        for protocol, predict in predictors.items():
            repeats = [_scores(data, predict(s)) for s in subsets]
            rows.append({**_summary(protocol, f"{fraction:g} labels", repeats), "fraction": fraction})
    return rows
