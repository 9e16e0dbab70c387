"""Pooling a ViT's tokens into one embedding, as the public encoders' cards prescribe.

timm's ``VisionTransformer`` and ``Eva`` return ``[B, N, D]`` from ``forward_features``: the CLS token at index
0, then ``num_reg_tokens`` register tokens, then the patch tokens (timm vision_transformer.py ``_pos_embed``;
``num_prefix_tokens`` = CLS + registers). Both models' ``forward_head`` calls ``self.pool(x)``; :func:`set_pooling`
replaces that one method on the instance, so the model stays a timm model (state dict, ``forward_features``,
``pretrained_cfg``) whose ``forward`` returns the pooled embedding.

- ``cls``: the CLS token (UNI, UNI2-h, H-optimus-0, Prov-GigaPath, DINOv2: their cards' ``global_pool='token'``).
- ``cls+mean-patch``: CLS ⊕ the mean of the patch tokens, registers excluded (Virchow2's card:
  ``torch.cat([output[:, 0], output[:, 5:].mean(1)], -1)``), 2 x D wide.
- ``avg``: the mean of the patch tokens, registers excluded (timm's ``global_pool='avg'``). Passing
  ``global_pool='avg'`` to the constructor instead would move the final norm to ``fc_norm`` and break strict
  loading of every published checkpoint.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

__all__ = ["POOLINGS", "pool_tokens", "pooled_width", "set_pooling"]

POOLINGS = ("cls", "cls+mean-patch", "avg")


def pooled_width(embed_dim: int, pooling: str) -> int:
    """The embedding width ``pooling`` gives on tokens of width ``embed_dim``."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    return 2 * embed_dim if pooling == "cls+mean-patch" else embed_dim


def pool_tokens(
    tokens: torch.Tensor, pool_type: str | None = None, *, prefix: int, pooling: str
) -> torch.Tensor:
    """One embedding per image from ``forward_features`` tokens (B x N x D → B x D, or B x 2D for
    ``cls+mean-patch``); ``prefix`` = CLS + register tokens. ``pool_type`` is timm's argument, ignored."""
    patches = tokens[:, prefix:]
    if pooling == "cls":
        return tokens[:, 0]
    if pooling == "avg":
        return patches.mean(dim=1)
    return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)


def set_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """Make ``model(x)`` return ``pooling`` of its tokens; sets ``num_features`` to the pooled width and
    ``zoo_pooling`` to ``pooling`` (what an embedding output records)."""
    width = pooled_width(int(model.embed_dim), pooling)
    if pooling == "cls" and not getattr(model, "has_class_token", True):
        raise ValueError(f"{type(model).__name__} has no class token: use avg pooling")
    # a partial of a module-level function (no reference to the model): copies and pickles like any attribute
    model.pool = partial(pool_tokens, prefix=int(model.num_prefix_tokens), pooling=pooling)
    model.num_features = width
    model.zoo_pooling = pooling
    return model
