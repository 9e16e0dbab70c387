"""The embedded synthetic dataset: deterministic, balanced, and hard for a random-init encoder."""

import numpy as np
import torch
from torchvision.transforms import v2

from zoo import create_backbone
from zoo.data import load_dataset
from zoo.data.synthetic import generate
from zoo.probe import extract_features, knn_accuracy


def test_generation_is_deterministic_per_seed():
    a, la = generate(8, size=32, seed=5)
    b, lb = generate(8, size=32, seed=5)
    c, _ = generate(8, size=32, seed=6)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8 and la.tolist() == [0, 1, 2, 3] * 2


def test_splits_are_balanced():
    ds = load_dataset("synthetic", num_images=200, size=32)
    counts = ds.counts()
    assert sorted(counts["test"]) == [12, 12, 13, 13]  # stratified: 50 of 200, as even as 4 classes allow
    assert sorted(counts["val"]) == [3, 4, 4, 4] and sorted(counts["train"]) == [33, 34, 34, 34]

    assert sum(map(sum, counts.values())) == 200


def test_colour_statistics_carry_little_class_information():
    """Mean colour per tile is nuisance: a kNN on it is near chance."""
    ds = load_dataset("synthetic", num_images=400, size=48)
    train, ytr = ds.decode("train", 48)
    test, yte = ds.decode("test", 48)
    mean_colour = lambda x: x.float().mean(dim=(2, 3))  # noqa: E731
    acc = knn_accuracy(mean_colour(train), ytr, mean_colour(test), yte, 4, k=20, metric="euclidean")
    assert acc < 0.45


def test_random_init_encoder_knn_stays_low():
    torch.manual_seed(0)
    ds = load_dataset("synthetic", num_images=400, size=48)
    train, ytr = ds.decode("train", 48)
    test, yte = ds.decode("test", 48)
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(ds.mean, ds.std)])
    encoder = create_backbone("resnet18")
    acc = knn_accuracy(
        extract_features(encoder, train, norm), ytr, extract_features(encoder, test, norm), yte, 4, k=20
    )
    print(f"random-init resnet18 kNN accuracy on synthetic: {acc:.3f} (chance 0.25)")
    assert acc < 0.65
