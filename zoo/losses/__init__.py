"""Self-supervised losses, one per file (as in lightly). Symmetric losses take ``forward(z1, z2)``;
``SimSiamLoss.forward(p1, p2, z1, z2)`` applies the stop-gradient to z itself, as do the teacher-student losses to
their targets: ``BYOLLoss.forward(p1, p2, z1, z2)``, ``MoCoV3Loss.forward(q1, q2, k1, k2)`` and
``DINOLoss.forward(student_out, teacher_out)``.

Every loss computes with autocast off, in ``promote_types(input dtype, float32)`` (:mod:`zoo.losses._precision`), and
issues no host synchronisation (no ``.item()``, no data-dependent shapes), so a training step can run ahead of the
device."""

from zoo.losses.barlow_twins import BarlowTwinsLoss
from zoo.losses.byol import BYOLLoss
from zoo.losses.dclw import DCLWLoss
from zoo.losses.dino import DINOLoss
from zoo.losses.mocov3 import MoCoV3Loss
from zoo.losses.simclr import SimCLRLoss
from zoo.losses.simsiam import SimSiamLoss
from zoo.losses.vicreg import VICRegLoss

__all__ = [
    "SimCLRLoss",
    "DCLWLoss",
    "SimSiamLoss",
    "VICRegLoss",
    "BarlowTwinsLoss",
    "BYOLLoss",
    "MoCoV3Loss",
    "DINOLoss",
]
