"""SimpleShot and seeded few-shot episodes on frozen features.

SimpleShot (Wang et al., "SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning",
arXiv:1911.04623, the CL2N variant): features are centred on the mean of the labelled (support) set and
L2-normalised; each class's prototype is the mean of its normalised support features; a query belongs to the
nearest prototype (Euclidean). UNI's ``eval_patch_features`` uses it for its few-shot episodes, which this module
draws the same way: ``n`` labelled examples per class, many seeded episodes, mean ± std.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["few_shot_episodes", "shot_counts", "simpleshot_predict"]


def simpleshot_predict(
    support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Class probabilities (Q x C) of each query: a softmax over the negative squared distances to the class
    prototypes (the nearest prototype has the highest probability; AUROC reads the scores).

    Shape:
        support: N x F; support_labels: N (every class present); queries: Q x F. Output: Q x C.
    """
    counts = torch.bincount(support_labels, minlength=num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"SimpleShot needs an example of every class; classes {missing} have none")
    centre = support.float().mean(dim=0)
    s = F.normalize(support.float() - centre, dim=1)  # N x F
    q = F.normalize(queries.float() - centre, dim=1)  # Q x F
    # a one-hot matmul: index_add_ was ~100 times slower on this CPU
    onehot = F.one_hot(support_labels, num_classes).float()
    prototypes = (onehot.T @ s) / counts[:, None]
    return torch.softmax(-torch.cdist(q, prototypes).square(), dim=1)


def shot_counts(labels: torch.Tensor, largest: int = 256) -> list[int]:
    """1, 2, 4, … shots per class, up to the smallest class's number of examples (and ``largest``)."""
    smallest = int(torch.bincount(labels)[torch.bincount(labels) > 0].min())
    return [2**k for k in range(12) if 2**k <= min(smallest, largest)]


def few_shot_episodes(labels: torch.Tensor, shots: int, episodes: int, seed: int = 0) -> list[torch.Tensor]:
    """``episodes`` support sets of ``shots`` examples of every class (indices into ``labels``, sorted), drawn
    without replacement by a generator seeded with (``seed``, ``shots``): the same episodes in every run and for
    every encoder evaluated on the same rows."""
    y = labels.numpy()
    classes = np.unique(y)
    members = [np.flatnonzero(y == c) for c in classes]
    short = [int(c) for c, m in zip(classes, members, strict=True) if len(m) < shots]
    if short:
        raise ValueError(
            f"{shots} shots per class: classes {short} have fewer labelled examples; use fewer shots"
        )
    rng = np.random.default_rng([seed, shots])
    return [
        torch.from_numpy(np.sort(np.concatenate([rng.choice(m, size=shots, replace=False) for m in members])))
        for _ in range(episodes)
    ]
