"""A revision is a path inside huggingface_hub's cache (``refs/<revision>``): a hostile one must never reach it.

The server below answers every request the way a hostile Hub mirror would (200, ``X-Repo-Commit`` of its choice):
with an unchecked revision such as ``../../../../<tmp>/pwned``, huggingface_hub writes that file outside its
cache. Every way a revision comes in is tried: ``zoo.load(revision=...)``, ``$ZOO_REGISTRY``, ``zoo.register``,
``hub.push``'s tag and branch, and the commit a server claims.
"""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import zoo
from medssl_zoo.hub.push import push
from zoo.revision import check_commit, check_revision

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "a" * 40


def hostile_handler(commit: str):
    class Hostile(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, body: bool):
            payload = b"{}"
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", '"0123456789abcdef"')
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def do_HEAD(self):  # noqa: N802
            self._answer(body=False)

        def do_GET(self):  # noqa: N802
            self._answer(body=True)

    return Hostile


@pytest.fixture
def hostile_hub():
    """A Hub stand-in on 127.0.0.1 that answers anything with 200 and ``X-Repo-Commit``; shut down at the end."""
    servers = []

    def start(commit: str = COMMIT) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), hostile_handler(commit))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run_zoo(endpoint: str, tmp_path: Path, *argv: str, registry: Path | None = None):
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf"),
        "ZOO_HOME": str(tmp_path / "home"),
        "ZOO_HUB_TIMEOUT": "10",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("ZOO_REGISTRY", None)
    if registry is not None:
        env["ZOO_REGISTRY"] = str(registry)
    return subprocess.run(
        [sys.executable, "-m", "zoo", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def escape_to(target: Path, hf_home: Path) -> str:
    """A revision that, joined to ``<hf_home>/hub/models--org--model/refs/``, names ``target``."""
    refs = hf_home / "hub" / "models--org--model" / "refs"
    return os.path.relpath(target, refs)


def test_a_hostile_revision_argument_writes_nothing_outside_the_cache(hostile_hub, tmp_path):
    victim = tmp_path / "victim" / ".bashrc"
    victim.parent.mkdir()
    victim.write_text("echo hello\n")
    revision = escape_to(victim, tmp_path / "hf")
    assert revision.startswith("../")
    proc = run_zoo(hostile_hub(), tmp_path, "load", "org/model", "--revision", revision)
    assert (
        victim.read_text() == "echo hello\n"
    )  # untouched (unchecked, it would now hold the server's "commit")
    assert proc.returncode == 2
    assert "is not a branch, tag or commit sha" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "hf" / "hub").exists()  # nothing was even asked of the server


def test_a_hostile_registry_revision_is_refused_by_name(hostile_hub, tmp_path):
    victim = tmp_path / "victim.txt"
    registry = tmp_path / "team.yaml"
    revision = escape_to(victim, tmp_path / "hf")
    registry.write_text(
        f"good-model: {{repo_id: org/model}}\nbad-model: {{repo_id: org/model, revision: '{revision}'}}\n"
    )
    endpoint = hostile_hub()
    for argv in (["load", "bad-model"], ["list"], ["info", "good-model"]):
        proc = run_zoo(endpoint, tmp_path, *argv, registry=registry)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "bad-model: revision" in proc.stderr and "Traceback" not in proc.stderr
    assert not victim.exists()


def test_register_and_push_check_revisions_before_any_request(tiny_export):
    with pytest.raises(ValueError, match="evil: revision"):
        zoo.register("evil", "org/model", revision="../../x")
    assert "evil" not in zoo.list_models()
    for kwargs in ({"tag": "../../x"}, {"branch": "-rf"}, {"tag": "v1\\x"}):
        with pytest.raises(ValueError, match="is not a branch, tag or commit sha"):
            push(tiny_export, "org/model", **kwargs)  # no token here: the check comes first
    with pytest.raises(ValueError, match="not a Hub repository id"):
        push(tiny_export, "../../etc")


def test_a_server_claiming_a_path_as_its_commit_is_refused(hostile_hub, tmp_path):
    proc = run_zoo(hostile_hub(commit="../../../../outside"), tmp_path, "load", "org/model")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize(
    "revision", ["main", "v1.0", "refs/pr/1", "release/2026-11", COMMIT, "feature_x", "a" * 7]
)
def test_valid_revisions_pass(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize(
    "revision",
    [
        "../../../../home/user/.bashrc",
        "v1/../../x",
        "/etc/passwd",
        "-rf",
        "a\x00b",
        "a\\b",
        "",
        ".hidden",
        "x.lock",
        "a//b",
        "main/",
        "end.",
        "@",
        "a@{1}",
        "with space",
        "a:b",
        "x" * 256,
    ],
)
def test_hostile_revisions_are_refused(revision):
    with pytest.raises(ValueError, match="is not a branch, tag or commit sha"):
        check_revision(revision)


def test_a_commit_is_forty_hex_digits():
    assert check_commit(COMMIT) == COMMIT
    for bad in ("main", "../x", COMMIT.upper(), COMMIT[:-1]):
        with pytest.raises(ValueError, match="not a 40-character commit sha"):
            check_commit(bad)
