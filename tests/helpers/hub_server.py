"""A small Hub-compatible upload server for the tests: create repo, validate-yaml, preupload (always "regular"),
commit (ndjson, base64 files), branch, tag. It stores every repository as a non-bare git repository under
``<root>/models/<org>/<name>`` — the layout olah serves offline — so what ``hub.push`` uploads through the real
``huggingface_hub`` client can then be downloaded through the olah mirror.

Binds 127.0.0.1 only; started and stopped by a pytest fixture. Requests' Authorization headers are kept (as a
flag and a hash) so tests can check that a token was sent without storing it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import yaml

GIT = [
    "git",
    "-c",
    "user.name=hub-test-server",
    "-c",
    "user.email=hub@127.0.0.1",
    "-c",
    "init.defaultBranch=main",
]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


HUB_TOKEN = "hf_testTOKEN_do_not_write_0123456789"  # the token tests push with; it must never be written


class HubHandler(BaseHTTPRequestHandler):
    server: HubServer

    def log_message(self, fmt, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self):  # noqa: N802
        auth = self.headers.get("Authorization", "")
        self.server.auth_hashes.append(hashlib.sha256(auth.encode()).hexdigest() if auth else None)
        path = unquote(self.path.split("?")[0])
        routes = [
            (r"^/api/repos/create$", self.create_repo),
            (r"^/api/validate-yaml$", self.validate_yaml),
            (r"^/api/models/([^/]+/[^/]+)/preupload/(.+)$", self.preupload),
            (r"^/api/models/([^/]+/[^/]+)/commit/(.+)$", self.commit),
            (r"^/api/models/([^/]+/[^/]+)/branch/(.+)$", self.branch),
            (r"^/api/models/([^/]+/[^/]+)/tag/(.+)$", self.tag),
        ]
        for pattern, handler in routes:
            match = re.match(pattern, path)
            if match:
                with self.server.lock:
                    return handler(*match.groups())
        self._reply(404, {"error": f"no route {path}"})

    def _repo(self, repo_id: str) -> Path | None:
        repo = self.server.root / "models" / repo_id
        return repo if (repo / ".git").is_dir() else None

    def create_repo(self):
        body = json.loads(self._body())
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        repo = self.server.root / "models" / repo_id
        if (repo / ".git").is_dir():
            return self._reply(409, {"error": "You already created this model repo", "url": f"/{repo_id}"})
        repo.mkdir(parents=True)
        git(repo, "init", "-q")
        (repo / ".gitattributes").write_text("*.safetensors binary\n")
        git(repo, "add", ".gitattributes")
        git(repo, "commit", "-q", "-m", "initial commit")
        self._reply(200, {"url": f"{self.server.url}/{repo_id}"})

    def validate_yaml(self):
        content = json.loads(self._body()).get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as e:
            return self._reply(400, {"error": f"invalid YAML: {e}"})
        if not isinstance(meta, dict):
            return self._reply(400, {"error": "metadata must be a mapping"})
        self._reply(200, {"warnings": []})

    def preupload(self, repo_id: str, revision: str):
        if self._repo(repo_id) is None:
            return self._reply(404, {"error": "Repository not found"})
        files = json.loads(self._body())["files"]
        self._reply(
            200,
            {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
        )

    def commit(self, repo_id: str, revision: str):
        repo = self._repo(repo_id)
        if repo is None:
            return self._reply(404, {"error": "Repository not found"})
        lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        git(repo, "checkout", "-q", revision)
        try:
            for line in lines:
                if line["key"] == "file":
                    target = repo / line["value"]["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(line["value"]["content"]))
                elif line["key"] == "deletedFile":
                    (repo / line["value"]["path"]).unlink(missing_ok=True)
                elif line["key"] != "header":
                    return self._reply(400, {"error": f"unsupported commit operation {line['key']}"})
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "--allow-empty", "-m", header["summary"])
            sha = git(repo, "rev-parse", "HEAD")
        finally:
            git(repo, "checkout", "-q", "main")
        self._reply(
            200,
            {
                "commitUrl": f"{self.server.url}/{repo_id}/commit/{sha}",
                "commitOid": sha,
                "pullRequestUrl": None,
            },
        )

    def branch(self, repo_id: str, branch: str):
        repo = self._repo(repo_id)
        if repo is None:
            return self._reply(404, {"error": "Repository not found"})
        body = json.loads(self._body() or b"{}")
        if branch in git(repo, "branch", "--format=%(refname:short)").split():
            return self._reply(409, {"error": "Reference already exists"})
        git(repo, "branch", branch, body.get("startingPoint") or "main")
        self._reply(200, {})

    def tag(self, repo_id: str, revision: str):
        repo = self._repo(repo_id)
        if repo is None:
            return self._reply(404, {"error": "Repository not found"})
        body = json.loads(self._body())
        if git(repo, "tag", "--list", body["tag"]):
            return self._reply(409, {"error": "Tag already exists"})  # as the Hub answers
        git(repo, "tag", "-a", body["tag"], revision, "-m", body.get("message") or body["tag"])
        self._reply(200, {})


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, port: int = 0):
        super().__init__(("127.0.0.1", port), HubHandler)
        self.root, self.lock, self.auth_hashes = Path(root), threading.Lock(), []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)
