"""Views too small for a policy's blur are refused with one clear line when the augmenter is made (e.g. DINO's
local crops of 8-11 px with the ``original`` policy's 23 px kernel, or 1 px views), not with PyTorch's padding
error at the first batch; every size the blur fits still works, and gives the views it gave before."""

from __future__ import annotations

import pytest
import torch

from zoo.data.batch_augment import BatchAugment


@pytest.mark.parametrize("policy, size", [("original", 8), ("original", 11), ("simclr", 1), ("byol", 1)])
def test_views_too_small_for_the_blur_are_refused_in_one_line(policy, size):
    with pytest.raises(ValueError, match=rf"at least \d+ px, got {size} px: use a larger") as e:
        BatchAugment(size, 3, policy=policy)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("policy, size", [("original", 12), ("simclr", 2), ("byol", 8)])
def test_the_smallest_views_the_blur_fits_are_made(policy, size):
    images = torch.randint(
        0, 256, (4, 3, 20, 20), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    for view in range(3):
        out = BatchAugment(size, 3, policy=policy, seed=1)(images, torch.arange(4), view=view)
        assert out.shape == (4, 3, size, size) and torch.isfinite(out).all()
