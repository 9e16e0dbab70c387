"""SimSiam's symmetric negative cosine similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.losses._checks import check_predictions
from zoo.losses._precision import full_precision


class SimSiamLoss(nn.Module):
    """Symmetrised negative cosine similarity with stop-gradient.

    Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Eq. (2)-(4):

        L = ½ D(p1, stopgrad(z2)) + ½ D(p2, stopgrad(z1)),   D(p, z) = -<p/|p|, z/|z|>

    averaged over the batch. The stop-gradient on z is applied here, inside the loss. In the original study's
    code (paper mode) there is no predictor: pass the projector outputs as both p and z.

    Shape:
        p1, p2: N x D predictor outputs; z1, z2: N x D projector outputs; N >= 1. Output: scalar in [-1, 1].

    Example:
        >>> p1, p2, z1, z2 = torch.randn(4, 8, 512).unbind(0)
        >>> loss = SimSiamLoss()(p1, p2, z1, z2)
    """

    @full_precision
    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_predictions("SimSiamLoss", p1, p2, z1, z2)
        d12 = F.cosine_similarity(p1, z2.detach(), dim=1).mean()
        d21 = F.cosine_similarity(p2, z1.detach(), dim=1).mean()
        return -0.5 * (d12 + d21)
