"""Barlow Twins' redundancy-reduction loss."""

from __future__ import annotations

import torch
from torch import nn

from zoo.distributed import gather
from zoo.losses._checks import check_pair
from zoo.losses._precision import full_precision
from zoo.losses.terms import off_diagonal

__all__ = ["BarlowTwinsLoss", "cross_correlation"]


@full_precision
def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """C of Eq. (2): the cross-correlation of the batch-standardised embeddings (biased variance + ``eps``, like
    ``BatchNorm1d(affine=False)``).

    Shape:
        z1, z2: N x D. Output: D x D.
    """
    standardise = lambda z: (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)  # noqa: E731
    return standardise(z1).T @ standardise(z2) / z1.shape[0]


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins loss on the batch-normalised cross-correlation matrix.

    Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021, Eq. (1)-(2):

        C_ij = Σ_b ẑ1_{b,i} ẑ2_{b,j} / N,  ẑ = (z - mean_b z) / std_b z   (BatchNorm1d without affine)
        L = Σ_i (1 - C_ii)² + λ Σ_i Σ_{j≠i} C_ij²

    with λ = 0.0051. The normalisation uses the biased batch variance plus ``eps`` like ``BatchNorm1d``; under
    torch.distributed it and C are computed on the gathered global batch.

    Shape:
        z1, z2: N x D projector outputs, N >= 2. Output: scalar.

    Example:
        >>> loss = BarlowTwinsLoss()(torch.randn(16, 256), torch.randn(16, 256))
    """

    def __init__(self, lambda_offdiag: float = 0.0051, eps: float = 1e-5):
        super().__init__()
        self.lambda_offdiag = lambda_offdiag
        self.eps = eps

    @full_precision
    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair("BarlowTwinsLoss", z1, z2)
        c = cross_correlation(gather(z1), gather(z2), self.eps)  # D x D
        on_diag = (torch.diagonal(c) - 1).pow(2).sum()
        off_diag = off_diagonal(c).pow(2).sum()
        return on_diag + self.lambda_offdiag * off_diag
