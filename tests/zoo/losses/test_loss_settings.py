"""The losses' settings reach the computation, bad settings are refused by name, and the public terms keep their
papers' defaults; each expectation is a hand computation."""

import math
import warnings

import pytest
import torch

from zoo.losses import BarlowTwinsLoss, DCLWLoss, DINOLoss, MoCoV3Loss, SimCLRLoss, VICRegLoss
from zoo.losses.barlow_twins import cross_correlation
from zoo.losses.terms import off_diagonal
from zoo.losses.vicreg import variance_term

TWO_POINTS = torch.tensor([[0.0], [2.0]])  # one dimension: mean 1, biased variance 1, unbiased variance 2


def test_variance_term_default_eps_is_vicregs():
    z = torch.tensor([[0.0], [1.0]])  # unbiased variance 0.5
    assert variance_term(z).item() == pytest.approx(1 - math.sqrt(0.5 + 1e-4), rel=1e-6)  # VICReg: ε = 1e-4


def test_vicreg_eps_reaches_both_branches():
    z = torch.ones(8, 4)  # collapsed: each branch's hinge is 1 - sqrt(ε)
    assert VICRegLoss(eps=0.25)(z, z).item() == pytest.approx(25 * (1 - math.sqrt(0.25)), rel=1e-6)


def test_cross_correlation_default_eps_is_batchnorms():
    c = cross_correlation(TWO_POINTS, TWO_POINTS)  # standardised to ±1 / sqrt(1 + ε)
    assert c.item() == pytest.approx(1 / (1 + 1e-5), rel=1e-7)


def test_barlow_twins_eps_reaches_the_cross_correlation():
    loss = BarlowTwinsLoss(lambda_offdiag=0.0, eps=1.0)(TWO_POINTS, TWO_POINTS)  # C = 1 / (1 + 1)
    assert loss.item() == pytest.approx((1 - 0.5) ** 2)


@pytest.mark.parametrize(("temperature", "sigma"), [(0.0, 0.5), (-0.1, 0.5), (0.1, 0.0), (0.1, -1.0)])
def test_dclw_refuses_non_positive_settings(temperature, sigma):
    with pytest.raises(
        ValueError, match=rf"^temperature and sigma must be > 0, got {temperature} and {sigma}$"
    ):
        DCLWLoss(temperature=temperature, sigma=sigma)


@pytest.mark.parametrize("setting", ["student_temp", "teacher_temp", "warmup_teacher_temp"])
@pytest.mark.parametrize("value", [0.0, -0.04])
def test_dino_refuses_non_positive_temperatures(setting, value):
    with pytest.raises(ValueError, match="^temperatures must be > 0$"):
        DINOLoss(4, **{setting: value})


def test_dino_refuses_outputs_of_another_shape_and_names_them():
    student = [torch.randn(2, 4, 1)] * 2  # N x K x 1: one dimension too many
    with pytest.raises(
        ValueError, match=r"^DINOLoss expects N x 4 outputs \(out_dim\), got shapes \[\(2, 4, 1\)"
    ):
        DINOLoss(4)(student, [torch.randn(2, 4)] * 2)
    with pytest.raises(ValueError, match=r"got shapes \[\(2, 5\), \(2, 5\)\]"):
        DINOLoss(4)([torch.randn(2, 5)] * 2, [torch.randn(2, 4)] * 2)


def test_dino_loss_computes_without_warnings():
    """Every softmax names its dimension (an implicit one is deprecated and warns)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = DINOLoss(4)([torch.randn(3, 4) for _ in range(4)], [torch.randn(3, 4) for _ in range(2)])
    assert torch.isfinite(loss)


def test_off_diagonal_refuses_a_non_square_matrix():
    with pytest.raises(ValueError, match=r"^off_diagonal expects a square matrix, got \(2, 3\)$"):
        off_diagonal(torch.zeros(2, 3))


@pytest.mark.parametrize("loss", [SimCLRLoss, MoCoV3Loss])
def test_temperature_must_be_positive(loss):
    with pytest.raises(ValueError, match=r"^temperature must be > 0, got 0$"):
        loss(temperature=0)
