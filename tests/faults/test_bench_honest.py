"""The throughput bench measures what it says (issue 21.7): at least 8 batches per epoch at every batch size, and
a compute bound that is the real step (optimizer step and EMA included), not a bare forward + backward."""

import importlib.util
from pathlib import Path

import pytest
import torch

from medssl_zoo.train.config import parse_args
from medssl_zoo.train.pretrain import Trainer
from tests.train.tiny import args

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pretrain_throughput.py"


def _bench():
    spec = importlib.util.spec_from_file_location("pretrain_throughput_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("batch", [16, 32, 128, 256])
def test_every_batch_size_gets_at_least_eight_batches_per_epoch(tmp_path, batch):
    bench = _bench()
    num_images = bench.images_for(batch)
    cfg, _ = parse_args(args(tmp_path / "run", "--batch-size", str(batch)))
    from zoo.data.dataset import load_dataset

    dataset = load_dataset("synthetic", num_images=num_images, size=32)
    train = len(dataset.indices("train"))
    assert train // cfg.batch_size >= bench.MIN_BATCHES, (num_images, train)


@pytest.mark.timeout(300)
def test_the_compute_bound_includes_the_optimizer_step_and_the_ema(tmp_path):
    cfg, _ = parse_args(args(tmp_path / "run", "--method", "byol", "--max-steps", "20"))
    trainer = Trainer(cfg)
    method = trainer.method
    student = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    teacher = {k: v.clone() for k, v in method.teacher_backbone.state_dict().items()}
    steps = trainer.state.step
    assert _bench().compute_bound(trainer, cfg, steps=2) > 0
    assert trainer.state.step == steps + 4  # 2 warm-up + 2 timed optimizer steps
    moved = [
        k
        for k, v in method.backbone.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, student[k])
    ]
    assert moved  # the optimizer stepped
    followed = [
        k
        for k, v in method.teacher_backbone.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, teacher[k])
    ]
    assert followed  # the EMA teacher followed the student


def test_asking_for_the_lightly_peer_without_lightly_is_one_clear_line(monkeypatch, capsys):
    """Refused before any configuration runs (it was a traceback from the first child process)."""
    bench = _bench()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lightly" else real(name, *a)
    )
    monkeypatch.setattr(bench, "run_child", lambda *a, **k: pytest.fail("a configuration ran"))
    monkeypatch.setattr(bench.sys, "argv", ["pretrain_throughput.py", "--only", "default", "--lightly"])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == 2
    assert "--lightly needs lightly: `pip install lightly`" in capsys.readouterr().err
