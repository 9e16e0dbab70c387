"""Run a script under `accelerate launch` with N CPU processes (gloo on loopback)."""

import os
import subprocess
import sys


def launch_command(script: str, *args: str, num_processes: int = 2) -> list[str]:
    """The `accelerate launch` command line for N CPU processes (gloo on loopback)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if num_processes > 1:
        launcher += ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1"]
    else:
        launcher += ["--num_processes", "1", "--num_machines", "1"]
    # port 0: torchrun's rendezvous store binds a free port itself (no pick-then-bind race between tests)
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    return [*launcher, script, *args]


def accelerate_launch(script: str, *args: str, num_processes: int = 2, timeout: int = 300, cwd=None):
    """`accelerate launch --multi_gpu --num_processes N` on CPU; returns the CompletedProcess (check=True)."""
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "GLOO_SOCKET_IFNAME": "lo",
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        launch_command(script, *args, num_processes=num_processes),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"accelerate launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc
