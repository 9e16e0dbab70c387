"""The SSL models: backbone → projector [→ predictor] → loss, and the teacher-student variants with an EMA teacher."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["SSLModel", "TeacherStudentModel", "BYOLModel", "MoCoV3Model", "DINOModel", "cosine_momentum"]


class SSLModel(nn.Module):
    """A timm backbone with the heads and loss of one SSL method.

    ``forward(x1, x2)`` returns ``{"loss", "z1", "z2"}`` (and ``"p1", "p2"`` with a predictor); ``features(x)``
    returns the backbone's pooled features. ``evaluated_encoder`` is the encoder the method's paper evaluates (and
    the zoo exports). The trainer calls :meth:`set_progress` before each step and :meth:`after_optimizer_step` after
    it (no-ops here; schedules of the teacher-student methods).

    Shape:
        x1, x2: N x C x H x W, two augmented views of the same N images.
    """

    multi_crop = False  # whether forward takes local crops after the two global views

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

    @property
    def evaluated_encoder(self) -> nn.Module:
        return self.backbone

    def features(self, x: torch.Tensor) -> torch.Tensor:  # N x C x H x W → N x F
        return self.backbone(x)

    def set_progress(self, progress: float) -> None:
        """Where training is (0 → 1), before a step."""

    def before_optimizer_step(self, progress: float) -> None:
        """After backward, before the optimizer step."""

    def after_optimizer_step(self, progress: float) -> None:
        """After an optimizer step."""

    def forward(self, *views: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(views) != 2:
            raise ValueError(f"{self.method or 'this method'} takes two views, got {len(views)}")
        x1, x2 = views
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


def cosine_momentum(base: float, progress: float, final: float = 1.0) -> float:
    """τ = final − (final − base)·(cos(π·progress) + 1)/2: ``base`` at the start, ``final`` at the end (BYOL Sec.
    3.2; DINO's ``cosine_scheduler``; MoCo v3's ``adjust_moco_momentum``)."""
    return final - (final - base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2


class TeacherStudentModel(SSLModel):
    """A student (backbone + projector [+ predictor], trained) and a teacher (backbone + projector, an exponential
    moving average of the student's parameters, never trained), initialised as a copy of the student.

    After each optimizer step θ_t ← τ·θ_t + (1 − τ)·θ_s with τ following :func:`cosine_momentum` from
    ``momentum`` to 1. BatchNorm statistics are the teacher's own (not averaged), as in the official codes.

    ``forward(x1, x2)`` is BYOL's and MoCo v3's (the same computation under two papers' names): the student's
    projections z, its predictions p (MoCo v3's queries), the teacher's projections of the same views (BYOL's
    targets, MoCo v3's keys), and ``loss(p1, p2, t1, t2)``.
    """

    def __init__(self, *args, momentum: float = 0.99, evaluate_teacher: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.teacher_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum_base, self.evaluate_teacher = momentum, evaluate_teacher

    @property
    def evaluated_encoder(self) -> nn.Module:
        return self.teacher_backbone if self.evaluate_teacher else self.backbone

    def reset_teacher(self) -> None:
        """Copy the student into the teacher (after the student got initial weights from elsewhere)."""
        self.teacher_backbone.load_state_dict(self.backbone.state_dict())
        self.teacher_projector.load_state_dict(self.projector.state_dict())

    def teacher(self, x: torch.Tensor) -> torch.Tensor:  # N x C x H x W → N x D, no gradient
        with torch.no_grad():
            return self.teacher_projector(self.teacher_backbone(x))

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """θ_t ← lerp(θ_t, θ_s, 1 − τ): one fused ``_foreach_lerp_`` over all parameters (a kernel per dtype and
        device, as ``torch.optim.swa_utils``' EMA), with τ a Python float, so the host does not wait."""
        momentum = cosine_momentum(self.momentum_base, progress)
        teacher = [*self.teacher_backbone.parameters(), *self.teacher_projector.parameters()]
        student = [*self.backbone.parameters(), *self.projector.parameters()]
        if len(teacher) != len(student):
            raise ValueError("the teacher's parameters no longer match the student's: call reset_teacher()")
        torch._foreach_lerp_(teacher, student, 1 - momentum)

    def forward(self, *views: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(views) != 2:
            raise ValueError(f"{self.method or 'this method'} takes two views, got {len(views)}")
        x1, x2 = views
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))  # N x D, student
        p1, p2 = self.predictor(z1), self.predictor(z2)  # N x D, predictions (MoCo v3: queries)
        t1, t2 = self.teacher(x1), self.teacher(x2)  # N x D, teacher (BYOL: targets, MoCo v3: keys)
        return {"z1": z1, "z2": z2, "p1": p1, "p2": p2, "loss": self.criterion(p1, p2, t1, t2)}


class BYOLModel(TeacherStudentModel):
    """BYOL (Grill et al. 2020): online network with predictor, target = EMA; the online encoder is evaluated."""


class MoCoV3Model(TeacherStudentModel):
    """MoCo v3 (Chen, Xie & He 2021): query = predictor(projector(base encoder)), key = momentum encoder (backbone +
    projector, no predictor); the base encoder is evaluated. Deviation: the momentum update happens after the
    optimizer step (the official code updates inside forward, before the keys: the same sequence of updates, one
    step later); ViT's frozen patch embedding and fixed sin-cos position embedding are not used."""


class DINOModel(TeacherStudentModel):
    """DINO (Caron et al. 2021): student and teacher with the DINO head; the student sees the two global crops and
    the local crops, the teacher the global crops only; the teacher is evaluated.

    The last layer of the student's head gets no gradient during the first ``freeze_last_layer`` fraction of training
    (the official code: the first epoch). Deviations: weight decay is constant (the official one grows 0.04 → 0.4),
    gradients are clipped by global norm (``clip_grad``; the official code clips each parameter), no drop-path.
    """

    multi_crop = True

    def __init__(self, *args, freeze_last_layer: float = 0.0, **kwargs):
        super().__init__(*args, evaluate_teacher=True, **kwargs)
        self.freeze_last_layer = freeze_last_layer

    def set_progress(self, progress: float) -> None:
        self.criterion.set_progress(progress)

    def before_optimizer_step(self, progress: float) -> None:
        if progress < self.freeze_last_layer:
            for p in self.projector.last_layer.parameters():
                p.grad = None

    def forward(self, *views: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(views) < 2:
            raise ValueError(f"DINO takes two global crops and optional local crops, got {len(views)} views")
        n = len(views[0])
        globals_, locals_ = torch.cat(views[:2]), views[2:]  # 2N x C x H x W
        features = [self.backbone(globals_)] + ([self.backbone(torch.cat(locals_))] if locals_ else [])
        student = self.projector(torch.cat(features)).split(n)  # n_crops tensors N x K
        teacher = self.teacher(globals_).split(n)  # 2 tensors N x K
        return {"z1": student[0], "z2": student[1], "loss": self.criterion(list(student), list(teacher))}
