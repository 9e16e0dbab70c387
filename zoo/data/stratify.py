"""Multi-label stratified splits: iterative stratification (Sechidis, Tsoumakas and Vlahavas, "On the
Stratification of Multi-Label Data", ECML PKDD 2011, Algorithm 1), over groups when the split is grouped.

A stratified split of single-label data keeps each class's share in every split; with several labels per image
there is no such partition in general. Sechidis et al. distribute the examples of the rarest label first, each to
the subset that still wants the most examples of that label (ties: the subset that wants the most examples
overall, then a seeded coin), and update what every subset still wants. One change here: among the subsets, one
that has no example of the label yet comes first, so a label with at least as many examples (groups) as there are
subsets reaches every subset — a split where a label is absent from val or test cannot select a threshold for it
nor score it. A label that still misses a subset is one ``ValueError`` naming it.

An *item* is an image, or with groups (patients) every image of one group: a group is never cut. Everything is a
function of the items in their given (sorted) order and the seed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["iterative_split", "missing_labels"]


def _items(positives: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item of each image, positives per item and label: I x L counts, images per item)."""
    if groups is None:
        item = np.arange(len(positives))
    else:
        _, item = np.unique(groups, return_inverse=True)
    counts = np.zeros((item.max() + 1, positives.shape[1]), dtype=np.int64)
    np.add.at(counts, item, positives.astype(np.int64))
    return item, counts, np.bincount(item)


def _choose(lacking: np.ndarray, wanted: np.ndarray, total: np.ndarray, rng: np.random.Generator) -> int:
    """The subset first by (lacks the label, wants the most of it, wants the most overall, a seeded coin)."""
    coin = rng.random(len(wanted))
    return int(np.lexsort((coin, total, wanted, lacking))[-1])


def iterative_split(
    positives: np.ndarray, proportions, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """The subset (0..K-1) of every image for the desired ``proportions`` (K numbers summing to 1).

    Shape:
        positives: N x L, true where image n shows label l (uncertain or ignored labels: false). groups: N keys.
        Output: N subset indices.
    """
    proportions = np.asarray(proportions, dtype=np.float64)
    item, counts, sizes = _items(np.asarray(positives, dtype=bool), groups)
    rng = np.random.default_rng(seed)
    subset = np.full(len(sizes), -1)
    wanted = proportions[None, :] * counts.sum(axis=0)[:, None]  # L x K examples each subset still wants
    total = proportions * sizes.sum()  # K images each subset still wants
    present = np.zeros((counts.shape[1], len(proportions)), dtype=bool)  # L x K
    left = counts.sum(axis=0)  # L examples not yet assigned
    members = [rng.permutation(np.flatnonzero(counts[:, label])) for label in range(counts.shape[1])]
    while (left > 0).any():
        label = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))  # the rarest label left
        for i in members[label]:
            if subset[i] >= 0:
                continue
            k = _choose(~present[label], wanted[label], total, rng)
            subset[i] = k
            wanted[:, k] -= counts[i]
            total[k] -= sizes[i]
            present[:, k] |= counts[i] > 0
            left -= counts[i]
    for i in rng.permutation(np.flatnonzero(subset < 0)):  # items without any label: by the sizes wanted
        k = _choose(np.zeros(len(total), dtype=bool), total, total, rng)
        subset[i] = k
        total[k] -= sizes[i]
    return subset[item]


def missing_labels(positives: np.ndarray, subset: np.ndarray, subsets: int) -> list[tuple[int, int]]:
    """(label, subset) pairs where a label has no positive image in a subset."""
    present = np.zeros((positives.shape[1], subsets), dtype=bool)
    for k in range(subsets):
        present[:, k] = np.asarray(positives, dtype=bool)[subset == k].any(axis=0)
    return [(int(label), int(k)) for label, k in zip(*np.nonzero(~present), strict=True)]
