"""Multi-label probes of frozen features: a per-label kNN vote and one-vs-rest logistic regression.

Targets are N x L float tensors: 1 present, 0 absent, NaN unknown (an uncertain label under the ``ignore``
policy). An unknown entry takes part in no fit, no vote and no score: each label is learnt from the images where it
is known. timm has no multi-label head (its issues #21, #452): the probe is one linear layer whose L outputs are
independent logits (sigmoid, not softmax), folded into timm's classifier like the single-label probe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from zoo.probe.linear import DEFAULT_C_GRID
from zoo.probe.metrics import macro_auroc

__all__ = ["MultiLabelProbe", "fit_multilabel_probe", "knn_multilabel", "masked_bce"]

log = logging.getLogger(__name__)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the known entries of ``targets`` (NaN: left out).

    Shape:
        logits, targets: N x L. Output: a scalar.
    """
    known = ~torch.isnan(targets)
    if not known.any():
        return logits.sum() * 0.0  # nothing known in this batch: no gradient, no NaN
    return F.binary_cross_entropy_with_logits(logits[known], targets[known])


def knn_multilabel(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    query_features: torch.Tensor,
    k: int = 200,
    metric: str = "cosine",
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Per-label probabilities (Q x L) from each query's k nearest training features: label l's probability is
    the weighted share of neighbours showing it, among the neighbours where it is known (none known: its share in
    the training set). Weights as :func:`zoo.probe.knn_predict`: exp(cos / τ) (Wu et al. 2018, Eq. 7) for
    ``cosine``, 1 for ``euclidean``.

    Shape:
        train_features: N x F; train_targets: N x L (NaN unknown); query_features: Q x F. Output: Q x L.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown kNN metric {metric!r}; valid: cosine, euclidean")
    k = min(k, len(train_features))
    train = F.normalize(train_features.float(), dim=1) if metric == "cosine" else train_features.float()
    known = ~torch.isnan(train_targets)
    values = torch.nan_to_num(train_targets.float())  # N x L, unknown as 0 (and masked out below)
    prior = values.sum(0) / known.sum(0).clamp(min=1)
    out = []
    for start in range(0, len(query_features), chunk):
        query = query_features[start : start + chunk].float()
        if metric == "cosine":
            top, idx = (F.normalize(query, dim=1) @ train.T).topk(k, dim=1)
            weight = (top / temperature).exp()
        else:
            top, idx = torch.cdist(query, train).topk(k, dim=1, largest=False)
            weight = torch.ones_like(top)
        mass = (known[idx] * weight.unsqueeze(-1)).sum(
            1
        )  # Q x L: weight of the neighbours knowing each label
        votes = (values[idx] * weight.unsqueeze(-1)).sum(1)
        out.append(torch.where(mass > 0, votes / mass.clamp(min=1e-30), prior))
    return torch.cat(out)


@dataclass
class MultiLabelProbe:
    """A fitted one-vs-rest probe: logits = ((x - mean) / std) @ weight.T + bias, one independent logit per label.

    Shape:
        weight: L x F; bias: L; mean, std: F.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    inverse_l2: float
    val_auroc: float | None

    def logits(self, features: torch.Tensor) -> torch.Tensor:  # N x F → N x L
        return ((features - self.mean) / self.std) @ self.weight.T + self.bias

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) on raw features, the standardisation folded in (as :meth:`LinearProbe.folded`)."""
        weight = self.weight / self.std
        return weight, self.bias - weight @ self.mean


def _fit_label(z: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> tuple[np.ndarray, float]:
    """(weight F, bias) of one label's logistic regression on its known rows; a label seen with one value only
    gets a constant logit (its smoothed log-odds)."""
    known = ~np.isnan(y)
    z, y = z[known], y[known]
    if len(np.unique(y)) < 2:
        rate = (y.sum() + 0.5) / (len(y) + 1.0)
        return np.zeros(z.shape[1]), float(np.log(rate / (1 - rate)))
    model = LogisticRegression(C=c, max_iter=max_iter).fit(z, y.astype(int))
    return model.coef_[0], float(model.intercept_[0])


def fit_multilabel_probe(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    val_features: torch.Tensor,
    val_targets: torch.Tensor,
    c_grid: tuple[float, ...] = DEFAULT_C_GRID,
    max_iter: int = 2000,
) -> MultiLabelProbe:
    """One-vs-rest L-BFGS logistic regression on standardised features, each label on the rows where it is known;
    one inverse L2 strength for all labels, the best macro AUROC on val (ties: stronger regularisation). One
    strength, not one per label: a rare label has a handful of val positives, too few to choose on alone."""
    x_train = train_features.double().numpy()
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    z_train = (x_train - mean) / std
    z_val = (val_features.double().numpy() - mean) / std
    y_train = train_targets.double().numpy()
    best = None
    for c in sorted(c_grid):
        fits = [_fit_label(z_train, y_train[:, label], c, max_iter) for label in range(y_train.shape[1])]
        weight, bias = np.stack([w for w, _ in fits]), np.array([b for _, b in fits])
        score = macro_auroc(torch.from_numpy(z_val @ weight.T + bias), val_targets)
        log.debug("multi-label probe C=%g: val macro AUROC %s", c, score)
        if best is None or (score is not None and (best[1] is None or score > best[1])):
            best = (weight, score, c, bias)
    weight, score, c, bias = best
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return MultiLabelProbe(as_tensor(weight), as_tensor(bias), as_tensor(mean), as_tensor(std), c, score)
