"""Seeded, stratified label fractions for low-label evaluation (1 %, 10 %, 100 % of the training labels)."""

from __future__ import annotations

import numpy as np
import torch

from zoo.data.stratify import iterative_split, missing_labels

__all__ = ["label_fraction_indices"]


def label_fraction_indices(
    labels: torch.Tensor, fraction: float, seed: int, class_names=None
) -> torch.Tensor:
    """Indices of ``round(fraction * n_c)`` training examples of every class c, drawn with ``seed``; for
    multi-label targets (N x L) about ``fraction`` of the images, drawn by iterative stratification
    (:mod:`zoo.data.stratify`) so that every label keeps a positive example.

    Raises ``ValueError`` when the fraction would leave a class (label) without any example — a probe cannot
    learn a class it never sees, and silently dropping it would inflate accuracy.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"a label fraction must be in (0, 1], got {fraction}")
    if labels.ndim == 2:
        return _multilabel_fraction(labels, fraction, seed, class_names)
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


def _multilabel_fraction(targets: torch.Tensor, fraction: float, seed: int, names) -> torch.Tensor:
    if fraction == 1:
        return torch.arange(len(targets))
    positives = (targets == 1).numpy()
    subset = iterative_split(positives, (fraction, 1 - fraction), seed)
    chosen = np.flatnonzero(subset == 0)
    lacking = [label for label, k in missing_labels(positives[chosen], np.zeros(len(chosen), int), 1)]
    if lacking:
        name = names[lacking[0]] if names is not None else lacking[0]
        raise ValueError(
            f"label fraction {fraction:g} leaves label {name!r} with no positive image "
            f"({int(positives[:, lacking[0]].sum())} in the training split); use a larger fraction"
        )
    return torch.from_numpy(chosen)
