"""Exact cosine nearest neighbours over an embedding output, in chunked matrix products.

No approximate index: the archive is read in chunks of rows (plain reads, float32), each chunk's rows are
normalised and multiplied with the normalised queries, and the best ``k`` so far are kept (``torch.topk`` over
the running best and the chunk's). The memory is that of one chunk and its similarity block — ``budget_bytes``,
32 MiB unless asked otherwise — not the archive's; the result is the same as a brute-force cosine similarity over
everything (ties aside: equal similarities may come in either order). A row of zeros has similarity 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.embeddings.format import chunk_rows
from zoo.embeddings.store import Embeddings

__all__ = ["Neighbours", "search"]

BUDGET_BYTES = 32 * 2**20
EPS = 1e-12


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` most similar rows of each query, best first.

    Shape:
        scores: Q x k cosine similarities (float32). rows: Q x k row numbers (int64) of the output (the line of
        ``index.csv``; :meth:`Embeddings.records` gives their paths and labels).
    """

    scores: torch.Tensor
    rows: torch.Tensor


def _queries(queries, width: int) -> torch.Tensor:
    q = torch.as_tensor(np.asarray(queries) if not isinstance(queries, torch.Tensor) else queries)
    q = q.detach().to("cpu", torch.float32)
    q = q[None] if q.ndim == 1 else q
    if q.ndim != 2 or q.shape[1] != width:
        raise ValueError(f"queries must be Q x {width} (or one vector of {width}); got {tuple(q.shape)}")
    if not torch.isfinite(q).all():
        raise ValueError("queries hold NaN or inf")
    return q / q.norm(dim=1, keepdim=True).clamp_min(EPS)


def search(
    source: Embeddings | str | Path, queries, k: int = 10, *, budget_bytes: int = BUDGET_BYTES
) -> Neighbours:
    """The ``k`` rows of ``source`` (an output folder or :class:`Embeddings`) most cosine-similar to each of
    ``queries`` (Q x width, or one vector; numpy or torch). Memory: about ``budget_bytes``.

    Example:
        >>> hits = zoo.search("out/", model(x), k=5)
        >>> hits.scores[0], hits.rows[0]
    """
    emb = source if isinstance(source, Embeddings) else Embeddings(source)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive number of neighbours, got {k!r}")
    q = _queries(queries, emb.width)
    k = min(k, len(emb))
    best = torch.full((len(q), k), -torch.inf)
    rows = torch.zeros((len(q), k), dtype=torch.long)
    per_chunk = chunk_rows(emb.width, budget_bytes, extra_per_row=4 * len(q))
    for first, chunk in emb.chunks(per_chunk):
        x = torch.from_numpy(chunk)  # C x D float32
        scores = (q @ x.T) / x.norm(dim=1).clamp_min(EPS)  # Q x C cosine similarities
        top, at = scores.topk(min(k, len(x)), dim=1)
        best, picked = torch.cat([best, top], dim=1).topk(k, dim=1)
        rows = torch.cat([rows, at + first], dim=1).gather(1, picked)
    return Neighbours(best, rows)
