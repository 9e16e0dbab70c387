"""kill -9 of a pre-training run at a seeded random step, then --resume: the final weights equal an uninterrupted
run's bit for bit and every step is logged exactly once. One process and two (gloo, CPU), three kills each."""

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.launch import launch_command
from tests.train.tiny import args, metrics

ROOT = Path(__file__).resolve().parents[2]
STEPS = 30
COMMON = ("--max-steps", str(STEPS), "--checkpoint-every", "3", "--log-every", "1", "--mixed-precision", "no")


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        if '"event": "step"' in line and line.endswith("}"):
            steps.append(int(line.split('"step": ')[1].split(",")[0]))
    return steps


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once (torchrun starts its workers in sessions of their own,
    so killing the launcher's process group would leave them running)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def run(out: Path, num_processes: int, *extra: str, kill_after_step: int | None = None, timeout: float = 300):
    """Run a pre-training (``num_processes`` via accelerate launch); with ``kill_after_step``, SIGKILL its whole
    process group as soon as that step is logged. Returns the exit code (-9 when killed)."""
    cmd = launch_command(
        str(ROOT / "train" / "pretrain.py"), *args(out, *COMMON, *extra), num_processes=num_processes
    )
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_after_step is not None and any(s >= kill_after_step for s in logged_steps(out)):
                kill_tree(proc.pid)
                proc.wait(timeout=30)
                return proc.returncode
            time.sleep(0.005)
        if proc.poll() is None:
            raise TimeoutError(f"{cmd} ran past {timeout} s")
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(timeout=30)
        output = proc.stdout.read().decode(errors="replace")
        proc.stdout.close()
    assert proc.returncode == 0, output[-4000:]
    return 0


@pytest.mark.distributed
@pytest.mark.parametrize("num_processes", [1, 2])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, num_processes):
    run(tmp_path / "straight", num_processes)
    reference = load_file(tmp_path / "straight" / "encoder.safetensors")
    kill_steps = random.Random(num_processes).sample(range(2, STEPS - 2), 3)
    for kill_step in kill_steps:
        out = tmp_path / f"killed-at-{kill_step}"
        assert run(out, num_processes, kill_after_step=kill_step) == -signal.SIGKILL
        assert not (out / "encoder.safetensors").exists(), "the run finished before it was killed"
        run(out, num_processes, "--resume")
        resumed = load_file(out / "encoder.safetensors")
        assert resumed.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(resumed[key], value), f"killed at {kill_step}: {key} differs"
        assert logged_steps(out) == list(range(1, STEPS + 1)), (
            f"killed at {kill_step}: steps logged twice or lost"
        )
        evals = [m["step"] for m in metrics(out) if m["event"] == "eval"]
        assert evals == sorted(set(evals)), evals
