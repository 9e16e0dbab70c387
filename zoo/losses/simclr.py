"""NT-Xent, the SimCLR loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.distributed import gather
from zoo.losses._checks import check_pair
from zoo.losses._precision import full_precision


class SimCLRLoss(nn.Module):
    """Normalised temperature-scaled cross entropy (NT-Xent).

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020, Eq. (1):

        l(i, j) = -log( exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ) )

    averaged over all 2N anchors of the two views; the denominator holds the positive and the 2N-2 other
    embeddings of *both* views (2N-1 candidates). Under torch.distributed the embeddings of every process are
    gathered with gradients, so negatives come from the global batch.

    Args:
        temperature: τ; 0.5 as in the original study (SmallDataSSL).

    Shape:
        z1, z2: N x D projector outputs of the two views (normalised inside), N >= 2. Output: scalar.

    Example:
        >>> loss_fn = SimCLRLoss()
        >>> loss = loss_fn(torch.randn(8, 128), torch.randn(8, 128))
    """

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @full_precision
    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair("SimCLRLoss", z1, z2)
        z1, z2 = gather(z1), gather(z2)
        n = z1.shape[0]
        z = F.normalize(torch.cat([z1, z2]), dim=1)  # 2N x D
        logits = z @ z.T / self.temperature  # 2N x 2N
        logits.fill_diagonal_(float("-inf"))  # an anchor is not its own candidate
        targets = torch.arange(2 * n, device=z.device).roll(
            n
        )  # 2N: n, ..., 2n-1, 0, ..., n-1 (made on the device)
        return F.cross_entropy(logits, targets)
