"""Machine-dependent speed choices: when bf16 autocast helps, memory format."""

from __future__ import annotations

import functools

import torch

__all__ = ["bf16_is_fast", "compute_device"]


@functools.cache
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """Whether bf16 autocast is a speed-up on this device.

    On CUDA: when the GPU has bf16 units (compute capability 8.0, Ampere, and later). ``is_bf16_supported()``
    alone is not enough: it counts emulation (``including_emulation=True`` by default), so it is true on a V100
    or a T4, which have no bf16 tensor cores (bf16 is emulated there, a slow-down, not a speed-up).
    On CPU: only with native bf16 kernels in oneDNN (AVX512-BF16 / AMX);
    on an AVX2-only CPU bf16 convolutions are emulated and were measured 6-13x *slower* than fp32
    (ResNet-18/50, 2-core AMD EPYC), so fp32 is used there.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and _cuda_bf16_native()
    if device_type == "cpu":
        is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(is_supported and is_supported())
    return False


def _cuda_bf16_native() -> bool:
    """bf16 in hardware on the current GPU: torch's own test without emulation where this torch has it (ROCm
    included), else compute capability >= 8.0."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older torch, without the argument
        return torch.cuda.get_device_capability() >= (8, 0)


def compute_device() -> torch.device:
    """Where evaluation computes (features, fine-tuning): the first visible GPU when there is one, else the CPU
    (``CUDA_VISIBLE_DEVICES`` chooses the GPU; ``CUDA_VISIBLE_DEVICES=`` keeps evaluation on the CPU)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
