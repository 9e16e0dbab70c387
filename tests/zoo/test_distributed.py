"""Gathered losses: a 2-process run equals a 1-process run over the same global batch (values and grads)."""

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tests.helpers import dist_losses
from tests.helpers.launch import accelerate_launch
from zoo.distributed import gather, world_size

HELPERS = Path(__file__).parents[1] / "helpers"


def test_gather_is_a_noop_in_one_process():
    x = torch.randn(3, 4, requires_grad=True)
    assert world_size() == 1 and gather(x) is x


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
