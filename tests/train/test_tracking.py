"""Experiment trackers for real: TensorBoard event files, an MLflow local file store, W&B offline; several at once;
a missing package is one clear line."""

import importlib.util
import os

import pytest
import yaml

from medssl_zoo.train.pretrain import main
from tests.train.tiny import args

RUN = ("--max-steps", "4", "--eval-every", "2", "--log-every", "1")


def test_tensorboard_mlflow_and_wandb_at_once(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    assert main(args(out, *RUN, "--log-with", "tensorboard,mlflow,wandb")) == 0
    # TensorBoard: per-step loss / lr / spread, every kNN evaluation, the final metrics and the curves image
    events = EventAccumulator(str(next(out.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"step/loss", "step/lr", "step/spread", "eval/knn", "final/knn_test_final"} <= scalars
    assert [e.step for e in events.Scalars("step/loss")] == [1, 2, 3, 4]
    assert len(events.Scalars("eval/knn")) == 3  # random-init, step 2, step 4
    assert events.Tags()["images"] == ["curves"]
    # MLflow: a local file store in the run directory; params, metrics per step, the curves artifact
    (run,) = [p for p in (out / "tracking" / "mlruns").glob("*/*") if (p / "meta.yaml").is_file()]
    assert (run / "params" / "lr").read_text() == "0.002"
    loss = [line.split() for line in (run / "metrics" / "step" / "loss").read_text().splitlines()]
    assert [int(step) for _, _, step in loss] == [1, 2, 3, 4]
    assert (run / "metrics" / "eval" / "knn").is_file() and (
        run / "metrics" / "final" / "knn_test_final"
    ).is_file()
    assert (run / "artifacts" / "curves.png").is_file()
    assert yaml.safe_load((run / "meta.yaml").read_text())["status"] == 3  # finished
    # W&B offline: a run folder with the configuration
    (wandb_run,) = (out / "tracking" / "wandb").glob("offline-run-*")
    assert any(wandb_run.glob("*.wandb"))
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the run's defaults do not leak into the next run


def test_a_missing_tracker_package_is_one_clear_line(tmp_path, caplog, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "comet_ml" else real(name, *a)
    )
    assert main(args(tmp_path / "run", *RUN, "--log-with", "tensorboard,comet_ml")) == 2
    assert "log_with=comet_ml needs the comet_ml package: pip install comet-ml" in caplog.text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["none", "tensorboard", "tensorboard,mlflow"])
def test_tracker_names_parse(value):
    from medssl_zoo.train.tracking import parse_trackers

    assert parse_trackers(value) == [v for v in value.split(",") if v != "none"]
