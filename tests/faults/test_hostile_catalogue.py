"""Catalogue repositories that refuse or lie: a gated repository (401 / 403) is one line naming the access URL and
how to log in; a pickle that carries code, a .bin larger than the model, a truncated .bin, a config.json that
asks for another model, weights of another shape: each refused by name before anything is built from it, and no
code of the file runs."""

import json
import os
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

import zoo
from tests.helpers.catalogue import STANDINS, standin_weights, write_repo
from zoo.catalogue import PICKLE, SAFETENSORS, register_encoder

UNI = STANDINS["standin-uni"]


def serve_repo(mirrors: Path, name: str, files: dict, **changes):
    """A stand-in of UNI's family under a new name, served by the mirror with ``files``, registered."""
    entry = replace(UNI, name=name, repo_id=f"medssl-test/{name}", **changes)
    commit = write_repo(mirrors, entry, files)
    return register_encoder(replace(entry, revision=commit), overwrite=True)


def config(**changes) -> bytes:
    return json.dumps({"architecture": UNI.architecture, "num_classes": 0, **changes}).encode()


class Evil:
    """Pickled, it asks the unpickler to run a shell command (what a full unpickle would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_carries_code_is_refused_and_never_runs(olah, tmp_path):
    marker = tmp_path / "ran"
    state = standin_weights(UNI)
    state["cls_token"] = Evil(marker)
    torch.save(state, tmp_path / "evil.bin")
    serve_repo(olah, "evil-pickle", {"config.json": config(), PICKLE: tmp_path / "evil.bin"})
    with pytest.raises(ValueError, match=r"weights-only unpickler refused it.*not loaded"):
        zoo.load("evil-pickle", features_only=True)
    assert not marker.exists()


def test_a_bin_larger_than_the_model_is_refused_before_it_is_read(olah, tmp_path, monkeypatch):
    (tmp_path / "big.bin").write_bytes(b"\0" * (4 << 20))  # 4 MiB for a 50k-parameter model
    serve_repo(olah, "oversized-bin", {"config.json": config(), PICKLE: tmp_path / "big.bin"})
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the oversized file was read"))
    with pytest.raises(ValueError, match=r"more than standin|more than oversized-bin's .* float32 tensors"):
        zoo.load("oversized-bin", features_only=True)


def test_a_truncated_bin_is_refused_by_name(olah, tmp_path):
    torch.save(standin_weights(UNI), tmp_path / "whole.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "whole.bin").read_bytes()[:5000])
    serve_repo(olah, "truncated-bin", {"config.json": config(), PICKLE: tmp_path / "cut.bin"})
    with pytest.raises(ValueError, match=r"pytorch_model.bin is not a plain checkpoint of tensors"):
        zoo.load("truncated-bin", features_only=True)


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"architecture": "vit_huge_patch14_224"}, "architecture 'vit_huge_patch14_224'"),
        ({"model_args": {"init_values": 1.0}}, r"model_args \['init_values'\]"),
        ({"model_args": {"checkpoint_path": "/etc/passwd"}}, r"model_args \['checkpoint_path'\]"),
    ],
)
def test_a_config_asking_for_another_model_is_refused_before_anything_is_built(
    olah, tmp_path, changes, named
):
    torch.save(standin_weights(UNI), tmp_path / "w.bin")
    name = f"changed-config-{abs(hash(named)) % 10**6}"
    serve_repo(olah, name, {"config.json": config(**changes), PICKLE: tmp_path / "w.bin"})
    with pytest.raises(ValueError, match=rf"asks for {named}.*repository changed"):
        zoo.load(name, features_only=True)


def test_weights_of_another_shape_are_refused_by_name(olah, tmp_path):
    from safetensors.torch import save_file

    state = standin_weights(UNI)
    state["pos_embed"] = torch.zeros(1, 7, 32)
    del state["norm.bias"]
    save_file(state, str(tmp_path / "w.safetensors"))
    serve_repo(
        olah,
        "misshaped",
        {"config.json": config(), SAFETENSORS: tmp_path / "w.safetensors"},
        weights_files=(SAFETENSORS,),
    )
    with pytest.raises(
        ValueError, match=r"do not fit misshaped .*missing: \['norm.bias'\].*wrong shape: \['pos_embed'\]"
    ):
        zoo.load("misshaped", features_only=True)


class Gate(BaseHTTPRequestHandler):
    """The Hub's answer to a download from a gated repository without (accepted) access."""

    status, code = 401, None

    def log_message(self, *args):
        pass

    def _refuse(self):
        body = b'{"error": "Access to model medssl-test/gated is restricted."}'
        self.send_response(self.status)
        if self.code:
            self.send_header("X-Error-Code", self.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if self.command != "HEAD" else b"")

    do_GET = do_HEAD = _refuse  # noqa: N815


@pytest.fixture
def gate(monkeypatch):
    def start(status: int, code: str | None):
        handler = type("G", (Gate,), {"status": status, "code": code})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
        )

    servers = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status, code", [(401, None), (403, None), (401, "GatedRepo"), (403, "GatedRepo")])
def test_a_gated_repository_says_where_to_ask_and_how_to_log_in(gate, status, code):
    gate(status, code)
    url = "https://huggingface.co/medssl-test/gated"
    register_encoder(
        replace(UNI, name="gated-standin", repo_id="medssl-test/gated", gated=True, access_url=url),
        overwrite=True,
    )
    with pytest.raises(zoo.ModelNotAvailableError) as refused:
        zoo.load("gated-standin", features_only=True)
    message = str(refused.value)
    assert "\n" not in message and f"HTTP {status}" in message
    assert "request access at https://huggingface.co/medssl-test/gated" in message
    assert "`hf auth login`" in message and "HF_TOKEN" in message
