"""``medssl-pretrain --processes N``: N processes that train as one group and end like one program (its one-line
error and exit code, never a launcher's traceback) — issue 19.15."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "train" / "pretrain.py")
TINY = ("--max-steps", "2", "--eval-every", "2", "--progress", "false", "--export-name", "null")


def pretrain(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    outside = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}  # not under a launcher
    env = {**outside, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finished(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.mark.timeout(300)
def test_two_processes_train_as_one_group(tmp_path):
    code, out, err = finished(pretrain("--processes", "2", *TINY, "--output-dir", str(tmp_path / "run")))
    assert code == 0, err[-3000:]
    # one group of two: only its main process reports (two separate one-process runs would print two result lines)
    assert out.count("kNN test accuracy") == 1, out
    assert "Traceback" not in err


@pytest.mark.timeout(300)
def test_a_failing_run_ends_with_its_own_line_and_exit_code(tmp_path):
    empty = tmp_path / "archive"
    (empty / "a").mkdir(parents=True)
    proc = pretrain(
        "--processes", "2", "--dataset", "folder", "--data-root", str(empty), *TINY,
        "--output-dir", str(tmp_path / "run"),
    )  # fmt: skip
    code, out, err = finished(proc)
    assert code == 2, err[-3000:]
    assert "found 0 image(s)" in err
    assert "Traceback" not in err and "ChildFailedError" not in err, err[-3000:]
    assert not (tmp_path / "run").exists()  # the failed setup removed the folder it created


@pytest.mark.timeout(300)
def test_ctrl_c_ends_every_process_with_130_and_no_traceback(tmp_path):
    run = tmp_path / "run"
    proc = pretrain(
        "--processes", "2", "--max-steps", "10000", "--progress", "false", "--export-name", "null",
        "--output-dir", str(run),
    start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 200
    while not (run / "metrics.jsonl").is_file() or '"step"' not in (run / "metrics.jsonl").read_text():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no training step within 200 s"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    code, out, err = finished(proc, timeout=120)
    assert code == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err, err[-3000:]


def test_processes_under_accelerate_launch_is_refused_in_one_line(tmp_path):
    proc = pretrain(
        "--processes", "2", *TINY, "--output-dir", str(tmp_path / "run"),
        env={"ACCELERATE_MIXED_PRECISION": "no"},  # what `accelerate launch` sets in its processes
    )  # fmt: skip
    code, out, err = finished(proc)
    assert code == 2
    assert "--processes starts its own processes" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_processes_must_be_a_positive_number(value, capsys):
    from medssl_zoo.train.config import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--processes", value])
    assert "--processes" in capsys.readouterr().err
