"""Python code run in a fresh process with a bare environment (for process-wide settings such as the allocator's),
its last stdout line read as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_json(code: str, *args: str, **env: str):
    """``python -c code args...`` with only PATH, PYTHONPATH (this checkout), one OpenMP thread and ``env``."""
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env={**base, **env}, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
