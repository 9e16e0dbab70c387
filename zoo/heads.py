"""Projection and prediction heads (MLPs on top of the backbone's pooled features)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ProjectionHead",
    "SimCLRProjectionHead",
    "SimSiamProjectionHead",
    "SimSiamPredictionHead",
    "VICRegProjectionHead",
    "BarlowTwinsProjectionHead",
    "BYOLProjectionHead",
    "MoCoV3ProjectionHead",
    "DINOHead",
]


class ProjectionHead(nn.Sequential):
    """An MLP given as a list of layer widths: Linear → BN → ReLU between layers; the last layer is a plain
    Linear, optionally followed by a BatchNorm (``last_bn``).

    ``bias`` applies to every Linear, ``last_bias`` (default: ``bias`` unless ``last_bn``) to the last one.

    Shape:
        input: N x dims[0]. Output: N x dims[-1].
    """

    def __init__(
        self,
        dims: Sequence[int],
        last_bn: bool = False,
        last_bn_affine: bool = True,
        bias: bool = True,
        last_bias: bool | None = None,
    ):
        if len(dims) < 2:
            raise ValueError(f"a head needs at least an input and an output width, got {list(dims)}")
        last_bias = bias and not last_bn if last_bias is None else last_bias
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = i == len(dims) - 2
            layers.append(nn.Linear(d_in, d_out, bias=last_bias if last else bias))
            if not last:
                layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
            elif last_bn:
                layers.append(nn.BatchNorm1d(d_out, affine=last_bn_affine))
        super().__init__(*layers)
        self.dims = list(dims)

    @property
    def out_dim(self) -> int:
        return self.dims[-1]


class SimCLRProjectionHead(ProjectionHead):
    """SimCLR's g(·) (Chen et al. 2020, Sec. 2.1): "a MLP with one hidden layer"; here with BN as in SimCLR v2
    and the original study (2048 → 512 → 128 for a ResNet-50). Also used by DCLW."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__([in_dim, hidden_dim, out_dim])


class SimSiamProjectionHead(ProjectionHead):
    """SimSiam's projection MLP (Chen & He 2021, Sec. 4): "BN applied to each fully-connected layer, including
    its output fc"; widths as in the original study (2048 → 2048 → 512 for a ResNet-50)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 512):
        super().__init__([in_dim, hidden_dim, out_dim], last_bn=True)


class SimSiamPredictionHead(ProjectionHead):
    """SimSiam's prediction MLP h (Chen & He 2021, Sec. 4): "2 layers, BN on its hidden fc layer, no BN on the
    output"; a bottleneck of ¼ the width (512 → 128 → 512 for a ResNet-50)."""

    def __init__(self, in_dim: int = 512, hidden_dim: int = 128, out_dim: int = 512):
        super().__init__([in_dim, hidden_dim, out_dim])


class VICRegProjectionHead(ProjectionHead):
    """VICReg's expander (Bardes et al. 2022, Sec. 4.2): "three fully-connected layers ... the first two
    followed by batch normalization and ReLU"; here two layers as in the original study (2048 → 4096 → 4096)."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 4096):
        super().__init__([in_dim, hidden_dim, out_dim])


class BarlowTwinsProjectionHead(ProjectionHead):
    """Barlow Twins' projector (Zbontar et al. 2021, Sec. 2): linear layers with BN + ReLU between them
    (2048 → 4096 → 4096 in the original study's code); the final BatchNorm without affine of the reference
    code is part of :class:`zoo.losses.BarlowTwinsLoss`."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 4096):
        super().__init__([in_dim, hidden_dim, out_dim])


class BYOLProjectionHead(ProjectionHead):
    """BYOL's projector and predictor (Grill et al. 2020, Sec. 3.3): "a multi-layer perceptron (MLP) with a hidden
    layer of size 4096 followed by batch normalization, rectified linear units, and a final linear layer with
    output dimension 256"; as in the official code the last Linear has no bias (2048 → 4096 → 256)."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256):
        super().__init__([in_dim, hidden_dim, out_dim], last_bias=False)


class MoCoV3ProjectionHead(ProjectionHead):
    """MoCo v3's projector / predictor (Chen, Xie & He 2021, Sec. 4; ``moco/builder.py`` ``_build_mlp``): Linear
    layers without bias, BN + ReLU after each hidden layer, and (``last_bn``) a BatchNorm without affine on the
    output: ResNet-50 projector 2048 → 4096 → 256, predictor 256 → 4096 → 256 without the last BN; ViT projector
    D → 4096 → 4096 → 256 and predictor with the last BN."""

    def __init__(self, dims: Sequence[int], last_bn: bool = True):
        super().__init__(dims, last_bn=last_bn, last_bn_affine=False, bias=False, last_bias=False)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, Sec. 3.1; ``vision_transformer.py`` ``DINOHead``): a 3-layer MLP
    (hidden 2048, GELU, no BN) to a 256-d bottleneck, L2 normalisation, and a weight-normalised linear layer without
    bias to K prototypes whose norm g is fixed to 1 (``norm_last_layer=True``). Weights trunc-normal(0.02).

    Shape:
        input: N x in_dim. Output: N x out_dim (logits over the prototypes).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 65536):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_dim, out_dim, bias=False)
        )
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)  # g = 1
        self.last_layer.parametrizations.weight.original0.requires_grad = False  # and fixed
        self.dims = [in_dim, hidden_dim, bottleneck_dim, out_dim]

    @property
    def out_dim(self) -> int:
        return self.dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N x F → N x K
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
