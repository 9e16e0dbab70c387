"""``bf16_is_fast``: bf16 autocast only where the hardware has bf16 units (issue 21.5)."""

from __future__ import annotations

import pytest
import torch

from zoo.runtime import bf16_is_fast


@pytest.fixture
def gpu(monkeypatch):
    """A visible CUDA GPU of a chosen compute capability, faked: torch's own ``is_bf16_supported`` logic (bf16
    units from 8.0; with emulation, any GPU that can make a bf16 tensor), or a torch without the argument."""

    def fake(capability: tuple[int, int], old_torch: bool = False) -> None:
        def is_bf16_supported(including_emulation: bool = True) -> bool:
            return capability >= (8, 0) or including_emulation  # a V100 / T4 emulates bf16

        def old_is_bf16_supported() -> bool:
            return True  # torch < 2.4 counted emulation, with no way to ask otherwise

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", old_is_bf16_supported if old_torch else is_bf16_supported
        )
        bf16_is_fast.cache_clear()

    yield fake
    bf16_is_fast.cache_clear()


@pytest.mark.parametrize("old_torch", [False, True])
@pytest.mark.parametrize(
    "card, capability, fast",
    [("V100", (7, 0), False), ("T4", (7, 5), False), ("A100", (8, 0), True), ("H100", (9, 0), True)],
)
def test_bf16_is_fast_only_on_gpus_with_bf16_units(gpu, card, capability, fast, old_torch):
    gpu(capability, old_torch)
    assert bf16_is_fast("cuda") is fast, card


def test_no_gpu_no_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bf16_is_fast.cache_clear()
    try:
        assert bf16_is_fast("cuda") is False
    finally:
        bf16_is_fast.cache_clear()
