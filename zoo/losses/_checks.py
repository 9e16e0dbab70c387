"""Input validation shared by the SSL losses: clear errors instead of NaN."""

from __future__ import annotations

import torch


def check_pair(name: str, a: torch.Tensor, b: torch.Tensor, min_batch: int = 2) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` are two N x D embeddings of the same shape, N >= min_batch."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"{name} expects two 2-D embeddings (batch x dim), got shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)}; flatten the projector output first."
        )
    if a.shape != b.shape:
        raise ValueError(
            f"{name} expects both views to have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if a.shape[0] < min_batch:
        raise ValueError(
            f"{name} needs a batch of at least {min_batch} samples, got {a.shape[0]}: batch statistics and "
            "negatives are undefined for a single sample; increase the batch size."
        )


def check_predictions(name: str, p1, p2, z1, z2, min_batch: int = 1) -> None:
    """The inputs of a ``loss(p1, p2, z1, z2)``: four N x D embeddings of one shape (predictions / queries and
    targets / keys of the two views)."""
    check_pair(name, p1, p2, min_batch)
    check_pair(name, z1, z2, min_batch)
    check_pair(name, p1, z1, min_batch)
