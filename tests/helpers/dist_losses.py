"""Worker: every loss on a fixed global batch split over the processes; writes loss values and the
DDP-averaged gradients of a linear model to a JSON file (rank 0). Also importable for the 1-process run."""

import json
import sys

import torch
from accelerate import Accelerator

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

LOSSES = {
    "simclr": SimCLRLoss,
    "dclw": DCLWLoss,
    "dclw_paper": lambda: DCLWLoss(paper_mode=True),
    "vicreg": VICRegLoss,
    "barlow": BarlowTwinsLoss,
    "simsiam": SimSiamLoss,
    "byol": BYOLLoss,
    "mocov3": MoCoV3Loss,
    "dino": lambda: DINOLoss(5, warmup_teacher_temp_fraction=0.0),
}
PER_SAMPLE = {"simsiam", "byol"}  # means of per-sample terms: each process's loss is its own half's mean


def call(name, loss_fn, z1, z2):
    if name in ("simsiam", "byol", "mocov3"):
        return loss_fn(z1, z2, z2, z1)  # predictions / queries and targets / keys
    if name == "dino":
        return loss_fn([z1, z2, 0.5 * z1], [z2, z1])
    return loss_fn(z1, z2)


GLOBAL_BATCH, IN_DIM, OUT_DIM = 8, 6, 5


def run(accelerator: Accelerator) -> dict:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2, GLOBAL_BATCH, IN_DIM, generator=g)
    per_rank = GLOBAL_BATCH // accelerator.num_processes
    rows = slice(accelerator.process_index * per_rank, (accelerator.process_index + 1) * per_rank)
    results = {}
    for name, loss_fn in LOSSES.items():
        torch.manual_seed(1)
        model = accelerator.prepare(torch.nn.Linear(IN_DIM, OUT_DIM))
        z1, z2 = model(x1[rows]), model(x2[rows])
        loss = call(name, loss_fn(), z1, z2)

        accelerator.backward(loss)
        weight = accelerator.unwrap_model(model).weight
        losses = accelerator.gather(loss.detach().reshape(1))
        results[name] = {
            "loss": losses.mean().item(),
            "loss_per_rank": losses.tolist(),
            "grad": weight.grad.tolist(),
        }
    return results


if __name__ == "__main__":
    accelerator = Accelerator(cpu=True)
    out = run(accelerator)
    if accelerator.is_main_process:
        with open(sys.argv[1], "w") as f:
            json.dump({"world_size": accelerator.num_processes, "results": out}, f)
