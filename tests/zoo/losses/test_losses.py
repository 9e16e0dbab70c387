"""Each loss against a naive float64 loop reference (values and gradients), closed forms, and bad input."""

import math

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


def pair(n=6, d=5, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g, dtype=torch.float64),
    )
    return z1.requires_grad_(requires_grad), z2.requires_grad_(requires_grad)


def assert_same_value_and_grads(ours, ref, inputs, rtol=1e-4, atol=1e-5):
    ours_grads = torch.autograd.grad(ours, inputs)
    ref_grads = torch.autograd.grad(ref, inputs)
    torch.testing.assert_close(ours.double(), ref.double(), rtol=rtol, atol=atol)
    for a, b in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_simclr_matches_loop_reference(tau):
    z1, z2 = pair()
    assert_same_value_and_grads(SimCLRLoss(tau)(z1, z2), reference.simclr(z1, z2, tau), (z1, z2))


def test_simclr_closed_form_identical_orthonormal_views():
    n, tau = 4, 0.5
    z = torch.eye(n, 8)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    assert SimCLRLoss(tau)(z, z).item() == pytest.approx(expected, rel=1e-6)


def test_simclr_is_symmetric():
    z1, z2 = pair(requires_grad=False)
    assert SimCLRLoss()(z1, z2).item() == pytest.approx(SimCLRLoss()(z2, z1).item(), rel=1e-6)


def test_dclw_standard_averages_both_directions_with_detached_weight():
    z1, z2 = pair()
    ref = 0.5 * (
        reference.dclw_direction(z1, z2, 0.1, 0.5, detach_weight=True)
        + reference.dclw_direction(z2, z1, 0.1, 0.5, detach_weight=True)
    )
    assert_same_value_and_grads(DCLWLoss()(z1, z2), ref, (z1, z2))


def test_dclw_paper_mode_is_one_sided_with_weight_gradient():
    z1, z2 = pair()
    ref = reference.dclw_direction(z1, z2, 0.1, 0.5, detach_weight=False)
    assert_same_value_and_grads(DCLWLoss(paper_mode=True)(z1, z2), ref, (z1, z2))
    # and the two modes really differ (the weight's gradient and the second direction matter)
    z1, z2 = pair(seed=1, requires_grad=False)
    assert DCLWLoss(paper_mode=True)(z1, z2).item() != pytest.approx(DCLWLoss()(z1, z2).item(), rel=1e-3)


def test_dclw_standard_is_symmetric():
    z1, z2 = pair(requires_grad=False)
    assert DCLWLoss()(z1, z2).item() == pytest.approx(DCLWLoss()(z2, z1).item(), rel=1e-6)


def test_dclw_uniform_weight_closed_form():
    # identical orthonormal views: all positives equal → w = 1; negatives: 2(N-1) terms of exp(0) = 1
    n, tau = 4, 0.1
    z = torch.eye(n, 8)
    expected = -1 / tau + math.log(2 * (n - 1))
    assert DCLWLoss(tau)(z, z).item() == pytest.approx(expected, rel=1e-6)


def test_simsiam_closed_forms_and_stop_gradient():
    z = torch.randn(5, 8)
    assert SimSiamLoss()(z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)
    a, b = torch.eye(4, 8)[:, :8], torch.roll(torch.eye(4, 8), 4, dims=1)  # orthogonal rows
    assert SimSiamLoss()(a, a, b, b).item() == pytest.approx(0.0, abs=1e-7)
    p1, p2, z1, z2 = (torch.randn(5, 8, requires_grad=True) for _ in range(4))
    SimSiamLoss()(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None  # stop-gradient on the targets
    assert p1.grad is not None and p1.grad.abs().sum() > 0


def test_simsiam_matches_reference():
    p1, p2, z1, z2 = (torch.randn(5, 8, dtype=torch.float64, requires_grad=True) for _ in range(4))
    ref = (
        -0.5
        * sum(
            reference.unit(p1[i]) @ reference.unit(z2[i].detach())
            + reference.unit(p2[i]) @ reference.unit(z1[i].detach())
            for i in range(5)
        )
        / 5
    )
    loss = SimSiamLoss()(p1, p2, z1, z2)
    assert_same_value_and_grads(loss, ref, (p1, p2))
    z_grads = torch.autograd.grad(SimSiamLoss()(p1, p2, z1, z2), (z1, z2), allow_unused=True)
    assert all(g is None or not g.any() for g in z_grads)  # the stop-gradient: nothing reaches z


def test_simsiam_without_stop_gradient_would_differ():
    """The reference is sensitive to the stop-gradient: without it z would get a gradient (guards the test)."""
    p1, p2, z1, z2 = (torch.randn(5, 8, dtype=torch.float64, requires_grad=True) for _ in range(4))
    undetached = -0.5 * (torch.cosine_similarity(p1, z2).mean() + torch.cosine_similarity(p2, z1).mean())
    assert torch.autograd.grad(undetached, z1)[0].abs().sum() > 0


@pytest.mark.parametrize("paper_mode", [False, True])
def test_vicreg_matches_loop_reference(paper_mode):
    z1, z2 = pair(n=6, d=4)
    ref = reference.vicreg(z1, z2, sum_variance=paper_mode)
    assert_same_value_and_grads(VICRegLoss(paper_mode=paper_mode)(z1, z2), ref, (z1, z2))


def test_vicreg_closed_form_identical_collapsed_views():
    # identical, fully collapsed views: invariance 0, covariance 0, variance hinge = 1 - sqrt(eps) per branch
    z = torch.ones(8, 4)
    expected = 25 * (1 - math.sqrt(1e-4))
    assert VICRegLoss()(z, z).item() == pytest.approx(expected, rel=1e-5)
    assert VICRegLoss(paper_mode=True)(z, z).item() == pytest.approx(2 * expected, rel=1e-5)


def test_barlow_matches_batchnorm_reference():
    z1, z2 = pair(n=7, d=4)
    assert_same_value_and_grads(BarlowTwinsLoss()(z1, z2), reference.barlow(z1, z2), (z1, z2))


def test_barlow_is_symmetric_and_near_zero_on_identical_decorrelated_views():
    z1, z2 = pair(requires_grad=False)
    assert BarlowTwinsLoss()(z1, z2).item() == pytest.approx(BarlowTwinsLoss()(z2, z1).item(), rel=1e-6)
    q, _ = torch.linalg.qr(torch.randn(16, 4, dtype=torch.float64))  # orthonormal, zero-mean-ish columns
    q = q - q.mean(0)
    loss = BarlowTwinsLoss(lambda_offdiag=0.0)(q, q)
    assert loss.item() == pytest.approx(0.0, abs=1e-3)


ALL = [SimCLRLoss(), DCLWLoss(), VICRegLoss(), BarlowTwinsLoss()]


@pytest.mark.parametrize("loss", ALL, ids=lambda m: type(m).__name__)
def test_batch_of_one_is_a_clear_error_naming_the_loss(loss):
    with pytest.raises(
        ValueError, match=rf"^{type(loss).__name__} needs a batch of at least 2 samples, got 1"
    ):
        loss(torch.randn(1, 8), torch.randn(1, 8))


@pytest.mark.parametrize("loss", ALL, ids=lambda m: type(m).__name__)
def test_mismatched_shapes_are_a_clear_error_naming_the_loss(loss):
    name = type(loss).__name__
    with pytest.raises(ValueError, match=rf"^{name} expects both views to have the same shape"):
        loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match=rf"^{name} expects two 2-D embeddings"):
        loss(torch.randn(4, 8, 1), torch.randn(4, 8, 1))


