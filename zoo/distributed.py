"""Gathering tensors across processes while keeping gradients.

`accelerate.utils.gather` (like ``torch.distributed.all_gather``) returns tensors without a ``grad_fn``: a
contrastive loss computed on them would not send gradients back to the other processes' embeddings. The
``GatherLayer`` below is the small autograd function used by the FAIR VICReg / SimSiam and SimCLR codebases:
all-gather in the forward pass, all-reduce (sum) + slice in the backward pass.

Every loss in :mod:`zoo.losses` calls :func:`gather` on its inputs, so under ``torch.distributed`` each process
computes the loss of the *global* batch (identical on every rank). With DistributedDataParallel averaging
parameter gradients over the W ranks, the all-reduce sum in the backward pass makes the final gradient equal to
the single-process gradient of the same global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["GatherLayer", "gather", "world_size", "rank"]


def world_size() -> int:
    """Number of processes in the default group, 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Rank of this process in the default group, 0 when torch.distributed is not initialised."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class GatherLayer(torch.autograd.Function):
    """All-gather with gradients: forward concatenates every rank's tensor, backward returns this rank's slice
    of the all-reduced (summed) gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # x: B x D
        output = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(output, x.contiguous())
        return tuple(output)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        all_grads = torch.stack(grads)  # W x B x D
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B x ...) from all processes along dim 0 (W*B x ...), keeping gradients.

    A no-op in a single process. Every rank must pass the same local batch size.
    """
    if world_size() == 1:
        return x
    return torch.cat(GatherLayer.apply(x), dim=0)
