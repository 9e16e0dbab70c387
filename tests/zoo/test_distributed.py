"""Gathered losses: a 2-process run equals a 1-process run over the same global batch (values and grads)."""

import copy
import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tests.helpers import dist_losses
from tests.helpers.launch import accelerate_launch
from zoo.distributed import gather, rank, world_size

HELPERS = Path(__file__).parents[1] / "helpers"


def test_gather_is_a_noop_in_one_process():
    x = torch.randn(3, 4, requires_grad=True)
    assert world_size() == 1 and rank() == 0 and gather(x) is x


@pytest.mark.distributed
def test_two_process_losses_equal_one_process(tmp_path):
    out = tmp_path / "two.json"
    accelerate_launch(str(HELPERS / "dist_losses.py"), str(out), num_processes=2)
    two = json.loads(out.read_text())
    assert two["world_size"] == 2
    one = dist_losses.run(Accelerator(cpu=True))
    for name, single in one.items():
        multi = two["results"][name]
        if name not in dist_losses.PER_SAMPLE:  # gathered losses: every rank computes the same global loss
            assert multi["loss_per_rank"][0] == pytest.approx(multi["loss_per_rank"][1], rel=1e-6), name
        assert multi["loss"] == pytest.approx(single["loss"], rel=1e-5), name
        torch.testing.assert_close(
            torch.tensor(multi["grad"]), torch.tensor(single["grad"]), rtol=1e-4, atol=1e-6
        )


@pytest.fixture
def mirrored_world(monkeypatch):
    """A 2-process world in one process: rank 0, whose partner holds an identical copy of every tensor, so an
    all-reduce sum doubles and an all-gather repeats. The reference for this world is one process on the batch
    concatenated with itself, which checks the collective maths of GatherLayer / GlobalBatchNorm (values,
    gradients and running statistics) without launching anything."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: t.mul_(2))

    def all_gather(out, x, *a, **k):
        for slot in out:
            slot.copy_(x)

    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    assert world_size() == 2 and rank() == 0


def test_rank_is_the_process_groups(mirrored_world, monkeypatch):
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    assert rank() == 1


def test_gather_in_a_mirrored_world_keeps_the_global_gradient(mirrored_world):
    torch.manual_seed(0)
    x = torch.randn(3, 4, requires_grad=True)
    weights = torch.randn(6, 4)
    loss = (gather(x) * weights).pow(2).sum()  # any global loss of the 6 gathered rows
    loss.backward()
    reference = torch.cat([x, x]).detach().requires_grad_()
    ((reference * weights).pow(2).sum()).backward()
    # both ranks compute the same global loss: GatherLayer sums their gradients of this rank's rows (x2), and
    # DDP's average over the 2 ranks then divides by 2; before that average, rank 0 holds 2x its rows' gradient
    torch.testing.assert_close(x.grad, 2 * reference.grad[:3])


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (4, 3)], ids=["conv-2d", "projector-1d"])
def test_global_batchnorm_in_a_mirrored_world_equals_batchnorm_on_the_global_batch(
    mirrored_world, momentum, shape
):
    from zoo.distributed import GlobalBatchNorm

    torch.manual_seed(0)
    # channel 2's variance is below eps, and its mean 0 (float32 cancellation of x - mean would swamp the test)
    scale, shift = (
        torch.tensor(v).view(1, 3, *[1] * (len(shape) - 2)) for v in ([3.0, 1.0, 1e-3], [2.0, -1.0, 0.0])
    )
    batches = [(torch.randn(shape) * scale + shift).requires_grad_() for _ in range(2)]
    upstream = torch.randn(shape)
    plain = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(3, momentum=momentum)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5), plain.bias.uniform_(-1, 1)
    reference_bn = copy.deepcopy(plain)
    ours = GlobalBatchNorm.convert(torch.nn.Sequential(plain)).train()[0]
    assert isinstance(ours, GlobalBatchNorm) and ours.weight is plain.weight

    x = batches[0]
    y = ours(x)
    (y * upstream).sum().backward()
    both = torch.cat([x, x]).detach().requires_grad_()
    y_ref = reference_bn(both)
    (y_ref * torch.cat([upstream, upstream])).sum().backward()
    torch.testing.assert_close(y, y_ref[:4])
    # float32 summation order; channel 2's 1/sigma of ~300 magnifies it (measured: <= 1.2e-4 relative)
    torch.testing.assert_close(x.grad, both.grad[:4], rtol=1e-3, atol=1e-4)
    # parameters: this rank's share of the global gradient (DDP's average over the 2 ranks restores the rest)
    torch.testing.assert_close(ours.weight.grad, reference_bn.weight.grad / 2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, reference_bn.bias.grad / 2, rtol=1e-4, atol=1e-5)

    with torch.no_grad():  # a second step: momentum=None is a cumulative average, 1 / num_batches_tracked
        ours(batches[1]), reference_bn(torch.cat([batches[1], batches[1]]))
    torch.testing.assert_close(ours.running_mean, reference_bn.running_mean)
    torch.testing.assert_close(ours.running_var, reference_bn.running_var)  # unbiased over the global batch
    assert ours.num_batches_tracked.item() == reference_bn.num_batches_tracked.item() == 2
    ours.eval()
    torch.testing.assert_close(ours(x), reference_bn.eval()(x))  # eval: the running statistics, locally


def test_global_batchnorm_keeps_the_input_dtype(mirrored_world):
    from zoo.distributed import GlobalBatchNorm

    bn = GlobalBatchNorm(3).train()
    x = torch.randn(4, 3, dtype=torch.bfloat16)
    assert bn(x).dtype == torch.bfloat16


def test_global_batchnorm_conversion_keeps_every_setting():
    from zoo.distributed import GlobalBatchNorm

    plain = torch.nn.BatchNorm1d(5, eps=1e-3, momentum=0.3, affine=False, track_running_stats=False)
    ours = GlobalBatchNorm.convert(plain.eval())
    assert (ours.num_features, ours.eps, ours.momentum) == (5, 1e-3, 0.3)
    assert not ours.affine and not ours.track_running_stats and ours.weight is None and not ours.training
    assert GlobalBatchNorm.convert(ours) is ours  # already converted


def test_global_batchnorm_refuses_a_one_dimensional_input():
    from zoo.distributed import GlobalBatchNorm

    with pytest.raises(ValueError, match="at least a 2-D input"):
        GlobalBatchNorm(3)(torch.randn(3))
