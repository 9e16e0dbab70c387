"""End-to-end fine-tuning: encoder and a linear head with separate learning rates, early stopping on val."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from zoo.probe.features import extract_features
from zoo.probe.objective import objective_for

__all__ = ["fine_tune"]

log = logging.getLogger(__name__)


def fine_tune(
    encoder: nn.Module,
    num_classes: int,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    train_transform,
    eval_transform,
    epochs: int = 100,
    encoder_lr: float = 1e-3,
    head_lr: float = 1e-2,
    weight_decay: float = 5e-4,
    batch_size: int = 32,
    patience: int = 10,
    seed: int = 0,
) -> tuple[nn.Module, float]:
    """Adam with ``encoder_lr`` / ``head_lr`` (the study's end2end_sup.py: 1e-3 / 1e-1, weight decay 5e-4), stop
    after ``patience`` epochs without val improvement, return the best (encoder + head) and its val accuracy.

    ``train`` / ``val`` are uint8 images and labels; ``train_transform`` maps a uint8 batch to a float batch.
    Multi-label targets (N x L, NaN unknown) train with masked BCE and stop on val macro AUROC
    (:func:`zoo.probe.objective.objective_for`).
    """
    objective = objective_for(train[1])
    torch.manual_seed(seed)
    device = next(
        encoder.parameters()
    ).device  # fine-tuned where the encoder is (a GPU when evaluation has one)
    model = nn.Sequential(copy.deepcopy(encoder), nn.Linear(encoder.num_features, num_classes)).to(device)
    optimizer = torch.optim.Adam(
        [
            {"params": model[0].parameters(), "lr": encoder_lr},
            {"params": model[1].parameters(), "lr": head_lr},
        ],
        weight_decay=weight_decay,
    )
    generator = torch.Generator().manual_seed(seed)
    best_acc, best_state, stale = float("-inf"), None, 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train[0]), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            x = train_transform(train[0][idx].to(device)).contiguous(memory_format=torch.channels_last)
            loss = objective.loss(model(x), train[1][idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        logits = extract_features(model, val[0], eval_transform)
        acc = objective.score(logits, val[1])
        log.debug("fine-tune epoch %d: val accuracy %.4f", epoch, acc)
        if acc > best_acc:
            best_acc, best_state, stale = acc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), best_acc
