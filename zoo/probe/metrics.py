"""Classification metrics as the study reports them (sklearn), plus AUROC."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["classification_metrics"]


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
