"""Every loss computes in full precision under autocast and never below its inputs' precision (issue 21.2).

CPU autocast, like CUDA's, runs ``mm`` / ``matmul`` in bf16 even on inputs made float32 by ``.float()``; a loss's
similarity or covariance matrix would then carry bf16's 3 significant digits. The reference is the same loss on
float32 inputs without autocast (and, for float64 inputs, the naive float64 loop references of ``reference.py``).
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.zoo.losses import reference
from zoo.losses import (
    BarlowTwinsLoss,
    BYOLLoss,
    DCLWLoss,
    DINOLoss,
    MoCoV3Loss,
    SimCLRLoss,
    SimSiamLoss,
    VICRegLoss,
)
from zoo.losses.barlow_twins import cross_correlation
from zoo.losses.byol import normalized_mse
from zoo.losses.vicreg import covariance_term, invariance_term, variance_term

D = 16
LOSSES = {  # name: (loss, number of N x D inputs, whether the inputs go in as two lists (DINO))
    "simclr": (SimCLRLoss(), 2),
    "dclw": (DCLWLoss(), 2),
    "dclw-paper": (DCLWLoss(paper_mode=True), 2),
    "vicreg": (VICRegLoss(), 2),
    "barlowtwins": (BarlowTwinsLoss(), 2),
    "simsiam": (SimSiamLoss(), 4),
    "byol": (BYOLLoss(), 4),
    "mocov3": (MoCoV3Loss(), 4),
    "dino": (DINOLoss(D), 6),
}


def _inputs(count: int, dtype=torch.float32, n: int = 12) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(count)
    return [torch.randn(n, D, generator=g, dtype=torch.float64).to(dtype) for _ in range(count)]


def _call(name: str, inputs: list[torch.Tensor]) -> torch.Tensor:
    loss = copy.deepcopy(LOSSES[name][0])  # DINO's centre moves with each call: a fresh one each time
    if name == "dino":
        loss.set_progress(0.1)  # in the teacher-temperature warm-up
        return loss(inputs[:4], inputs[4:])
    return loss(*inputs)


@pytest.mark.parametrize("name", LOSSES)
def test_under_bf16_autocast_each_loss_equals_its_float32_value(name):
    inputs = _inputs(LOSSES[name][1])
    plain = _call(name, inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = _call(name, inputs)
        from_bf16_model = _call(name, [t.bfloat16() for t in inputs])  # what a bf16 forward hands over
    assert under_autocast.dtype == from_bf16_model.dtype == torch.float32
    torch.testing.assert_close(under_autocast, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        from_bf16_model, _call(name, [t.bfloat16().float() for t in inputs]), rtol=0, atol=0
    )


@pytest.mark.parametrize("name", LOSSES)
def test_float64_inputs_give_float64_results(name):
    inputs = _inputs(LOSSES[name][1], torch.float64)
    out = _call(name, inputs)
    assert out.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _call(name, inputs).dtype == torch.float64


def test_float64_losses_match_the_float64_loop_references_to_float64_precision():
    z1, z2, z3, z4 = _inputs(4, torch.float64, n=6)
    pairs = [
        (SimCLRLoss(0.5)(z1, z2), reference.simclr(z1, z2, 0.5)),
        (VICRegLoss()(z1, z2), reference.vicreg(z1, z2)),
        (BarlowTwinsLoss()(z1, z2), reference.barlow(z1, z2)),
        (BYOLLoss()(z1, z2, z3, z4), reference.byol(z1, z2, z3, z4)),
        (
            MoCoV3Loss(0.2)(z1, z2, z3, z4),
            reference.mocov3_contrast(z1, z4, 0.2) + reference.mocov3_contrast(z2, z3, 0.2),
        ),
    ]
    for ours, ref in pairs:
        torch.testing.assert_close(ours, ref.double(), rtol=1e-12, atol=1e-12)


def test_byol_of_identical_float64_vectors_is_exactly_zero():
    same = _inputs(1, torch.float64)[0]
    assert BYOLLoss()(same, same, same, same).item() == 0.0
    assert BYOLLoss()(same.float(), same.float(), same.float(), same.float()).item() == 0.0  # float32 too


def test_the_public_loss_terms_keep_their_inputs_precision_under_autocast():
    z1, z2 = _inputs(2)
    terms = [
        lambda a, b: cross_correlation(a, b),
        normalized_mse,
        invariance_term,
        lambda a, b: variance_term(a) + covariance_term(b),
    ]
    for term in terms:
        plain = term(z1, z2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(term(z1, z2), plain, rtol=1e-6, atol=1e-6)
        assert term(z1.double(), z2.double()).dtype == torch.float64
