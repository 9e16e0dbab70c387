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

__all__ = ["GatherLayer", "GlobalBatchNorm", "gather", "world_size", "rank"]


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


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of every rank's copy flows back to every contribution."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across processes, on any device.

    ``torch.nn.SyncBatchNorm`` only runs on GPUs; this is the same computation (Ioffe & Szegedy 2015, Alg. 1,
    with the mean, then the biased variance around it, all-reduced over processes) for multi-process CPU runs, so that a run on N
    processes normalises exactly like one process on the global batch. In one process, or in eval mode, it is
    a plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least a 2-D input (N x C x ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        c = x.shape[1]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        # two passes over the global batch (mean, then the mean squared deviation from it): sums of squares
        # minus squared sums lose digits to cancellation, enough to show in a 2-vs-1-process comparison
        count = torch.full(
            (1,), x.numel() / c, dtype=torch.float32, device=x.device
        )  # made there: no host copy
        totals = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))  # C + 1
        n = totals[-1]
        mean = totals[:c] / n  # C
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims)) / n  # C, biased (used to normalise)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                # cumulative average without momentum: the weight stays on the device (no .item() read-back)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else (1 / self.num_batches_tracked).to(mean.dtype)
                )
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1), m)  # unbiased, as BatchNorm keeps it
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @classmethod
    def convert(cls, module: torch.nn.Module) -> torch.nn.Module:
        """Replace every BatchNorm layer of ``module`` (like ``SyncBatchNorm.convert_sync_batchnorm``)."""
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            new = cls(
                module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
            )
            new.load_state_dict(module.state_dict())
            if (
                module.affine
            ):  # the same Parameter objects (as SyncBatchNorm's conversion): requires_grad kept
                new.weight, new.bias = module.weight, module.bias

            new.train(module.training)
            return new
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child))
        return module
