"""MoCo v3's symmetric InfoNCE between queries and momentum keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.distributed import gather
from zoo.losses._checks import check_predictions
from zoo.losses._precision import full_precision

__all__ = ["MoCoV3Loss"]


class MoCoV3Loss(nn.Module):
    """MoCo v3 contrastive loss.

    Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021, Algorithm 1:

        ctr(q, k) = CrossEntropy(q·kᵀ / τ, labels = arange(N)) · 2τ,   q, k L2-normalised
        L = ctr(q1, k2) + ctr(q2, k1)

    The keys come from the momentum encoder and are detached here, inside the loss; the other images' keys of the
    batch are the negatives (no queue). The 2τ factor is the official code's. Under torch.distributed, keys are
    gathered from every process (as ``concat_all_gather``) and so are the queries (with their gradients), so every
    process computes the loss of the global batch, which equals one process on the same batch.

    Args:
        temperature: τ; 0.2 for ViTs (the official ResNet-50 configurations use 1.0).

    Shape:
        q1, q2: N x D predictor outputs of the two views; k1, k2: N x D momentum projections. Output: scalar.

    Example:
        >>> q1, q2, k1, k2 = torch.randn(4, 8, 256).unbind(0)
        >>> loss = MoCoV3Loss()(q1, q2, k1, k2)
    """

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @full_precision
    def contrast(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q = F.normalize(q, dim=1)  # N x D
        k = F.normalize(k.detach(), dim=1)  # N x D
        logits = q @ k.T / self.temperature  # N x N, positives on the diagonal
        labels = torch.arange(len(q), device=q.device)
        return F.cross_entropy(logits, labels) * 2 * self.temperature

    @full_precision
    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
        check_predictions("MoCoV3Loss", q1, q2, k1, k2, min_batch=2)
        q1, q2 = gather(q1), gather(q2)
        k1, k2 = gather(k1.detach()), gather(k2.detach())
        return self.contrast(q1, k2) + self.contrast(q2, k1)
