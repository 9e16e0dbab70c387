"""Machine-dependent speed choices: when bf16 autocast helps, memory format."""

from __future__ import annotations

import functools

import torch

__all__ = ["bf16_is_fast"]


@functools.cache
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """Whether bf16 autocast is a speed-up on this device.

    On CUDA: when the GPU supports bf16. On CPU: only with native bf16 kernels in oneDNN (AVX512-BF16 / AMX);
    on an AVX2-only CPU bf16 convolutions are emulated and were measured 6-13x *slower* than fp32
    (ResNet-18/50, 2-core AMD EPYC), so fp32 is used there.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(is_supported and is_supported())
    return False
