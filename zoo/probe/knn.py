"""k-nearest-neighbour classification of frozen features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["knn_predict", "knn_accuracy"]


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    metric: str = "cosine",
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores (Q x C) of each query from its k nearest training features.

    ``metric="cosine"``: weighted kNN of Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", CVPR 2018, Eq. (7) — each neighbour votes exp(cos/τ), τ = 0.07 (as in DINO's evaluation).
    ``metric="euclidean"``: the original study's unweighted majority vote on raw features (sklearn's
    ``KNeighborsClassifier`` default). ``k`` is capped at the number of training samples.

    Shape:
        train_features: N x F; train_labels: N; query_features: Q x F. Output: Q x C.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown kNN metric {metric!r}; valid: cosine, euclidean")
    k = min(k, len(train_features))
    train = F.normalize(train_features.float(), dim=1) if metric == "cosine" else train_features.float()
    scores = []
    for start in range(0, len(query_features), chunk):
        query = query_features[start : start + chunk].float()
        if metric == "cosine":
            sim = F.normalize(query, dim=1) @ train.T  # Q x N
            top, idx = sim.topk(k, dim=1)
            weight = (top / temperature).exp()
        else:
            top, idx = torch.cdist(query, train).topk(k, dim=1, largest=False)
            weight = torch.ones_like(top)
        votes = F.one_hot(train_labels[idx], num_classes).float()  # Q x k x C
        scores.append((votes * weight.unsqueeze(-1)).sum(dim=1))
    return torch.cat(scores)


def knn_accuracy(train_features, train_labels, query_features, query_labels, num_classes, **kwargs) -> float:
    """Top-1 accuracy of :func:`knn_predict`."""
    pred = knn_predict(train_features, train_labels, query_features, num_classes, **kwargs).argmax(dim=1)
    return (pred == query_labels).float().mean().item()
