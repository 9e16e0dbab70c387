"""Evaluation preprocesses on the encoder's device (issue 21.6): each uint8 batch is copied there first and
transformed there, and the features stay there until the end. Checked on the CPU with the ``meta`` device (shapes
only): the transform must see uint8 batches on the encoder's device, not floats made on the host."""

import pytest
import torch
from torch import nn

from zoo.probe import extract_features


def test_batches_are_copied_as_uint8_and_transformed_on_the_encoder_s_device():
    seen = []

    def transform(batch):
        seen.append((batch.device.type, batch.dtype, tuple(batch.shape)))
        return batch.float().div(255)

    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).to("meta")
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(
        NotImplementedError
    ):  # meta tensors hold no values: the final copy to the host refuses
        extract_features(encoder, images, transform, batch_size=4, device="meta", autocast=False)
    assert seen == [
        ("meta", torch.uint8, (4, 3, 8, 8)),
        ("meta", torch.uint8, (4, 3, 8, 8)),
        ("meta", torch.uint8, (2, 3, 8, 8)),
    ]


def test_features_are_the_same_as_a_plain_forward_on_the_cpu():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = torch.randint(0, 256, (9, 3, 12, 12), dtype=torch.uint8)
    transform = lambda x: (x.float() / 255 - 0.5) / 0.25  # noqa: E731
    features = extract_features(encoder, images, transform, batch_size=4, autocast=False)
    with torch.no_grad():
        expected = encoder(transform(images))
    assert features.device.type == "cpu"
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
