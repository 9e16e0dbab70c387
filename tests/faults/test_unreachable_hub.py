"""A Hub that hangs, refuses or is unreachable: bounded waits and one-line errors, for zoo.load and hub.push; the
demo keeps serving loaded models while another one loads."""

import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants

import zoo
from medssl_zoo.demo import app
from medssl_zoo.hub.push import PushError, push

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def silent_server():
    """Accepts connections on 127.0.0.1 and never answers; closed (by the fixture) at the end."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


class Refuse(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _refuse(self):
        body = b'{"error": "Invalid credentials"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _refuse  # noqa: N815


@pytest.fixture
def refusing_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed


def test_a_hub_that_never_answers_gives_up_within_the_deadline(silent_server, tmp_path):
    """In a fresh process (huggingface_hub reads HF_ENDPOINT at import): the CLI gives up and says why."""
    env = {
        "HF_ENDPOINT": silent_server,
        "HF_HOME": str(tmp_path),
        "ZOO_HUB_TIMEOUT": "2",
        "PATH": "/usr/bin:/bin",
    }
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "load", "medssl-test/hanging"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "did not answer" in proc.stderr and "ZOO_HUB_TIMEOUT" in proc.stderr
    assert time.monotonic() - start < 20  # 2 s of waiting plus the interpreter's start-up


def test_push_without_a_token_says_how_to_log_in(tiny_export, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(Path(constants.HF_HOME) / "no-token-here"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(Path(constants.HF_HOME) / "no-token-here" / "token"))
    with pytest.raises(PushError, match="no Hub token: log in with `hf auth login` or set HF_TOKEN"):
        push(tiny_export, "org/name", api=HfApi(endpoint=closed_port()))


def test_push_refused_credentials(tiny_export, refusing_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(PushError, match=r"refused the credentials \(HTTP 401\): log in with `hf auth login`"):
        push(tiny_export, "org/name", api=HfApi(endpoint=refusing_server))


def test_push_offline_and_unreachable(tiny_export, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_something")
    with pytest.raises(PushError, match="cannot reach the Hub at .*HF_ENDPOINT"):
        push(tiny_export, "org/name", api=HfApi(endpoint=closed_port()))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="HF_HUB_OFFLINE is set"):
        push(tiny_export, "org/name", api=HfApi(endpoint=closed_port()))


def test_push_cli_prints_one_line_and_no_traceback(tiny_export):
    env = {
        "HF_TOKEN": "hf_something",
        "HF_ENDPOINT": closed_port(),
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "medssl_zoo.hub.push", str(tiny_export), "org/name"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("ERROR") == 1, proc.stderr
    assert "cannot reach the Hub" in proc.stderr


def test_demo_serves_loaded_models_while_another_loads(tiny_export, monkeypatch):
    monkeypatch.setattr(app, "OPERATOR_MODELS", {})
    name = app.add_operator_model(str(tiny_export))
    loaded = app.get_model(name)
    release, started = threading.Event(), threading.Event()
    real_load = zoo.load

    def slow_load(name, **kwargs):
        if name == "medssl-test/slow":
            started.set()
            release.wait(30)
            raise zoo.ModelNotAvailableError("slow: gave up")
        return real_load(name, **kwargs)

    monkeypatch.setattr(zoo, "load", slow_load)
    slow = threading.Thread(
        target=lambda: pytest.raises(zoo.ModelNotAvailableError, app.get_model, "medssl-test/slow")
    )
    slow.start()
    assert started.wait(10)
    start = time.monotonic()
    assert app.get_model(name) is loaded  # not blocked by the download in progress (it waits up to 30 s)
    assert time.monotonic() - start < 10
    release.set()
    slow.join(10)


def test_demo_model_box_never_opens_server_paths(tiny_export):
    for name in ("/etc", "../..", str(tiny_export.parent), "~", "..", "a/../../b"):
        with pytest.raises(zoo.ModelNotAvailableError) as refused:
            zoo.load(name, local_paths=False)
        assert "$ZOO_HOME" not in str(refused.value) and "not a folder" not in str(refused.value)
