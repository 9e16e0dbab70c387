"""The SSL model: backbone → projector [→ predictor] → loss, on two views."""

from __future__ import annotations

import torch
from torch import nn


class SSLModel(nn.Module):
    """A timm backbone with the heads and loss of one SSL method.

    ``forward(x1, x2)`` returns ``{"loss", "z1", "z2"}`` (and ``"p1", "p2"`` with a predictor); ``features(x)``
    returns the backbone's pooled features, the representation that is evaluated and exported.

    Shape:
        x1, x2: N x C x H x W, two augmented views of the same N images.
    """

    def __init__(
        self,
        backbone: nn.Module,
        projector: nn.Module,
        criterion: nn.Module,
        predictor: nn.Module | None = None,
        method: str = "",
        loss_takes_predictions: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.predictor = predictor
        self.criterion = criterion
        self.method = method
        self.loss_takes_predictions = loss_takes_predictions

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:  # N x C x H x W → N x F
        return self.backbone(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        z1 = self.projector(self.backbone(x1))  # N x D
        z2 = self.projector(self.backbone(x2))  # N x D
        out = {"z1": z1, "z2": z2}
        if self.loss_takes_predictions:
            # SimSiam in paper mode has no predictor: the projector outputs are compared directly
            p1, p2 = (self.predictor(z1), self.predictor(z2)) if self.predictor is not None else (z1, z2)
            out.update(p1=p1, p2=p2, loss=self.criterion(p1, p2, z1, z2))
        else:
            out["loss"] = self.criterion(z1, z2)
        return out
