"""Publishing the zoo end to end: reproduce --push pre-trains, evaluates, exports and pushes two small cells to
the Hub-compatible test server, tags them and writes the registry; zoo.load(name) and plain timm then load them
through the olah mirror into a fresh cache, and offline afterwards. A failure part way is resumable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from medssl_zoo.hub import push as push_module
from medssl_zoo.hub.push import PushError
from medssl_zoo.train import reproduce
from tests.helpers.hub_server import git
from zoo.hub_format import WEIGHTS_FILE

ROOT = Path(__file__).resolve().parents[2]
TINY = "--dataset-options '{num_images: 96}' --image-size 32 --batch-size 16 --knn-k 5"


def load_in_fresh_process(tmp_path: Path, code: str, **env) -> str:
    """Run ``code`` with a new, empty Hugging Face cache and model home (the mirror at HF_ENDPOINT)."""
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "fresh-cache"),
        "ZOO_HOME": str(tmp_path / "empty-home"),
        **env,
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_publish_two_cells_then_load_them_by_name_and_with_plain_timm(
    hub_server, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "results"
    argv = [
        "--methods",
        "simclr,vicreg",
        "--synthetic-steps",
        "3",
        "--protocols",
        "knn,linear",
        "--fractions",
        "1.0",
    ]
    argv += ["--seeds", "0", "--baselines", "none", "--out", str(out), "--pretrain-args", TINY]
    argv += ["--push", "medssl-test", "--push-endpoint", hub_server.url, "--tag", "v-test"]
    real_push = push_module.push

    def failing_second_push(folder, repo_id, **kwargs):  # the network fails during the second publication
        if repo_id.endswith("vicreg-synthetic"):
            raise PushError("cannot reach the Hub (test)")
        return real_push(folder, repo_id, **kwargs)

    monkeypatch.setattr(push_module, "push", failing_second_push)
    assert reproduce.main(argv) == 2
    registry = yaml.safe_load((out / "registry.yaml").read_text())
    assert list(registry) == ["simclr-synthetic"]  # what was pushed is recorded, consistent
    first_sha = registry["simclr-synthetic"]["revision"]
    monkeypatch.setattr(push_module, "push", real_push)
    assert reproduce.main(argv) == 0  # resumed: only the missing publication happens
    registry = yaml.safe_load((out / "registry.yaml").read_text())
    assert registry["simclr-synthetic"]["revision"] == first_sha
    assert {name: entry["repo_id"] for name, entry in registry.items()} == {
        "simclr-synthetic": "medssl-test/simclr-synthetic",
        "vicreg-synthetic": "medssl-test/vicreg-synthetic",
    }
    for entry in registry.values():
        repo = hub_server.root / "models" / entry["repo_id"]
        assert len(entry["revision"]) == 40 and git(repo, "rev-parse", "v-test^{commit}") == entry["revision"]
        card = git(repo, "show", f"{entry['revision']}:README.md")
        assert f'timm.create_model("hf-hub:{entry["repo_id"]}"' in card and "<org>/" not in card
    # zoo.load by name and plain timm, from a fresh cache through the mirror; then offline from that cache
    code = f"""
import json, timm, torch, zoo
from safetensors.torch import load_file
model = zoo.load("vicreg-synthetic")
plain = timm.create_model("hf-hub:medssl-test/vicreg-synthetic@{registry["vicreg-synthetic"]["revision"]}", pretrained=True)
x = torch.randn(2, 3, 32, 32)
exported = load_file({str(out / "exports" / "vicreg-synthetic" / WEIGHTS_FILE)!r})
same = all(torch.equal(model.state_dict()[k], v) for k, v in exported.items())
with torch.no_grad():
    print(json.dumps({{"same_weights": same, "same_logits": bool(torch.equal(model.eval()(x), plain.eval()(x)))}}))
"""
    registry_env = {"ZOO_REGISTRY": str(out / "registry.yaml")}
    assert json.loads(load_in_fresh_process(tmp_path, code, **registry_env)) == {
        "same_weights": True,
        "same_logits": True,
    }
    offline = "import zoo; print(zoo.load('simclr-synthetic').label_names)"
    load_in_fresh_process(tmp_path, offline, **registry_env)  # caches it
    printed = load_in_fresh_process(
        tmp_path, offline, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", **registry_env
    )
    assert "small_round" in printed
