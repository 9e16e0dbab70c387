"""Two-view SSL transforms and the eval transform work on uint8 tensors, colour and grayscale."""

import pytest
import torch

from zoo.data import TwoViews, eval_transform, ssl_transform
from zoo.data.augment_policies import AUGMENT_POLICIES, PAPER_CROP_SCALE, STANDARD_CROP_SCALE


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policy", ["simclr", "original"])
def test_ssl_views_are_normalised_float_and_differ(channels, policy):
    torch.manual_seed(0)
    image = torch.randint(0, 256, (channels, 80, 60), dtype=torch.uint8)
    views = TwoViews(ssl_transform(32, channels, (0.5,) * channels, (0.25,) * channels, policy=policy))(image)
    for v in views:
        assert v.shape == (channels, 32, 32) and v.dtype == torch.float32
    assert not torch.equal(*views)


def test_batched_uint8_input():
    batch = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    assert ssl_transform(24)(batch).shape == (5, 3, 24, 24)


def test_paper_mode_uses_the_original_crop_scale():
    # the constants against the literals of the study's code and of SimCLR (Appendix A)
    assert PAPER_CROP_SCALE == (0.08, 0.1) and STANDARD_CROP_SCALE == (0.08, 1.0)
    simclr, original = AUGMENT_POLICIES["simclr"], AUGMENT_POLICIES["original"]
    assert (simclr.jitter, simclr.jitter_p, simclr.grayscale_p, simclr.blur_p) == (
        (0.4, 0.4, 0.4, 0.1),
        0.8,
        0.2,
        0.5,
    )
    assert (original.jitter, original.jitter_p, original.blur_kernel, original.solarize_p) == (
        (0.4, 0.4, 0.2, 0.1),
        1.0,
        23,
        0.1,
    )
    t = ssl_transform(32, paper_mode=True)
    assert t.transforms[0].scale == (0.08, 0.1)
    assert any(type(op).__name__ == "RandomSolarize" for op in t.transforms)
    assert ssl_transform(32).transforms[0].scale == (0.08, 1.0)
    with pytest.raises(ValueError, match="valid: simclr, original, byol"):
        ssl_transform(32, policy="nope")


def test_eval_transform_follows_the_timm_data_config():
    cfg = {
        "input_size": (3, 224, 224),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
    }
    image = torch.full((3, 300, 400), 255, dtype=torch.uint8)
    out = eval_transform(cfg)(image)
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out, torch.ones_like(out))  # (1 - 0.5) / 0.5


@pytest.mark.parametrize(("size", "crop_pct"), [(224, 0.95), (224, 0.875), (64, 0.9), (96, 0.85), (384, 1.0)])
def test_eval_transform_resizes_as_timm_does(size, crop_pct):
    """The same short side as timm's create_transform (floor; rounding differs at e.g. 224 / 0.95 = 235.8)."""
    import timm.data

    cfg = {"input_size": (3, size, size), "crop_pct": crop_pct, "interpolation": "bilinear"}
    cfg |= {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    timm_resize = timm.data.create_transform(**cfg, is_training=False).transforms[0]
    assert eval_transform(cfg).transforms[0].size == [timm_resize.size]


@pytest.mark.parametrize(("image_size", "cache_size"), [(443, 506), (14, 25), (224, 256), (64, 64), (64, 73)])
def test_a_runs_data_config_resizes_to_its_cache_size(image_size, cache_size):
    """crop_pct = image size / cache size can round so that timm's floor lands one pixel short (443 / (443 / 506)
    = 505.99…): the stored crop_pct makes the eval resize exactly the size the images were decoded at."""
    from types import SimpleNamespace

    from zoo.data.run_data import cache_size_of, make_data_config
    from zoo.data.transforms import eval_resize_size

    dataset = SimpleNamespace(channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    config = make_data_config(dataset, image_size, cache_size)
    assert eval_resize_size(config) == cache_size == cache_size_of(config)


def test_batch_augment_is_a_function_of_seed_epoch_sample_and_view_only():
    """A sample's view does not depend on its batch, its position in it, or the other samples: what makes a
    2-process or resumed run see the augmentations of an uninterrupted one."""
    from zoo.data.batch_augment import BatchAugment

    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    ids = torch.tensor([10, 11, 12, 13, 14, 15])
    augment = BatchAugment(24, 3, (0.5,) * 3, (0.25,) * 3, seed=7)
    whole = augment(images, ids, epoch=2, view=1)
    order = torch.tensor([5, 0, 3])
    part = augment(images[order], ids[order], epoch=2, view=1)  # another batch, another position
    torch.testing.assert_close(part, whole[order])
    for changed in (
        augment(images, ids, epoch=3, view=1),
        augment(images, ids, epoch=2, view=0),
        BatchAugment(24, 3, (0.5,) * 3, (0.25,) * 3, seed=8)(images, ids, epoch=2, view=1),
        augment(images, ids + 100, epoch=2, view=1),
    ):
        assert not torch.allclose(changed, whole)
    with pytest.raises(ValueError, match="view must be in 0..7"):
        augment(images, ids, view=8)


def test_byol_policy_is_asymmetric_per_view():
    byol = AUGMENT_POLICIES["byol"]
    assert [(byol.for_view(v).blur_p, byol.for_view(v).solarize_p) for v in range(4)] == [
        (1.0, 0.0),
        (0.1, 0.2),
        (0.5, 0.0),
        (0.5, 0.0),
    ]
    assert (byol.jitter, byol.jitter_p, byol.grayscale_p) == ((0.4, 0.4, 0.2, 0.1), 0.8, 0.2)
    assert AUGMENT_POLICIES["simclr"].for_view(1) is AUGMENT_POLICIES["simclr"]
