"""SIGTERM, what schedulers send before they kill a job (SLURM at the time limit or on preemption, Kubernetes,
torchrun passing on its own SIGTERM): finish the step, checkpoint it, exit with one line.

While the training loop runs, SIGTERM only sets a flag; the loop checks it after each optimizer step, every process
agreeing on the same step (one max all-reduce of a CPU flag over gloo: no GPU synchronisation), checkpoints at that
step and stops. Outside the loop (setup, the final evaluation) nothing is lost by stopping at once, so SIGTERM
raises :class:`Terminated` there. Later SIGTERMs are ignored: torchrun forwards the scheduler's signal to workers
that already got it, and a second one must not break the checkpoint being written.
"""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist
from accelerate import Accelerator

__all__ = ["TERMINATED_EXIT", "Terminated", "SigtermStop"]

TERMINATED_EXIT = (
    143  # 128 + SIGTERM: the shell's code for a process ended by SIGTERM (errors exit 2, Ctrl-C 130)
)


class Terminated(BaseException):  # noqa: N818 (like KeyboardInterrupt: not caught by `except Exception`)
    """SIGTERM arrived outside the training loop."""


class SigtermStop:
    """While installed (a context manager; main thread only), SIGTERM requests a stop at the end of the current
    step (``in_loop``) or raises :class:`Terminated` (elsewhere)."""

    def __init__(self):
        self.requested = False
        self.in_loop = False
        self._raised = False
        self._previous = None
        self._group = None

    def __enter__(self) -> SigtermStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.in_loop:  # no logging here: a handler may interrupt the logging module holding its lock
            self.requested = True
        elif not self._raised:
            self._raised = True
            raise Terminated()

    def connect(self, accelerator: Accelerator) -> None:
        """A gloo group for the agreement when the processes talk NCCL (GPU tensors would synchronise the host)."""
        if accelerator.num_processes > 1 and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")

    def agreed(self, accelerator: Accelerator) -> bool:
        """Whether any process was asked to stop (all processes call this after the same step)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([int(self.requested)], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(flag.item())
