"""Grad-CAM for a CNN (last feature map) and a ViT (patch tokens), checked against the class it explains."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from medssl_zoo.demo.saliency import grad_cam, overlay


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_grad_cam_map_is_normalised_and_input_sized(arch):
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=3).eval()
    size = model.pretrained_cfg["input_size"][1:]
    x = torch.randn(1, 3, *size)
    cam = grad_cam(model, x, target=1)
    assert cam.shape == tuple(size) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_grad_cam_matches_a_hand_computation():
    """features = input (C x H x W), logit_1 = Σ_c w_c · mean(A_c): α_c = w_c / (H·W), map = ReLU(Σ_c α_c A_c)."""
    w = torch.tensor([2.0, -1.0, 0.5])

    class LinearOnMap(torch.nn.Module):
        def forward_features(self, x):
            return x

        def forward_head(self, f):
            score = (f.mean(dim=(2, 3)) * w).sum(dim=1)
            return torch.stack([-score, score], dim=1)

    x = torch.rand(1, 3, 8, 8)
    x[0, 0, :4, :4] += 3  # strong evidence for class 1 in the top-left corner
    expected = torch.relu((w.view(3, 1, 1) / 64 * x[0]).sum(0))
    expected = (expected - expected.min()) / (expected - expected.min()).max()
    np.testing.assert_allclose(grad_cam(LinearOnMap(), x, target=1), expected.numpy(), atol=1e-6)
    assert expected[:4, :4].mean() > 3 * expected[4:, 4:].mean()


def test_overlay_is_enlarged_rgb():
    image = Image.fromarray(np.zeros((32, 32), np.uint8), mode="L")
    out = overlay(image, np.linspace(0, 1, 32 * 32).reshape(32, 32))
    assert out.mode == "RGB" and min(out.size) >= 320
