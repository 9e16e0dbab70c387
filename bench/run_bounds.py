"""The bounds of issue 18's run-folder faults, each in a fresh process: time to the one line, peak RSS, exit code.

    python bench/run_bounds.py [--workdir DIR]

Each case runs ``train/pretrain.py`` (the tests' tiny configuration) as its own process and reads the process's
peak resident memory from ``wait4``; the table it prints is the README's. A normal start (imports, data, model, one
step) is measured the same way, for scale.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.train.tiny import args  # noqa: E402

SCRIPT = str(ROOT / "train" / "pretrain.py")
COMMON = ("--max-steps", "6", "--checkpoint-every", "2", "--keep-checkpoints", "3", "--log-every", "1")
COMMON += ("--mixed-precision", "no", "--export-name", "null")


def measure(argv: list[str], env: dict | None = None, preexec=None, on_start=None) -> dict:
    """Run ``pretrain.py argv`` in a fresh process: wall seconds, peak RSS (MiB), exit code, its ERROR line."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *argv],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec,
    )
    extra = on_start(proc) if on_start else {}
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in output.splitlines() if " ERROR " in line or line.startswith("Halted")]
    return {
        "seconds": time.monotonic() - extra.get("signalled_at", start),
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "exit": proc.returncode,
        "line": lines[-1][:160] if lines else "",
        **extra,
    }


def silent_server() -> str:
    """Accepts connections on 127.0.0.1 and never answers (a daemon thread holds them)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held = []

    def accept():
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def weights(path: Path, backbone: str, poison: bool = False) -> Path:
    from safetensors.torch import save_file

    from zoo import create_backbone

    state = create_backbone(backbone).state_dict()
    if poison:
        next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = math.nan
    save_file(state, str(path))
    return path


def sigterm_after_step(out: Path, step: int):
    """SIGTERM as soon as ``step`` is logged; the time is then counted from the signal."""

    def send(proc) -> dict:
        while proc.poll() is None:
            logged = _steps(out)
            if logged and logged[-1] >= step:
                proc.send_signal(signal.SIGTERM)
                return {"signalled_at": time.monotonic(), "signalled_after_step": logged[-1]}
            time.sleep(0.01)
        return {}

    return send


def _steps(out: Path) -> list[int]:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r["step"] for r in records if isinstance(r, dict) and r.get("event") == "step"]


def cases(work: Path) -> dict[str, tuple]:
    halted = work / "halted"
    subprocess.run(
        [sys.executable, SCRIPT, *args(halted, *COMMON), "--halt-at-step", "4"], cwd=ROOT, check=True
    )

    def copy(name: str) -> Path:
        shutil.copytree(halted, work / name, symlinks=True)
        return work / name

    sparse = copy("sparse-record")
    with open(sparse / "checkpoints" / "step_0000004" / "trainer_state.json", "r+b") as f:
        f.truncate(10 * 2**30)  # a 10 GiB record (sparse): refused by its size, never read
    (work / "named" / "checkpoints" / "step_0000001").mkdir(parents=True)
    (work / "named" / "checkpoints" / "step_0000001" / "notes.txt").write_text("notes")
    (work / "a-file").write_text("a file")
    store = work / "some_file"
    store.write_text("not a store")
    silent = silent_server()
    imagenet = ("--init", "imagenet")
    return {
        "the imports alone (--help), for scale": (["--help"],),
        "a normal start (for scale: 1 step)": (args(work / "normal", *COMMON[2:], "--max-steps", "1"),),
        "a new run into checkpoints/step_0000001/notes.txt": (args(work / "named", *COMMON),),
        "--output-dir under a file": (args(work / "a-file" / "run", *COMMON),),
        "a 10 GiB trainer_state.json in the newest checkpoint, --resume": (
            [*args(sparse, *COMMON), "--resume"],
        ),
        "MLflow at a server that never answers": (
            args(work / "m1", *COMMON, "--log-with", "mlflow"),
            {"MLFLOW_TRACKING_URI": silent},
        ),
        "MLflow store file:///some_file": (
            args(work / "m2", *COMMON, "--log-with", "mlflow"),
            {"MLFLOW_TRACKING_URI": store.as_uri()},
        ),
        "--init imagenet, HF_HUB_OFFLINE=1": (
            args(work / "i1", *COMMON, *imagenet),
            {"HF_HUB_OFFLINE": "1", "HF_HOME": str(work / "hf")},
        ),
        "--init imagenet, a Hub that never answers": (
            args(work / "i2", *COMMON, *imagenet),
            {"HF_ENDPOINT": silent, "HF_HOME": str(work / "hf")},
        ),
        "--init-weights with a NaN": (
            args(
                work / "i3",
                *COMMON,
                *imagenet,
                "--init-weights",
                str(weights(work / "nan.st", "test_resnet", True)),
            ),
        ),
        "--init-weights of resnet18 for a resnet10t run": (
            args(
                work / "i4",
                *COMMON,
                "--backbone",
                "resnet10t",
                *imagenet,
                "--init-weights",
                str(weights(work / "r18.st", "resnet18")),
            ),
        ),
        "disk full at the checkpoint (RLIMIT_FSIZE 2.5 MB), --resume": (
            [*args(copy("full"), *COMMON), "--resume"],
            None,
            lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2_500_000, 2_500_000)),
        ),
        "SIGTERM after step 5 of 30 (seconds from the signal to the exit)": (
            args(work / "term", *COMMON[2:], "--max-steps", "30", "--checkpoint-every", "10"),
            None,
            None,
            sigterm_after_step(work / "term", 5),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run_bounds.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, help="where the runs go (default: a temporary folder, removed)"
    )
    options = parser.parse_args(argv)
    work = options.workdir or Path(tempfile.mkdtemp(prefix="run-bounds-"))
    try:
        print("| case | exit | seconds | peak RSS MiB | line |\n|---|---|---|---|---|")
        for name, case in cases(work).items():
            result = measure(*case)
            term = work / "term"
            if "signalled_after_step" in result:
                newest = sorted((term / "checkpoints").glob("step_*"))[-1].name
                result["line"] += f" [signalled after step {result['signalled_after_step']}, newest {newest}]"
            print(
                f"| {name} | {result['exit']} | {result['seconds']:.1f} | {result['peak_rss_mib']:.0f} | "
                f"{result['line']} |",
                flush=True,
            )
    finally:
        if options.workdir is None:
            shutil.rmtree(work, ignore_errors=True)  # the temporary folder made above
    return 0


if __name__ == "__main__":
    sys.exit(main())
