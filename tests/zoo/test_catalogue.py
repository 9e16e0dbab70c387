"""The catalogue of public encoders: every real entry against its card (built on the meta device), and loading by
catalogue name through the olah mirror (stand-ins of the same families and kwargs): weights, pooling against a
manual computation, the model's own preprocessing, list / info without any download."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import zoo
from tests.helpers.catalogue import SWIGLU, silu_everywhere, standin_weights
from zoo.catalogue import ENTRIES, build_encoder, catalogue_entry, measured

ROOT = Path(__file__).resolve().parents[2]
# the cards' and papers' own numbers (a second source beside the entries' fields): (parameters, width)
CARDS = {
    "uni": (303e6, 1024),  # UNI: ViT-L/16, ~303 M, 1024-d
    "uni2-h": (681e6, 1536),  # UNI2-h: ViT-H/14, ~681 M
    "virchow2": (632e6, 2560),  # arXiv 2408.00738: 632 million; card: 1 x 2560 (CLS + mean)
    "h-optimus-0": (1.1e9, 1536),  # card: 1.1B
    "prov-gigapath": (1.1e9, 1536),  # ViT-g, ~1.1B
    "dinov2-vitb14": (86.6e6, 768),  # DINOv2 ViT-B/14: 86 M
    "medmae-cxr-vitb16": (86e6, 768),  # ViT-B/16
}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_real_entry_builds_on_the_meta_device_as_its_card_says(entry):
    built = measured(entry)
    assert (built["params"], built["width"]) == (entry.params, entry.width)
    params, width = CARDS[entry.name]
    assert built["width"] == width and abs(built["params"] - params) / params < 0.035
    model = build_encoder(entry, device="meta")
    assert sum(p.is_meta for p in model.parameters()) == len(list(model.parameters()))  # nothing allocated
    if entry.name in ("uni2-h", "virchow2", "h-optimus-0", "prov-gigapath"):
        assert silu_everywhere(model)  # a strict load would not notice a GELU here


def test_every_real_entry_says_where_its_facts_come_from():
    for entry in ENTRIES:
        assert {"kwargs", "pooling", "license", "params"} <= set(entry.sources), entry.name
        assert entry.citation and entry.description
        assert entry.redistribute == (entry.license != "cc-by-nc-nd-4.0")
        assert not entry.gated or entry.access_url == f"https://huggingface.co/{entry.repo_id}"


def test_list_and_info_show_the_catalogue_without_downloading(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "zoo", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    listing = run("list").stdout
    uni = next(line for line in listing.splitlines() if line.startswith("uni "))
    assert all(
        s in uni for s in ("MahmoodLab/UNI", "pathology", "1024-d", "303.4 M", "cc-by-nc-nd-4.0", "gated")
    )
    assert "open" in next(line for line in listing.splitlines() if line.startswith("h-optimus-0 "))
    info = run("info", "virchow2")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert (facts["parameters"], facts["embedding_width"], facts["prefix_tokens"]) == (631_239_424, 2560, 5)
    assert facts["kwargs"]["mlp_layer"] == "timm.layers.SwiGLUPacked" and facts["gated"] is True
    assert not list(tmp_path.rglob("*.json"))  # nothing was downloaded into the Hub cache


def test_load_by_catalogue_name_gives_the_served_weights_and_the_entry_preprocessing(standins):
    for name, entry in standins.items():
        model = zoo.load(name, features_only=True)
        reference = standin_weights(entry)
        assert model.state_dict().keys() == reference.keys()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items()), name
        data = timm.data.resolve_data_config({}, model=model)
        assert data["input_size"] == (3, entry.input_size, entry.input_size)
        assert (data["mean"], data["std"]) == (entry.mean, entry.std)
        assert (data["crop_pct"], data["interpolation"]) == (entry.crop_pct, entry.interpolation)
        assert model.zoo_metadata["base_model"]["license"] == entry.license and not model.training
        assert model.zoo_metadata["base_model"]["revision"] == entry.revision  # the pinned commit
        if name in SWIGLU:
            assert silu_everywhere(model), name


def test_bin_only_repositories_are_read_by_the_weights_only_unpickler(standins, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = zoo.load("standin-h-optimus-0", features_only=True)
    assert calls and all(flag is True for flag in calls)
    assert Path(model.weights_path).name == "pytorch_model.bin"
    assert Path(zoo.load("standin-virchow2", features_only=True).weights_path).name == "model.safetensors"


def _tokens(model: nn.Module, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return model(x), model.forward_features(x)


def test_cls_plus_mean_patch_pooling_equals_a_manual_computation_without_the_registers(standins):
    model = zoo.load("standin-virchow2", features_only=True)
    pooled, tokens = _tokens(model, 32)
    assert tokens.shape == (3, 1 + 4 + 4, 32) and model.num_prefix_tokens == 5
    manual = torch.cat([tokens[:, 0], tokens[:, 5:].mean(dim=1)], dim=-1)  # Virchow2's card
    torch.testing.assert_close(pooled, manual, rtol=0, atol=0)
    timm_avg = type(model).pool(model, tokens, pool_type="avg")  # timm's own patch mean, a second computation
    torch.testing.assert_close(pooled[:, 32:], timm_avg, rtol=0, atol=0)
    with_registers = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)
    assert (pooled - with_registers).abs().max() > 1e-3  # the registers matter: a mean over them is caught
    assert model.num_features == 64 and zoo.embeddings.encoder.pooling_of(model) == "cls+mean-patch"


@pytest.mark.parametrize("name", ["standin-uni2-h", "standin-dinov3", "standin-dinov2"])
def test_cls_pooling_is_the_class_token(standins, name):
    model = zoo.load(name, features_only=True)
    pooled, tokens = _tokens(model, model.pretrained_cfg["input_size"][-1])
    torch.testing.assert_close(pooled, tokens[:, 0], rtol=0, atol=0)


def test_a_dynamic_size_encoder_takes_another_input_size(standins):
    model = zoo.load("standin-uni", features_only=True)
    assert _tokens(model, 48)[0].shape == (3, 32)


def test_an_encoder_without_classifier_says_to_fit_a_probe(standins):
    with pytest.raises(ValueError, match=r"without a classifier.*features_only=True.*fit a probe"):
        zoo.load("standin-uni")
    assert catalogue_entry("standin-uni").width == 32
