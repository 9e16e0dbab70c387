"""Matrix helpers shared by the redundancy-reduction losses (VICReg, Barlow Twins)."""

from __future__ import annotations

import torch

__all__ = ["off_diagonal"]


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square D x D matrix as a flat D*(D-1) vector (FAIR's VICReg / Barlow Twins
    reference code).

    Shape:
        m: D x D. Output: D*(D-1).
    """
    d, d2 = m.shape
    if d != d2:
        raise ValueError(f"off_diagonal expects a square matrix, got {tuple(m.shape)}")
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()
