"""Self-supervised losses, one per file (as in lightly). Symmetric losses take ``forward(z1, z2)``;
``SimSiamLoss.forward(p1, p2, z1, z2)`` applies the stop-gradient to z itself."""

from zoo.losses.barlow_twins import BarlowTwinsLoss
from zoo.losses.dclw import DCLWLoss
from zoo.losses.simclr import SimCLRLoss
from zoo.losses.simsiam import SimSiamLoss
from zoo.losses.vicreg import VICRegLoss

__all__ = ["SimCLRLoss", "DCLWLoss", "SimSiamLoss", "VICRegLoss", "BarlowTwinsLoss"]
