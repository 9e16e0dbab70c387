"""Start and stop the olah mirror for the tests: 127.0.0.1 only, stopped by PID, bounded start-up."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

OLAH_CONFIG = """
[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{root}/repos"
mirror-scheme = "http"
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
mirrors-path = ["{root}/mirrors"]

[accessibility]
offline = true
"""


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def serve(cmd: list[str], port: int, log_path: Path, timeout: float = 60, **popen):
    """Run a server command in its own process group until the block ends; it must listen on 127.0.0.1:port
    within ``timeout`` seconds. Stopped by its PID (SIGTERM, then SIGKILL)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)
        try:
            wait_for_port(port, timeout, proc)
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextlib.contextmanager
def start_olah(root: Path, port: int, timeout: float = 60):
    """Yield the mirrors folder (``mirrors/models/<org>/<name>`` git repositories) while olah serves it."""
    (root / "mirrors" / "models").mkdir(parents=True)
    (root / "repos").mkdir()
    config = root / "olah.toml"
    config.write_text(OLAH_CONFIG.format(port=port, root=root.as_posix()))
    olah_cli = shutil.which("olah-cli") or str(Path(sys.executable).parent / "olah-cli")
    with serve([olah_cli, "-c", str(config)], port, root / "olah.log", timeout, cwd=root):
        yield root / "mirrors"
