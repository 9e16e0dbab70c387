"""The full chain: export → push (real huggingface_hub client, test upload server) → olah mirror → zoo.load and
plain timm, identical weights and logits; revisions; offline use; the token never written anywhere."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants
from safetensors.torch import load_file

import zoo
from medssl_zoo.hub.push import push
from tests.helpers.hub_server import HUB_TOKEN
from zoo.hub_format import WEIGHTS_FILE

HERE = Path(__file__).parent


def plain_timm_logits(source: str, tmp_path: Path) -> dict:
    out = tmp_path / f"logits-{abs(hash(source))}.safetensors"
    subprocess.run(
        [sys.executable, str(HERE / "plain_timm.py"), source, str(out)],
        check=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=120,
    )
    return load_file(out)


def same_logits(model: torch.nn.Module, reference: dict) -> None:
    with torch.inference_mode():
        torch.testing.assert_close(model(reference["x"]), reference["logits"], rtol=0, atol=0)


def modified_copy(folder: Path, dest: Path, scale: float) -> Path:
    """A second version of the export: classifier weights scaled (a different model, same format)."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(folder, dest)
    state = load_file(dest / WEIGHTS_FILE)
    state["fc.weight"] = state["fc.weight"] * scale
    save_file(state, str(dest / WEIGHTS_FILE))
    return dest


def test_export_loads_in_plain_timm_like_zoo(tiny_export, tmp_path):
    reference = plain_timm_logits(f"local-dir:{tiny_export}", tmp_path)
    same_logits(zoo.load(tiny_export), reference)
    card = ModelCard.load(tiny_export / "README.md")
    assert card.data.library_name == "timm" and "ssl" in card.data.tags and "medical" in card.data.tags
    metrics = {m["type"]: m["value"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert {"knn_accuracy", "linear_accuracy", "f1_weighted", "auroc"} <= set(metrics)
    config = json.loads((tiny_export / "config.json").read_text())
    assert config["zoo"]["metrics"]["linear_accuracy"] == pytest.approx(metrics["linear_accuracy"], abs=1e-4)
    assert "not for clinical decisions" in card.text.lower()


def test_push_then_download_through_the_mirror(
    tiny_export, hub_server, tmp_path, monkeypatch, caplog, capsys
):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    repo = "medssl-test/roundtrip"
    sha = push(tiny_export, repo, tag="v1", api=HfApi(endpoint=hub_server.url))
    assert len(sha) == 40
    import hashlib

    assert (
        hashlib.sha256(f"Bearer {HUB_TOKEN}".encode()).hexdigest() in hub_server.auth_hashes
    )  # the token was used
    loaded = zoo.load(repo, revision=sha)  # through olah at HF_ENDPOINT
    local = zoo.load(tiny_export)
    for key, value in local.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    same_logits(loaded, plain_timm_logits(f"hf-hub:{repo}@{sha}", tmp_path))
    assert loaded.label_names == local.label_names
    # the token is never written: not in the exported files, the repository, the cache, the logs
    captured = capsys.readouterr()
    assert HUB_TOKEN not in caplog.text + captured.out + captured.err
    for root in (tiny_export, hub_server.root, Path(os.environ["HF_HOME"])):
        for path in root.rglob("*"):
            if path.is_file() and path.name != "token":
                assert HUB_TOKEN.encode() not in path.read_bytes(), path


def test_revisions_tag_branch_and_sha(tiny_export, hub_server, tmp_path):
    repo, api = "medssl-test/revisions", HfApi(endpoint=hub_server.url)
    first = push(tiny_export, repo, tag="v1", api=api)
    second = push(modified_copy(tiny_export, tmp_path / "v2", 2.0), repo, api=api)
    third = push(modified_copy(tiny_export, tmp_path / "v3", -1.0), repo, branch="dev", api=api)
    assert len({first, second, third}) == 3
    fc = lambda revision: zoo.load(repo, revision=revision).state_dict()["fc.weight"]  # noqa: E731
    original = zoo.load(tiny_export).state_dict()["fc.weight"]
    assert torch.equal(fc("v1"), original) and torch.equal(fc(first), original)
    assert torch.equal(fc("main"), 2.0 * original) and torch.equal(fc(second), 2.0 * original)
    assert torch.equal(fc("dev"), -1.0 * original) and torch.equal(fc(third), -1.0 * original)


def test_registry_name_resolves_through_the_mirror_and_offline_cache(
    tiny_export, hub_server, tmp_path, monkeypatch
):
    sha = push(tiny_export, "medssl-test/registered", api=HfApi(endpoint=hub_server.url))
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"my-model:\n  repo_id: medssl-test/registered\n  revision: {sha}\n")
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    online = zoo.load("my-model")
    assert "my-model" in zoo.list_models("my-*")
    # offline, and the endpoint pointing at a closed port: the cache answers, no request is made
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    offline = zoo.load("my-model")
    for key, value in online.state_dict().items():
        assert torch.equal(offline.state_dict()[key], value)
    with pytest.raises(
        zoo.ModelNotAvailableError, match="not in the local cache and HF_HUB_OFFLINE is set.*hf download"
    ):
        zoo.load("medssl-test/never-downloaded")


def test_an_unreachable_hub_answers_from_the_cache_at_once(tiny_export, hub_server, monkeypatch):
    """19.6: no DNS / connection refused, HF_HUB_OFFLINE unset: the cache answers, huggingface_hub is asked for the
    local copy only (no retries), and a model never downloaded is one line naming the endpoint."""
    import huggingface_hub

    sha = push(tiny_export, "medssl-test/reachable-once", api=HfApi(endpoint=hub_server.url))
    online = zoo.load("medssl-test/reachable-once", revision=sha)
    calls = []
    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9 (discard)
    cached = zoo.load("medssl-test/reachable-once", revision=sha)
    assert torch.equal(cached.state_dict()["fc.weight"], online.state_dict()["fc.weight"])
    assert calls and all(k["local_files_only"] for k in calls)
    with pytest.raises(
        zoo.ModelNotAvailableError, match=r"the Hub \(http://127.0.0.1:9\) cannot be reached \("
    ):
        zoo.load("medssl-test/never-downloaded")


def test_a_mistyped_local_path_never_asks_the_hub(tmp_path, monkeypatch):
    (tmp_path / "runs" / "histo_10").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    load_module = sys.modules["zoo.load"]  # the module (zoo.load is also the function)
    monkeypatch.setattr(
        load_module, "_download", lambda *a: pytest.fail("the Hub was asked for a local path")
    )
    for typo in ("runs/histo_1", "./runs/histo_1", str(tmp_path / "runs" / "histo_1")):
        with pytest.raises(
            zoo.ModelNotAvailableError, match="a local path was meant, so the Hub was not asked"
        ):
            zoo.load(typo)
    with pytest.raises(zoo.ModelNotAvailableError, match="Close names in runs/: histo_10"):
        zoo.load("runs/histo_1O")


def test_unpublished_registry_name_says_how_to_publish(olah):
    with pytest.raises(
        zoo.ModelNotAvailableError,
        match=r"not published yet.*medssl-pretrain --recipe vicreg-breast.*medssl-export.*medssl-push",
    ):
        zoo.load("vicreg-breast")


def test_push_refuses_a_folder_that_is_not_an_export(tmp_path, hub_server):
    with pytest.raises(ValueError, match="missing"):
        push(tmp_path, "medssl-test/nothing", api=HfApi(endpoint=hub_server.url))
