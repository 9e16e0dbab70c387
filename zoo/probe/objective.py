"""What a trained head optimises and how it is selected on val: cross-entropy and accuracy for one class per
image, masked binary cross-entropy and macro AUROC for several labels per image (NaN targets: unknown)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from zoo.probe.metrics import macro_auroc
from zoo.probe.multilabel import masked_bce

__all__ = ["MULTICLASS_OBJECTIVE", "MULTILABEL_OBJECTIVE", "Objective", "objective_for"]


@dataclass(frozen=True)
class Objective:
    """``loss(logits, labels)``; ``score(logits, labels)``: higher is better, for early stopping and choosing the
    best epoch; ``probabilities(logits)``: softmax or sigmoid."""

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score: Callable[[torch.Tensor, torch.Tensor], float]
    probabilities: Callable[[torch.Tensor], torch.Tensor]


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def _auroc_or_loss(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro AUROC; where no label has both values on val, minus the loss (still higher is better)."""
    score = macro_auroc(logits, targets)
    return score if score is not None else -masked_bce(logits, targets).item()


MULTICLASS_OBJECTIVE = Objective("multiclass", nn.functional.cross_entropy, _accuracy, lambda z: z.softmax(1))
MULTILABEL_OBJECTIVE = Objective("multilabel", masked_bce, _auroc_or_loss, torch.sigmoid)


def objective_for(labels: torch.Tensor) -> Objective:
    """By the labels' shape: N class indices, or N x L targets."""
    return MULTILABEL_OBJECTIVE if labels.ndim == 2 else MULTICLASS_OBJECTIVE
