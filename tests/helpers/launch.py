"""Run a script under `accelerate launch` with N CPU processes (gloo on loopback)."""

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(script: str, *args: str, num_processes: int = 2, timeout: int = 300, cwd=None):
    """`accelerate launch --multi_gpu --num_processes N` on CPU; returns the CompletedProcess (check=True)."""
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "GLOO_SOCKET_IFNAME": "lo",
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
    }
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if num_processes > 1:
        launcher += ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1"]
    else:
        launcher += ["--num_processes", "1", "--num_machines", "1"]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    proc = subprocess.run(
        [*launcher, script, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"accelerate launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc
