"""DINO's self-distillation loss with a centred, sharpened teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.distributed import gather
from zoo.losses._precision import full_precision

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher distribution and the student's, over crop pairs.

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, Eq. (1)-(4) and
    Algorithm 1:

        P_t = softmax((g_t(x) − C) / τ_t),   P_s = softmax(g_s(x') / τ_s)
        L = Σ_{x ∈ globals} Σ_{x' ∈ crops, x' ≠ x} H(P_t(x), P_s(x')) / #pairs
        C ← m·C + (1 − m)·mean_batch g_t(x)      (after each call, no gradient)

    with τ_s = 0.1, τ_t warmed up linearly from 0.04 to 0.07 over the first ``warmup_teacher_temp_fraction`` of
    training (the README's ViT-S/16 recipe: 30 of 100 epochs; the code's default is no warm-up), m = 0.9. The teacher
    distribution is detached here, inside the loss. Under torch.distributed, student and teacher outputs are
    gathered (the student's with gradients) and the centre is the mean over all processes, so every process computes
    the global batch's loss and the same centre, as one process would. Progress through training (0 → 1) is set
    with :meth:`set_progress`.

    Args:
        out_dim: K, the prototypes (the DINO head's output width).

    Shape:
        student_out: list of n_crops tensors N x K (two global crops first); teacher_out: list of 2 tensors N x K
        (the global crops). Output: scalar.

    Example:
        >>> loss_fn = DINOLoss(256)
        >>> loss = loss_fn([torch.randn(8, 256) for _ in range(4)], [torch.randn(8, 256) for _ in range(2)])
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_fraction: float = 0.3,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        if min(student_temp, teacher_temp, warmup_teacher_temp) <= 0:
            raise ValueError("temperatures must be > 0")
        self.out_dim, self.student_temp = out_dim, student_temp
        self.teacher_temp, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_fraction, self.center_momentum = (
            warmup_teacher_temp_fraction,
            center_momentum,
        )
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("progress", torch.zeros(()))  # 0 → 1 over training, saved with the model

    def set_progress(self, progress: float) -> None:
        self.progress.fill_(progress)

    def current_teacher_temp(self) -> torch.Tensor | float:
        """τ_t: linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp``, then constant; a 0-d tensor on the
        progress buffer's device when there is a warm-up (never read back: ``.item()`` would make the host wait for the
        device every step, and is a graph break under ``torch.compile``)."""
        fraction = self.warmup_teacher_temp_fraction
        if fraction <= 0:
            return self.teacher_temp
        remaining = 1 - (self.progress / fraction).clamp(max=1.0)  # 1 → 0 over the warm-up
        return (
            self.teacher_temp - (self.teacher_temp - self.warmup_teacher_temp) * remaining
        )  # exact once warm

    @full_precision
    def forward(self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor]) -> torch.Tensor:
        if len(teacher_out) != 2 or len(student_out) < 2:
            raise ValueError(
                f"DINOLoss expects 2 teacher and >= 2 student outputs, got {len(teacher_out)}, {len(student_out)}"
            )
        if any(t.ndim != 2 or t.shape[1] != self.out_dim for t in [*student_out, *teacher_out]):
            raise ValueError(
                f"DINOLoss expects N x {self.out_dim} outputs (out_dim), got shapes {[tuple(t.shape) for t in student_out]}"
            )
        student = [F.log_softmax(gather(s) / self.student_temp, dim=1) for s in student_out]  # N x K each
        teacher_logits = [gather(t.detach()) for t in teacher_out]  # N x K each
        teacher_temp = self.current_teacher_temp()
        targets = [F.softmax((t - self.center) / teacher_temp, dim=1) for t in teacher_logits]
        total, terms = 0.0, 0
        for i, target in enumerate(targets):
            for v, log_probs in enumerate(student):
                if v == i:
                    continue  # a crop is not compared with itself
                total = total + torch.sum(-target * log_probs, dim=1).mean()
                terms += 1
        self.update_center(teacher_logits)
        return total / terms

    @torch.no_grad()
    def update_center(self, teacher_logits: list[torch.Tensor]) -> None:
        """C ← m·C + (1 − m)·batch mean of the teacher logits (already gathered: the global batch)."""
        batch_center = torch.cat(teacher_logits).mean(dim=0, keepdim=True)  # 1 x K
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, student_temp={self.student_temp}, teacher_temp={self.teacher_temp}"
