"""BYOL's normalised mean squared error between online predictions and target projections."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.losses._checks import check_predictions
from zoo.losses._precision import full_precision

__all__ = ["BYOLLoss", "normalized_mse"]


@full_precision
def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """ℓ(p, z) = ‖p/‖p‖ − z/‖z‖‖² = 2 − 2·cos(p, z), per sample (Grill et al. 2020, Eq. 2).

    Computed as the squared distance of the unit vectors, as the official code does (``byol/utils/helpers.py``,
    ``regression_loss``): exact near alignment (identical p and z give 0, where 2 − 2·cos loses the digits of cos
    to cancellation: 1e-7 in float32).

    Shape:
        p, z: N x D. Output: N.
    """
    return (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(dim=1)


class BYOLLoss(nn.Module):
    """BYOL loss, symmetrised, with the stop-gradient on the target projections.

    Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, Eq. (2)-(3):

        L = ℓ(p1, sg(z'2)) + ℓ(p2, sg(z'1)),   ℓ(p, z) = 2 − 2·cos(p, z)

    averaged over the batch, the two directions summed as in the official code (``byol_experiment.py``); lightly's
    example averages them (and so has 2x smaller gradients). ``z`` are the target network's projections; they
    are detached here, inside the loss.

    Shape:
        p1, p2: N x D online predictions; z1, z2: N x D target projections of the same views. Output: scalar in
        [0, 8].

    Example:
        >>> p1, p2, z1, z2 = torch.randn(4, 8, 256).unbind(0)
        >>> loss = BYOLLoss()(p1, p2, z1, z2)
    """

    @full_precision
    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_predictions("BYOLLoss", p1, p2, z1, z2)
        return (normalized_mse(p1, z2.detach()) + normalized_mse(p2, z1.detach())).mean()
