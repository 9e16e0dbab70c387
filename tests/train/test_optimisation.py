"""What a run is built with: optimiser parameter groups, LARS, the precision and thread choices."""

from types import SimpleNamespace

import pytest
import torch
from timm.optim import Lars

from medssl_zoo.train import pretrain
from medssl_zoo.train.config import load_config
from medssl_zoo.train.pretrain import build_accelerator, build_optimizer, main, setup_threads
from tests.helpers.accelerate_state import reset_accelerate_state
from tests.train.tiny import args
from zoo import create_method


def test_norms_and_biases_get_no_weight_decay():
    cfg = load_config(overrides={"backbone": "test_resnet", "weight_decay": 0.05, "optimizer": "adamw"})
    model = create_method("simclr", "test_resnet")
    optimizer = build_optimizer(cfg, model)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 0.0 if p.ndim <= 1 else 0.05  # BatchNorm weights/biases and Linear biases are 1-D
        assert decay[id(p)] == expected, name


def test_lars_is_timms_and_trains(tmp_path):
    cfg = load_config(overrides={"backbone": "test_resnet", "optimizer": "lars", "lr": 0.1})
    assert isinstance(build_optimizer(cfg, create_method("simclr", "test_resnet")), Lars)
    out = tmp_path / "run"
    assert (
        main(args(out, "--max-steps", "3", "--optimizer", "lars", "--lr", "0.1", "--export-name", "null"))
        == 0
    )


@pytest.mark.parametrize("fast", [True, False])
def test_mixed_precision_auto_follows_the_measured_speed(monkeypatch, fast):
    monkeypatch.setattr(pretrain, "bf16_is_fast", lambda device: fast)
    cfg = load_config(overrides={"backbone": "test_resnet"})
    assert build_accelerator(cfg).mixed_precision == ("bf16" if fast else "no")
    reset_accelerate_state()
    assert build_accelerator(load_config(overrides={"mixed_precision": "no"})).mixed_precision == "no"


@pytest.mark.parametrize(
    ("processes", "requested", "expected"), [(1, None, 8), (2, None, 4), (4, None, 2), (2, 3, 3)]
)
def test_threads_are_split_between_processes(monkeypatch, processes, requested, expected):
    monkeypatch.setattr(pretrain.os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    try:
        cfg = SimpleNamespace(num_threads=requested)
        setup_threads(cfg, SimpleNamespace(device=torch.device("cpu"), num_processes=processes))
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
