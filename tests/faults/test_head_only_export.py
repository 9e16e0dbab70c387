"""Licences are respected (issue 22 item 6): a probe on a no-derivatives catalogue encoder is exported as its head
plus a pinned reference, zoo.load composes the two, the card carries the base model's terms, and weights built on
such an encoder are never pushed."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import zoo
from medssl_zoo.hub import export, push
from zoo.hub_format import HEAD_FILE, OOD_FILE, WEIGHTS_FILE

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for label, shift in (("benign", 0), ("malignant", 90)):
        (root / label).mkdir()
        for i in range(16):
            pixels = np.clip(rng.normal(80 + shift, 30, (36, 36, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}{i:02d}.png")
    return root


@pytest.fixture
def head_export(standins, labelled, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    argv = [str(tmp_path / "uni-head"), "--base", "standin-uni", "--data-root", str(labelled)]
    assert export.main(argv) == 0  # medssl-export --base dispatches to the head export
    return tmp_path / "uni-head"


def test_a_no_derivatives_encoder_is_exported_as_its_head_and_a_pinned_reference(head_export, standins):
    entry = standins["standin-uni"]
    assert sorted(p.name for p in head_export.iterdir()) == ["README.md", "config.json", HEAD_FILE, OOD_FILE]
    head = load_file(head_export / HEAD_FILE)
    assert {k: tuple(v.shape) for k, v in head.items()} == {"weight": (2, 32), "bias": (2,)}
    config = json.loads((head_export / "config.json").read_text())
    base = config["zoo"]["base_model"]
    assert config["zoo"]["head_only"] and base["name"] == "standin-uni"
    assert (
        base["revision"] == entry.revision and base["repo_id"] == entry.repo_id and not base["redistribute"]
    )
    card = (head_export / "README.md").read_text()
    assert "license: cc-by-nc-nd-4.0" in card and "**not allowed**" in card and entry.revision in card
    assert f"base_model: {entry.repo_id}" in card


def test_zoo_load_composes_the_head_with_the_pinned_encoder(head_export):
    model = zoo.load(head_export)
    encoder = zoo.load("standin-uni", features_only=True)
    head = load_file(head_export / HEAD_FILE)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = encoder(x) @ head["weight"].T + head["bias"]  # the second computation
        torch.testing.assert_close(model(x), expected)
    assert model.label_names == ["benign", "malignant"] and model.num_classes == 2
    assert model.pretrained_cfg["input_size"] == encoder.pretrained_cfg["input_size"]
    features = zoo.load(head_export, features_only=True)
    with torch.no_grad():
        torch.testing.assert_close(features(x), encoder(x))


def _tamper(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c["zoo"]["base_model"].update(name="no-such-encoder"), "not in this catalogue"),
        (lambda c: c["zoo"]["base_model"].update(repo_id="attacker/weights"), "re-export the head"),
        (lambda c: c["zoo"]["base_model"].update(revision="main"), "commit"),
        (lambda c: c.update(num_features=4096), "width"),
    ],
)
def test_a_tampered_reference_is_refused(head_export, change, match):
    _tamper(head_export, change)
    with pytest.raises(ValueError, match=match):
        zoo.load(head_export)


def test_a_head_of_another_shape_is_refused_before_the_encoder_is_loaded(head_export, monkeypatch):
    save_file({"weight": torch.zeros(2, 4096), "bias": torch.zeros(2)}, str(head_export / HEAD_FILE))
    monkeypatch.setattr(
        sys.modules["zoo.load"], "load_entry", lambda *a: pytest.fail("the encoder was loaded")
    )
    with pytest.raises(ValueError, match="expected"):
        zoo.load(head_export)


def test_push_refuses_weights_built_on_a_no_derivatives_encoder(head_export, tiny_export, tmp_path):
    derived = tmp_path / "derived"
    shutil.copytree(tiny_export, derived)
    base = json.loads((head_export / "config.json").read_text())["zoo"]["base_model"]
    _tamper(derived, lambda c: c["zoo"].update(base_model=base))
    assert (derived / WEIGHTS_FILE).is_file()
    with pytest.raises(ValueError, match="forbids redistributing.*medssl-export --base standin-uni"):
        push._check_folder(derived)
    config, files = push._check_folder(head_export)  # the head-only export passes zoo.load's own checks
    assert sorted(files) == ["README.md", "config.json", HEAD_FILE, OOD_FILE]
