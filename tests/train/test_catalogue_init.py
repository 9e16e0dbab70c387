"""Continued pre-training from a catalogue encoder (issue 22 item 5): --backbone NAME --init NAME with the ViT
methods, the base model's terms recorded in run.json, and the run never exported as a model."""

import json
import logging

import pytest
import torch

import zoo
from medssl_zoo.hub import export
from medssl_zoo.train.pretrain import main
from tests.helpers.accelerate_state import reset_accelerate_state
from tests.train.tiny import args
from zoo.run_dir import read_run

pytestmark = pytest.mark.timeout(600)
VIT = {"dino": ("--local-crops", "2", "--local-size", "16"), "mocov3": ()}


def _run(out, method, *extra):
    reset_accelerate_state()
    argv = args(out, "--method", method, *VIT[method], "--max-steps", "2", "--export-name", "null", *extra)
    return main(argv)


@pytest.mark.parametrize("method", sorted(VIT))
def test_a_vit_method_continues_from_a_catalogue_encoder(standins, method, tmp_path):
    entry = standins["standin-uni"]
    out = tmp_path / "run"
    lr = ("--lr", "1e-9", "--min-lr", "0")  # the weights barely move: the run's encoder is the stand-in's
    assert _run(out, method, "--backbone", "standin-uni", "--init", "standin-uni", *lr) == 0
    record = json.loads((out / "run.json").read_text())["init_weights"]
    base = record["base_model"]
    assert (base["name"], base["repo_id"], base["revision"]) == ("standin-uni", entry.repo_id, entry.revision)
    assert base["license"] == "cc-by-nc-nd-4.0" and base["redistribute"] is False
    assert record["file"] == "pytorch_model.bin" and len(record["sha256"]) == 64
    trained = read_run(out).load_encoder().state_dict()
    original = zoo.load("standin-uni", features_only=True).state_dict()
    assert trained.keys() == original.keys()
    for key, value in original.items():
        torch.testing.assert_close(trained[key], value, atol=1e-4, rtol=0, msg=key)
    assert not torch.equal(
        zoo.create_backbone("standin-uni", image_size=32).state_dict()["blocks.0.attn.qkv.weight"],
        original["blocks.0.attn.qkv.weight"],
    )  # a random init of the architecture would not pass the comparison above

    refused = tmp_path / "export"
    assert export.main([str(out), str(refused)]) == 2
    assert not refused.exists()


def test_a_catalogue_init_needs_its_own_architecture(standins, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert (
            _run(tmp_path / "run", "dino", "--backbone", "vit_small_patch16_224", "--init", "standin-uni")
            == 2
        )
    assert "pass --backbone standin-uni" in caplog.text
