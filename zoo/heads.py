"""Projection and prediction heads (MLPs on top of the backbone's pooled features)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = [
    "ProjectionHead",
    "SimCLRProjectionHead",
    "SimSiamProjectionHead",
    "SimSiamPredictionHead",
    "VICRegProjectionHead",
    "BarlowTwinsProjectionHead",
]


class ProjectionHead(nn.Sequential):
    """An MLP given as a list of layer widths: Linear → BN → ReLU between layers; the last layer is a plain
    Linear, optionally followed by a BatchNorm (``last_bn``).

    Shape:
        input: N x dims[0]. Output: N x dims[-1].
    """

    def __init__(self, dims: Sequence[int], last_bn: bool = False, last_bn_affine: bool = True):
        if len(dims) < 2:
            raise ValueError(f"a head needs at least an input and an output width, got {list(dims)}")
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = i == len(dims) - 2
            layers.append(nn.Linear(d_in, d_out, bias=not (last and last_bn)))
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
