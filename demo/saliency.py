"""Where the model looks: Grad-CAM on the last feature map (CNNs) or on the patch tokens (ViTs).

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017,
Eq. (1)-(2): weights α_c = mean over positions of ∂y/∂A_c, map = ReLU(Σ_c α_c A_c). For a ViT the patch tokens
entering the last block are reshaped to their grid and treated the same way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["grad_cam", "overlay"]


def _as_grid(features: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """N x C x H x W from a CNN map, or from ViT tokens N x T x C (prefix tokens dropped)."""
    if features.ndim == 4:
        return features
    tokens = features[:, getattr(model, "num_prefix_tokens", 0) :]
    side = int(math.isqrt(tokens.shape[1]))
    if side * side != tokens.shape[1]:
        raise ValueError(f"cannot lay {tokens.shape[1]} tokens on a square grid for a saliency map")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The module holding the feature maps: a head-only export's catalogue encoder (:mod:`zoo.composed`, whose
    ``forward_features`` is already pooled), else the model itself."""
    from zoo.composed import HeadOnEncoder

    return model.encoder if isinstance(model, HeadOnEncoder) else model


def _vit_activations(
    model: torch.nn.Module, backbone: torch.nn.Module, x: torch.Tensor, target: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens entering the last block's attention (``blocks[-1].norm1`` of ``backbone``) and their gradient for
    ``model``'s logit: with class-token pooling the head never sees the final patch tokens, so this is where a
    ViT's spatial evidence is."""
    captured = {}
    hook = backbone.blocks[-1].norm1.register_forward_hook(lambda module, inputs, out: captured.update(a=out))
    try:
        with torch.enable_grad():
            logit = model(x)[0, target]
    finally:
        hook.remove()
    return captured["a"], torch.autograd.grad(logit, captured["a"])[0]


def grad_cam(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """An H x W map in [0, 1] (the input's size) for class ``target`` of a timm model; x: 1 x C x H x W.

    CNNs: Grad-CAM on ``forward_features`` (the last stage), only the head is differentiated. ViTs: the patch
    tokens entering the last block, laid on their grid.
    """
    backbone = _backbone(model)
    blocks = getattr(backbone, "blocks", None)
    if isinstance(blocks, torch.nn.Sequential) and len(blocks) and hasattr(blocks[-1], "norm1"):
        activations, grads = _vit_activations(model, backbone, x, target)
    else:
        with torch.enable_grad():
            activations = model.forward_features(x).detach().requires_grad_()
            logit = model.forward_head(activations)[0, target]
            grads = torch.autograd.grad(logit, activations)[0]
    grid, grads = _as_grid(activations.detach(), backbone), _as_grid(grads, backbone)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # 1 x C x 1 x 1, Eq. (1)
    cam = F.relu((weights * grid).sum(dim=1, keepdim=True))  # 1 x 1 x h x w, Eq. (2)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return (cam / cam.max() if cam.max() > 0 else cam).numpy()


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.45, min_size: int = 320) -> Image.Image:
    """The heat map (matplotlib's ``jet``: red = high) blended over the model-input image, enlarged to at least
    ``min_size`` px for display."""
    from matplotlib import colormaps

    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    heat = colormaps["jet"](cam)[..., :3]
    mixed = (1 - alpha) * base + alpha * heat
    out = Image.fromarray((np.clip(mixed, 0, 1) * 255).astype(np.uint8))
    scale = max(1, -(-min_size // min(out.size)))
    return out.resize((out.width * scale, out.height * scale), Image.Resampling.BICUBIC) if scale > 1 else out
