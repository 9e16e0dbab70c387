"""DCLW, the decoupled contrastive loss with von Mises-Fisher weighting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.distributed import gather
from zoo.losses._checks import check_pair
from zoo.losses._precision import full_precision
from zoo.losses.terms import off_diagonal


class DCLWLoss(nn.Module):
    """Decoupled contrastive learning loss, weighted (DCLW).

    Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, Eq. (6) with the weighting of Eq. (7): for anchor
    z1_i the positive pair is removed from the denominator (decoupling) and the positive term is weighted by

        w_i = 2 - N * exp(<z1_i, z2_i>/σ) / Σ_k exp(<z1_k, z2_k>/σ)

        L_i = -w_i <z1_i, z2_i>/τ + log Σ_{k≠i, l∈{1,2}} exp(<z1_i, z^(l)_k>/τ)

    The standard formulation averages the anchors of both views (L(z1, z2) + L(z2, z1)) / 2 and computes w
    without gradient, as in the DCL reference code. ``paper_mode=True`` reproduces the original study's code
    (SmallDataSSL): one direction only (z1 anchors) and w keeps its gradient.

    Args:
        temperature: τ = 0.1.
        sigma: σ of the von Mises-Fisher weighting, 0.5.
        paper_mode: reproduce the original study's one-sided, non-detached variant.

    Shape:
        z1, z2: N x D projector outputs (normalised inside), N >= 2. Output: scalar.

    Example:
        >>> loss = DCLWLoss()(torch.randn(8, 128), torch.randn(8, 128))
    """

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5, paper_mode: bool = False):
        super().__init__()
        if temperature <= 0 or sigma <= 0:
            raise ValueError(f"temperature and sigma must be > 0, got {temperature} and {sigma}")
        self.temperature = temperature
        self.sigma = sigma
        self.paper_mode = paper_mode

    @full_precision
    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair("DCLWLoss", z1, z2)
        z1 = F.normalize(gather(z1), dim=1)  # N x D
        z2 = F.normalize(gather(z2), dim=1)  # N x D
        if self.paper_mode:
            return self._one_direction(z1, z2)
        return 0.5 * (self._one_direction(z1, z2) + self._one_direction(z2, z1))

    def _one_direction(self, anchor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        n = anchor.shape[0]
        positive = (anchor * other).sum(dim=1)  # N
        similarity = positive if self.paper_mode else positive.detach()
        weight = 2 - n * torch.softmax(similarity / self.sigma, dim=0)  # N
        cross = anchor @ other.T / self.temperature  # N x N, diagonal = positives
        within = anchor @ anchor.T / self.temperature  # N x N, diagonal = self-similarity
        # the off-diagonal entries row by row, as a view (a boolean mask would make the host wait for its count)
        negatives = torch.cat(
            [off_diagonal(cross).view(n, n - 1), off_diagonal(within).view(n, n - 1)], dim=1
        )
        return (-weight * positive / self.temperature + torch.logsumexp(negatives, dim=1)).mean()
