"""Worker: every loss on a fixed global batch split over the processes; writes loss values and the
DDP-averaged gradients of a linear model to a JSON file (rank 0). Also importable for the 1-process run."""

import json
import sys

import torch
from accelerate import Accelerator

from zoo.losses import BarlowTwinsLoss, DCLWLoss, SimCLRLoss, SimSiamLoss, VICRegLoss

LOSSES = {
    "simclr": SimCLRLoss(),
    "dclw": DCLWLoss(),
    "dclw_paper": DCLWLoss(paper_mode=True),
    "vicreg": VICRegLoss(),
    "barlow": BarlowTwinsLoss(),
    "simsiam": SimSiamLoss(),
}
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
        loss = loss_fn(z1, z1, z2, z2) if name == "simsiam" else loss_fn(z1, z2)
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
