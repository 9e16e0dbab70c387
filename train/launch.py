"""``medssl-pretrain --processes N``: N local processes that end like one program — its own one-line error and exit
code, not a launcher's traceback.

``accelerate launch`` reports a child's non-zero exit by raising: ``subprocess.CalledProcessError`` for one process,
torch elastic's ``ChildFailedError`` (a 30-line report) for several, so a mistyped path or a Ctrl-C ends in a
traceback after the program's useful line. This launcher starts the same processes through the launcher that
``accelerate launch --multi_gpu`` itself calls (``torch.distributed.launcher.elastic_launch``, a standalone c10d
rendezvous whose store binds a free port chosen by the OS: no pick-then-bind race between concurrent runs), waits for
them, and exits with the first failing process's exit code (130 for Ctrl-C, 143 for SIGTERM, as a single process).
Accelerate in each child reads the rendezvous environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) as under
``accelerate launch``: NCCL on GPUs; gloo on CPUs (``ACCELERATE_USE_CPU``, which ``accelerate launch --cpu`` sets too).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid

import torch

__all__ = ["launch"]


def launch(module: str, argv: list[str], processes: int) -> int:
    """Run ``python -m module *argv`` in ``processes`` local processes; their exit code (0 when all succeed)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not torch.cuda.is_available():
        # Accelerate runs several CPU processes as one group only when told they are CPU ones
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
        # the cores shared out (Accelerate would otherwise set 1 thread per process, with a warning)
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    # the launcher's own report of a failure is a traceback-sized log: each process prints its own line instead
    for name in list(logging.root.manager.loggerDict):  # torch sets each elastic logger's level itself
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"medssl-{uuid.uuid4().hex}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # port 0: the store binds a free port itself
        local_addr="127.0.0.1",  # one machine: the processes meet on the loopback interface
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", module, *argv)
    except ChildFailedError as e:
        return _exit_code(min(e.failures.values(), key=lambda failure: failure.timestamp).exitcode)
    except SignalException as e:  # Ctrl-C or SIGTERM to the launcher: the processes got it too and have ended
        return 128 + int(e.sigval)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return 0


def _exit_code(code: int) -> int:
    """A process killed by signal ``s`` reports ``-s``: the shell's convention is ``128 + s``."""
    return 128 - code if code < 0 else code
