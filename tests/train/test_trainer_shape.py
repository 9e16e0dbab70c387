"""The training loop's shape (issue 20.5): one owner for each piece the loop uses — the view pipeline owns the
augmenters, the method spec owns DINO's freeze_last_layer, the Trainer makes its progress bar when it is built."""

import pytest

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
def test_a_resumed_epoch_keeps_non_blocking_copies(tmp_path):
    """issue 21.6: the loader of a resumed epoch (skip_first_batches) copies without blocking like the prepared one."""
    cfg, _ = parse_args(args(tmp_path / "run", "--max-steps", "10"))
    trainer = Trainer(cfg)
    assert trainer.loader._non_blocking  # DataLoaderConfiguration(non_blocking=True)
    trainer.state.step = 1  # one step into the first epoch: its first batch is skipped
    epoch, batches = next(trainer.epochs())
    assert epoch == 0 and batches is not trainer.loader
    assert batches._non_blocking
    assert len(list(batches)) == trainer.batches_per_epoch - 1
