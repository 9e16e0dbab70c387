"""Linear probe: multinomial logistic regression on standardised frozen features."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

__all__ = ["LinearProbe", "fit_linear_probe"]

log = logging.getLogger(__name__)
DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclass
class LinearProbe:
    """A fitted probe: logits = ((x - mean) / std) @ weight.T + bias.

    Shape:
        weight: C x F; bias: C; mean, std: F.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    inverse_l2: float
    val_accuracy: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:  # N x F → N x C
        return ((features - self.mean) / self.std) @ self.weight.T + self.bias

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of one linear layer on raw features, the standardisation folded in:
        W' = W / std, b' = b - W' mean — what the hub format stores as the timm classifier."""
        weight = self.weight / self.std
        return weight, self.bias - weight @ self.mean


def fit_linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    c_grid: tuple[float, ...] = DEFAULT_C_GRID,
    max_iter: int = 2000,
) -> LinearProbe:
    """Fit L-BFGS logistic regression on standardised features for each inverse L2 strength in ``c_grid``, keep
    the best on val (ties: stronger regularisation), refit on train. Seconds on cached features, instead of
    epochs through the backbone."""
    x_train, y_train = train_features.double().numpy(), train_labels.numpy()
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    standardise = lambda x: (x.double().numpy() - mean) / std  # noqa: E731
    z_train, z_val = standardise(train_features), standardise(val_features)
    best = None
    for c in sorted(c_grid):
        model = LogisticRegression(C=c, max_iter=max_iter).fit(z_train, y_train)
        acc = float((model.predict(z_val) == val_labels.numpy()).mean())
        log.debug("linear probe C=%g: val accuracy %.4f", c, acc)
        if best is None or acc > best[1]:
            best = (model, acc, c)
    model, acc, c = best
    weight, bias = model.coef_, model.intercept_
    if weight.shape[0] == 1:  # binary: sklearn keeps one row; make it a 2-class softmax layer
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return LinearProbe(as_tensor(weight), as_tensor(bias), as_tensor(mean), as_tensor(std), c, acc)
