"""VICReg: variance-invariance-covariance regularisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.distributed import gather
from zoo.losses._checks import check_pair
from zoo.losses._precision import full_precision
from zoo.losses.terms import off_diagonal

__all__ = ["VICRegLoss", "invariance_term", "variance_term", "covariance_term"]


@full_precision
def invariance_term(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """s(Z, Z') of Eq. (5) as the official code computes it: the mean squared error (÷ N and ÷ D).

    Shape:
        z1, z2: N x D. Output: scalar.
    """
    return F.mse_loss(z1, z2)


@full_precision
def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) of Eq. (1)-(2): the hinge max(0, 1 - sqrt(Var(z^j) + ε)) averaged over the D dimensions; unbiased
    variance, as in the official code.

    Shape:
        z: N x D. Output: scalar.
    """
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1 - std).mean()


@full_precision
def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(Z) of Eq. (3)-(4): the squared off-diagonal entries of the covariance matrix, summed, ÷ D.

    Shape:
        z: N x D. Output: scalar.
    """
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)  # D x D
    return off_diagonal(cov).pow(2).sum() / d


class VICRegLoss(nn.Module):
    """VICReg loss, the official formulation.

    Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
    Learning", ICLR 2022, Eq. (1)-(6):

        s(Z, Z') = 1/N Σ_i |z_i - z'_i|²  (here as MSE, i.e. also ÷D, as in the official code)
        v(Z) = 1/D Σ_j max(0, 1 - sqrt(Var(z^j) + ε))
        c(Z) = 1/D Σ_{i≠j} C(Z)²_ij
        L = λ s + μ (v(Z) + v(Z')) / 2 + ν (c(Z) + c(Z'))

    with λ = μ = 25, ν = 1, ε = 1e-4. The official code averages the variance term over the two branches (÷2);
    ``paper_mode=True`` sums it as the original study's code does. Under torch.distributed the statistics are
    computed on the gathered global batch.

    Shape:
        z1, z2: N x D expander outputs, N >= 2. Output: scalar.

    Example:
        >>> loss = VICRegLoss()(torch.randn(16, 256), torch.randn(16, 256))
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        eps: float = 1e-4,
        paper_mode: bool = False,
    ):
        super().__init__()
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.eps = eps
        self.paper_mode = paper_mode

    @full_precision
    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair("VICRegLoss", z1, z2)
        z1, z2 = gather(z1), gather(z2)  # N x D
        invariance = invariance_term(z1, z2)
        variance = variance_term(z1, self.eps) + variance_term(z2, self.eps)
        if not self.paper_mode:
            variance = variance / 2
        covariance = covariance_term(z1) + covariance_term(z2)
        return (
            self.invariance_weight * invariance
            + self.variance_weight * variance
            + self.covariance_weight * covariance
        )
