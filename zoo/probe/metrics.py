"""Classification metrics as the study reports them (sklearn), plus AUROC; and the multi-label metrics of chest
X-ray papers (CheXNet, CheXpert: per-label and macro AUROC), with mAP and F1 at per-label thresholds chosen on val.

Multi-label targets are N x L floats: 1 present, 0 absent, NaN unknown (left out of every metric)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "MULTILABEL_METRICS",
    "choose_thresholds",
    "classification_metrics",
    "macro_auroc",
    "multilabel_metrics",
]

DEFAULT_THRESHOLD = 0.5  # a label without positives on val keeps it
MULTILABEL_METRICS = ("auroc_macro", "auroc_micro", "map", "f1_macro", "f1_micro")


def classification_metrics(probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, balanced accuracy, weighted and macro precision / recall / F1, AUROC (binary, or one-vs-rest
    macro for several classes; None when a class is absent from ``labels``) and the confusion matrix.

    Shape:
        probabilities: N x C (rows sum to 1); labels: N.
    """
    p, y = probabilities.double().numpy(), labels.numpy()
    pred = p.argmax(axis=1)
    out = {"accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred)}
    for average in ("weighted", "macro"):
        precision, recall, f1, _ = precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        out.update({f"precision_{average}": precision, f"recall_{average}": recall, f"f1_{average}": f1})
    present = np.unique(y)
    if len(present) < num_classes:
        out["auroc"] = None
    elif num_classes == 2:
        out["auroc"] = roc_auc_score(y, p[:, 1])
    else:
        out["auroc"] = roc_auc_score(
            y, p, multi_class="ovr", average="macro", labels=list(range(num_classes))
        )
    out["confusion_matrix"] = confusion_matrix(y, pred, labels=list(range(num_classes))).tolist()
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}


def _known(scores: torch.Tensor, targets: torch.Tensor, label: int) -> tuple[np.ndarray, np.ndarray]:
    """(targets, scores) of one label where it is known."""
    y, p = targets[:, label].double().numpy(), scores[:, label].double().numpy()
    known = ~np.isnan(y)
    return y[known], p[known]


def _label_auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def macro_auroc(scores: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Mean AUROC over the labels that have a positive and a negative known example (None: no such label).

    Shape:
        scores: N x L (probabilities or logits: AUROC only ranks); targets: N x L, NaN unknown.
    """
    values = [_label_auroc(*_known(scores, targets, label)) for label in range(targets.shape[1])]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def choose_thresholds(probabilities: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per label, the probability threshold (predict present when p >= t) with the best F1 on these (val)
    targets; :data:`DEFAULT_THRESHOLD` for a label without a known positive.

    Shape:
        probabilities, targets: N x L. Output: L floats.
    """
    out = []
    for label in range(targets.shape[1]):
        y, p = _known(probabilities, targets, label)
        if not (y == 1).any():
            out.append(DEFAULT_THRESHOLD)
            continue
        order = np.argsort(-p, kind="stable")
        true_pos = np.cumsum(y[order] == 1)  # predicting the first i + 1 as present
        f1 = 2 * true_pos / (np.arange(1, len(y) + 1) + (y == 1).sum())
        last = np.flatnonzero(
            np.r_[p[order][1:] != p[order][:-1], True]
        )  # a threshold keeps equal scores together
        best = last[np.argmax(f1[last])]
        out.append(float(p[order][best]))
    return out


def _per_label(p: torch.Tensor, y: torch.Tensor, thresholds: list[float], names: list[str]) -> dict:
    out = {}
    for label, name in enumerate(names):
        yl, pl = _known(p, y, label)
        out[name] = {
            "auroc": _label_auroc(yl, pl),
            "ap": float(average_precision_score(yl, pl)) if (yl == 1).any() else None,
            "f1": float(f1_score(yl, pl >= thresholds[label], zero_division=0)) if len(yl) else None,
            "threshold": thresholds[label],
            "positives": int((yl == 1).sum()),
            "known": len(yl),
        }
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def multilabel_metrics(
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    thresholds: list[float] | None = None,
    label_names: list[str] | None = None,
) -> dict:
    """Macro AUROC (mean over labels; also ``auroc``), micro AUROC (every known entry pooled), per-label AUROC,
    mAP (macro average precision), macro and micro F1 at ``thresholds`` (default 0.5 each) and each label's
    threshold, positives and known count (``per_label``). A label without both values among its known entries has
    no AUROC and is left out of the means.

    Shape:
        probabilities: N x L (sigmoid outputs); targets: N x L, NaN unknown.
    """
    labels = targets.shape[1]
    thresholds = list(thresholds) if thresholds is not None else [DEFAULT_THRESHOLD] * labels
    names = list(label_names) if label_names is not None else [str(i) for i in range(labels)]
    per_label = _per_label(probabilities, targets, thresholds, names)
    y, p = targets.double().numpy(), probabilities.double().numpy()
    known = ~np.isnan(y)
    predicted = p >= np.asarray(thresholds)[None, :]
    out = {
        "auroc_macro": _mean(v["auroc"] for v in per_label.values()),
        "auroc_micro": _label_auroc(y[known], p[known]),
        "map": _mean(v["ap"] for v in per_label.values()),
        "f1_macro": _mean(v["f1"] for v in per_label.values()),
        "f1_micro": float(f1_score(y[known], predicted[known], zero_division=0)) if known.any() else None,
    }
    return {**out, "auroc": out["auroc_macro"], "per_label": per_label}
