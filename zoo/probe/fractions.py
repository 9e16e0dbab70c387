"""Seeded, stratified label fractions for low-label evaluation (1 %, 10 %, 100 % of the training labels)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["label_fraction_indices"]


def label_fraction_indices(
    labels: torch.Tensor, fraction: float, seed: int, class_names=None
) -> torch.Tensor:
    """Indices of ``round(fraction * n_c)`` training examples of every class c, drawn with ``seed``.

    Raises ``ValueError`` when the fraction would leave a class without any example — a probe cannot learn a
    class it never sees, and silently dropping it would inflate accuracy.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"a label fraction must be in (0, 1], got {fraction}")
    y = labels.numpy()
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = int(round(fraction * len(members)))
        if take == 0:
            name = class_names[c] if class_names is not None else c
            raise ValueError(
                f"label fraction {fraction:g} leaves class {name!r} with no example ({len(members)} images; "
                f"need at least {1 / len(members):.2%}); use a larger fraction"
            )
        chosen.append(rng.choice(members, size=take, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen)))
