"""Loss arithmetic in full precision, whatever the autocast state and the inputs' dtype.

Under autocast, ``.float()`` is not enough: CUDA (and CPU) autocast cast the inputs of ``@`` / ``mm`` / ``bmm`` back
to bf16, so a similarity or covariance matrix would be computed in bf16 after all (PyTorch's AMP docs: "ops that
can autocast to lower precision"; the recipe there runs such regions with ``autocast(enabled=False)`` and casts
the inputs). And ``.float()`` lowers float64 inputs. So a loss's body runs with autocast off, on its inputs cast to
``promote_types(input dtype, float32)``: bf16/fp16 → fp32, fp32 stays, fp64 stays.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch

__all__ = ["full_precision", "upcast"]


def upcast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The floating tensors cast to their common dtype promoted with float32 (never below an input's precision);
    others unchanged."""
    floating = [t for t in tensors if t.is_floating_point()]
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in floating), torch.float32)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)


def _leaves(args: tuple) -> Iterator[torch.Tensor]:
    for a in args:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, list | tuple):
            yield from (t for t in a if isinstance(t, torch.Tensor))


def _rebuild(args: tuple, cast: Iterator[torch.Tensor]) -> tuple:
    """``args`` with each tensor (also inside lists) replaced by the next of ``cast``, in :func:`_leaves` order."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(next(cast))
        elif isinstance(a, list | tuple):
            out.append(type(a)(next(cast) if isinstance(t, torch.Tensor) else t for t in a))
        else:
            out.append(a)
    return tuple(out)


def _autocast_off(tensors: list[torch.Tensor]) -> contextlib.AbstractContextManager:
    device_type = tensors[0].device.type if tensors else "cpu"
    if not torch.amp.is_autocast_available(device_type):  # e.g. meta: nothing to turn off
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


def full_precision(function: Callable) -> Callable:
    """Decorate a loss (a module's ``forward`` or a function): its body runs with autocast off, on its positional
    tensor arguments (also inside lists) cast by :func:`upcast`; other arguments pass unchanged."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        tensors = list(_leaves(args))
        with _autocast_off(tensors):
            return function(*_rebuild(args, iter(upcast(*tensors))), **kwargs)

    return wrapper
