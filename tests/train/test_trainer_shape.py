"""The training loop's shape (issue 20.5): one owner for each piece the loop uses — the view pipeline owns the
augmenters, the method spec owns DINO's freeze_last_layer, the Trainer makes its progress bar when it is built."""

import pytest
import torch

from medssl_zoo.train.config import parse_args
from medssl_zoo.train.pipeline import MultiCropViews
from medssl_zoo.train.pretrain import Trainer, build_model
from tests.train.tiny import args
from zoo.methods import get_method_spec


def test_dino_freezes_its_last_layer_for_the_first_epoch_by_its_spec(tmp_path):
    assert get_method_spec("dino").options_for_run(0.25) == {"freeze_last_layer": 0.25}
    assert get_method_spec("simclr").options_for_run(0.25) == {}
    cfg, _ = parse_args(args(tmp_path / "run", "--method", "dino", "--ema-momentum", "0.99"))
    from accelerate import Accelerator

    dino = build_model(cfg, 3, Accelerator(cpu=True), epoch_fraction=0.25)
    assert dino.freeze_last_layer == 0.25 and dino.momentum_base == 0.99


@pytest.mark.timeout(300)
def test_the_trainer_hands_its_augmenters_to_the_pipeline_and_has_its_bar(tmp_path):
    cfg, _ = parse_args(
        args(tmp_path / "run", "--method", "dino", "--local-crops", "2", "--local-size", "16")
    )
    trainer = Trainer(cfg)
    views = trainer.pipeline.make_views
    assert isinstance(views, MultiCropViews) and views.local_crops == 2
    images, ids = next(iter(trainer.loader))
    made = views(images, ids, epoch=0)
    assert [v.shape[-1] for v in made] == [32, 32, 16, 16]
    assert trainer.bar.total == trainer.steps  # made in __init__, not by run()
    assert not hasattr(trainer, "make_views")  # no Trainer callback: the pipeline makes the views


@pytest.mark.timeout(300)
def test_the_run_s_batches_are_exactly_those_its_steps_use(tmp_path):
    """issue 21.6: one stream of (epoch, batch) over the whole run (the pipeline prepares an epoch's first batch
    during the previous epoch's last step), from a resumed position to the last step, left on the host."""
    cfg, _ = parse_args(args(tmp_path / "run", "--max-steps", "6", "--grad-accum-steps", "3"))
    trainer = Trainer(cfg)
    per_epoch = trainer.batches_per_epoch  # 4 batches: steps of 3 + 1 batches, 2 steps per epoch
    trainer.state.step = 1  # resumed after the first step: the first epoch's first 3 batches are skipped
    seen = [(epoch, tuple(ids.tolist())) for epoch, (images, ids) in trainer.batches()]
    assert [epoch for epoch, _ in seen] == [0] + [1] * per_epoch + [
        2
    ] * per_epoch  # steps 2..6: 1 + 4 + 4 batches
    trainer.loader.set_epoch(1)
    assert [ids for epoch, ids in seen if epoch == 1] == [tuple(ids.tolist()) for _, ids in trainer.loader]
    images, _ = next(iter(trainer.loader))
    assert images.device.type == "cpu" and images.dtype == torch.uint8  # the pipeline moves the batches
