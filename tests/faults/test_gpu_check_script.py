"""bench/gpu_check.sh keeps going after a failing part and prints that part's error whole (issue 21.7): run with a
stand-in Python that fails one part with a long traceback and succeeds at every other."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"
FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
  *pretrain.py*)
    for i in $(seq 1 60); do echo "Traceback line $i"; done
    echo "RuntimeError: the planted failure" >&2
    exit 3;;
  *) echo "part ok: $*";;
esac
"""


@pytest.mark.timeout(60)
def test_a_failing_part_is_printed_whole_and_the_rest_still_runs(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=50)
    out = proc.stdout
    assert proc.returncode == 1
    assert all(f"Traceback line {i}\n" in out for i in range(1, 61))  # the whole error, not a tail
    assert "RuntimeError: the planted failure" in out
    assert "!! default-run failed (exit 3)" in out
    for later in ("== evaluate", "== throughput-64", "== throughput-256", "== methods", "== tests"):
        assert later in out, later  # every later part ran
    assert "part ok: -m pytest" in out
    assert out.rstrip().endswith("failed parts: default-run")
