"""Batched feature extraction from an encoder over cached uint8 images."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from zoo.runtime import bf16_is_fast

__all__ = ["extract_features"]


@torch.inference_mode()
def extract_features(
    encoder: nn.Module,
    images: torch.Tensor,
    transform,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    autocast: bool | None = None,
) -> torch.Tensor:
    """Features (N x F, float32, CPU) of uint8 ``images`` (N x C x H x W) after ``transform``, in batches.

    ``transform`` maps a uint8 batch to a normalised float batch (v2 transforms and :class:`BatchAugment` accept
    batches on any device). Each batch is copied to the encoder's device as uint8 (a quarter of the floats' bytes)
    and preprocessed there, and the features stay there until the end: on a GPU nothing waits for the host between
    batches. The encoder is put in eval mode for the pass and restored afterwards; bf16 autocast is used when
    ``autocast`` is True, or when it is None and bf16 is fast on this device (:func:`zoo.runtime.bf16_is_fast`).
    """
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    use_bf16 = bf16_is_fast(device.type) if autocast is None else autocast
    chunks = []
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)  # B x C x H x W uint8
            batch = transform(batch).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext():
                chunks.append(encoder(batch).float())  # B x F, on the device
    finally:
        encoder.train(was_training)
    return torch.cat(chunks).cpu()
