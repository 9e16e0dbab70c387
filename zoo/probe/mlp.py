"""The original study's "linear" protocol: an MLP head on frozen features (features → 512 → BN → LeakyReLU →
classes, Adam), here trained on cached features instead of recomputing them through the backbone every epoch."""

from __future__ import annotations

import torch
from torch import nn

from zoo.probe.objective import objective_for

__all__ = ["MLPHead", "fit_mlp_head"]


class MLPHead(nn.Sequential):
    """SmallDataSSL's evaluation head (linear.py): Linear(F, 512) → BatchNorm1d → LeakyReLU → Linear(512, C)."""

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 512):
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.LeakyReLU(),
            nn.Linear(hidden_dim, num_classes),
        )


def fit_mlp_head(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 64,
    hidden_dim: int = 512,
    step_size: int = 25,
    gamma: float = 0.5,
    seed: int = 0,
) -> tuple[MLPHead, float]:
    """Adam + StepLR(step_size, gamma) as the study (whose default lr of 1.0 diverges; 1e-3 here); the epoch with
    the best val accuracy is kept. Returns (head in eval mode, best val accuracy). Multi-label targets (N x L,
    NaN unknown; ``num_classes`` = L) train with masked BCE and keep the best val macro AUROC
    (:func:`zoo.probe.objective.objective_for`)."""
    objective = objective_for(train_labels)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = MLPHead(train_features.shape[1], num_classes, hidden_dim)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    best_acc, best_state = float("-inf"), None
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(train_features), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = objective.loss(head(train_features[idx]), train_labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        head.eval()
        with torch.no_grad():
            acc = objective.score(head(val_features), val_labels)
        if acc > best_acc:
            best_acc, best_state = acc, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return head.eval(), best_acc
