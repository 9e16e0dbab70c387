"""Start and stop the test servers (olah mirror, the demo): 127.0.0.1 only, stopped by PID, bounded start-up.

A free port is picked right before the server binds it, and the server counts as up only once *its own* process
(or a child of it) listens there: a port taken by someone else in between is detected (the server exits or another
process holds the port) and the start is retried on a new port, never mistaken for success.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

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


class PortTaken(RuntimeError):
    """The server could not take its port (another process holds it)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` or one of its descendants listens on ``port``."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections("inet")):
                return True

    return False


def wait_for_listener(port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Until ``proc`` (or a child) listens on 127.0.0.1:``port``; PortTaken when it exits or someone else does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PortTaken(f"server exited with {proc.returncode} (port {port} taken?)")
        if _listens(proc.pid, port):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the server did not listen on 127.0.0.1:{port} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def serve(make_cmd, log_path: Path, timeout: float = 60, port: int | None = None, **popen):
    """Run ``make_cmd(port)`` in its own process group until the block ends, on ``port`` or a free port that the
    server itself must be listening on within ``timeout`` seconds (a free port that was taken meanwhile is retried
    with another). Yields the port. Stopped by its PID (SIGTERM, then SIGKILL)."""
    attempts = 1 if port else 5
    for attempt in range(attempts):
        port = port or free_port()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                make_cmd(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen
            )
        try:
            wait_for_listener(port, proc, timeout)
        except PortTaken:
            _stop(proc)
            if attempt == attempts - 1:
                raise
            port = None
            continue
        except BaseException:
            _stop(proc)
            raise
        try:
            yield port
        finally:
            _stop(proc)
        return


@contextlib.contextmanager
def start_olah(root: Path, port: int | None = None, timeout: float = 60):
    """Yield (url, mirrors folder: ``mirrors/models/<org>/<name>`` git repositories) while olah serves it, on
    ``port`` or a free one."""
    (root / "mirrors" / "models").mkdir(parents=True)
    (root / "repos").mkdir()
    olah_cli = shutil.which("olah-cli") or str(Path(sys.executable).parent / "olah-cli")

    def command(port: int) -> list[str]:
        config = root / f"olah-{port}.toml"
        config.write_text(OLAH_CONFIG.format(port=port, root=root.as_posix()))
        return [olah_cli, "-c", str(config)]

    with serve(command, root / "olah.log", timeout, port=port, cwd=root) as port:
        yield f"http://127.0.0.1:{port}", root / "mirrors"