@pytest.mark.parametrize("loss", [SimSiamLoss(), BYOLLoss(), MoCoV3Loss()], ids=lambda m: type(m).__name__)
def test_four_input_losses_name_themselves_on_mismatched_shapes(loss):
    with pytest.raises(
        ValueError, match=rf"^{type(loss).__name__} expects both views to have the same shape"
    ):
        loss(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 6), torch.randn(4, 6))


def test_bf16_inputs_give_finite_float32_losses():
    z1, z2 = pair(requires_grad=False)
    for loss in ALL:
        out = loss(z1.bfloat16(), z2.bfloat16())
        assert out.dtype == torch.float32 and torch.isfinite(out)


def test_byol_matches_loop_reference_and_stops_the_target_gradient():
    p1, p2, z1, z2 = (torch.randn(5, 8, dtype=torch.float64, requires_grad=True) for _ in range(4))
    loss = BYOLLoss()(p1, p2, z1, z2)
    assert_same_value_and_grads(loss, reference.byol(p1, p2, z1, z2), (p1, p2))
    grads = torch.autograd.grad(BYOLLoss()(p1, p2, z1, z2), (z1, z2), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    same = torch.randn(4, 8)
    assert BYOLLoss()(same, same, same, same).item() == pytest.approx(0.0, abs=1e-6)  # aligned: 0
    assert BYOLLoss()(same, same, -same, -same).item() == pytest.approx(8.0, abs=1e-5)  # opposite: 2·(2+2)


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_mocov3_matches_loop_reference(tau):
    q1, q2, k1, k2 = (torch.randn(6, 5, dtype=torch.float64, requires_grad=True) for _ in range(4))
    ref = reference.mocov3_contrast(q1, k2, tau) + reference.mocov3_contrast(q2, k1, tau)
    assert_same_value_and_grads(MoCoV3Loss(tau)(q1, q2, k1, k2), ref, (q1, q2))
    grads = torch.autograd.grad(MoCoV3Loss(tau)(q1, q2, k1, k2), (k1, k2), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)  # keys: no gradient
    assert MoCoV3Loss().temperature == 0.2


def test_dino_matches_loop_reference_and_updates_its_center():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    teacher = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    loss_fn = DINOLoss(6, warmup_teacher_temp_fraction=0.0)
    loss_fn.center.copy_(torch.randn(1, 6, generator=g))
    center = loss_fn.center.clone()
    ref = reference.dino(student, teacher, center, 0.1, 0.07)
    assert_same_value_and_grads(loss_fn(student, teacher), ref, student)
    # after the call (computed with the old centre), the centre moved towards the teacher's batch mean
    mean = torch.cat(teacher).mean(dim=0, keepdim=True).float()
    torch.testing.assert_close(loss_fn.center, center * 0.9 + mean * 0.1)


def test_dino_teacher_temperature_warms_up():
    loss_fn = DINOLoss(4)  # 0.04 → 0.07 over the first 30 % of training
    temps = []
    for progress in (0.0, 0.15, 0.3, 0.9):
        loss_fn.set_progress(progress)
        temps.append(float(loss_fn.current_teacher_temp()))  # a device tensor in the step; read here
    assert temps == pytest.approx([0.04, 0.055, 0.07, 0.07])
    assert (loss_fn.student_temp, loss_fn.center_momentum) == (0.1, 0.9)


def test_teacher_student_losses_refuse_bad_input():
    with pytest.raises(ValueError, match="expects 2 teacher"):
        DINOLoss(4)([torch.randn(2, 4)] * 3, [torch.randn(2, 4)])
    with pytest.raises(ValueError, match="same shape"):
        MoCoV3Loss()(torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 2))
