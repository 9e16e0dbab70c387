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

__all__ = ["grad_cam", "overlay", "predict_with_cam"]


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


def _activations(
    model: torch.nn.Module, backbone: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``model.forward_features(x)``, the activations Grad-CAM weighs), from one forward.

    ViTs: the tokens entering the last block's attention (``blocks[-1].norm1`` of ``backbone``; with class-token
    pooling the head never sees the final patch tokens, so this is where a ViT's spatial evidence is): the forward
    runs with grad enabled. CNNs: the last feature map itself, a leaf that requires grad, so that only the head is
    differentiated (the encoder runs without grad)."""
    blocks = getattr(backbone, "blocks", None)
    if isinstance(blocks, torch.nn.Sequential) and len(blocks) and hasattr(blocks[-1], "norm1"):
        captured = {}
        hook = blocks[-1].norm1.register_forward_hook(lambda module, inputs, out: captured.update(a=out))
        try:
            with torch.enable_grad():
                features = model.forward_features(x)
        finally:
            hook.remove()
        return features, captured["a"]
    with torch.no_grad():
        features = model.forward_features(x)
    features = features.detach().requires_grad_()
    return features, features


def _cam(activations: torch.Tensor, grads: torch.Tensor, backbone: torch.nn.Module, size) -> np.ndarray:
    """Eq. (1)-(2) on the activations' grid, enlarged to ``size`` and scaled to [0, 1]."""
    grid, grads = _as_grid(activations.detach(), backbone), _as_grid(grads, backbone)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # 1 x C x 1 x 1, Eq. (1)
    cam = F.relu((weights * grid).sum(dim=1, keepdim=True))  # 1 x 1 x h x w, Eq. (2)
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return (cam / cam.max() if cam.max() > 0 else cam).numpy()


def predict_with_cam(
    model: torch.nn.Module, x: torch.Tensor, target: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    """(logits, out-of-distribution score or None, H x W map in [0, 1]) of x: 1 x C x H x W from one forward of
    the encoder: the prediction, the score (:func:`zoo.task.scored_head`) and Grad-CAM for class ``target``
    (default: the top class — the argmax of the logits is that of softmax and of sigmoid) share it, then one
    backward from the target's logit."""
    from zoo.task import scored_head

    backbone = _backbone(model)
    features, activations = _activations(model, backbone, x)
    with torch.enable_grad():
        logits, score = scored_head(model, features)
        target = int(logits[0].argmax()) if target is None else target
        grads = torch.autograd.grad(logits[0, target], activations)[0]
    return logits.detach(), score, _cam(activations, grads, backbone, x.shape[-2:])


def grad_cam(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """An H x W map in [0, 1] (the input's size) for class ``target`` of a timm model; x: 1 x C x H x W.

    CNNs: Grad-CAM on ``forward_features`` (the last stage), only the head is differentiated. ViTs: the patch
    tokens entering the last block, laid on their grid.
    """
    return predict_with_cam(model, x, target)[2]


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
