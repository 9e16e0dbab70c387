"""Monitoring a run: collapse warnings, embedding health of unlabelled archives, kNN on an eval dataset."""

import json
import logging

import torch

from medssl_zoo.train import pretrain
from medssl_zoo.train.monitor import CollapseDetector
from medssl_zoo.train.pretrain import main
from tests.train.tiny import args, metrics


def test_collapse_is_reported_once_after_the_warmup(caplog):
    detector = CollapseDetector(threshold=0.05, after_step=2)
    assert not detector.update(1, 0.0)  # during the warmup: not yet
    assert not detector.update(3, 0.9)
    assert detector.update(4, 0.01) and not detector.update(5, 0.0)
    assert caplog.text.count("representation collapse") == 1


def test_a_collapsing_run_warns(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(pretrain, "embedding_spread", lambda z: torch.zeros(()))  # every embedding the same
    caplog.set_level(logging.WARNING)
    assert (
        main(args(tmp_path / "run", "--max-steps", "3", "--warmup-steps", "1", "--export-name", "null")) == 0
    )
    assert "representation collapse: embedding spread 0.000 at step 2" in caplog.text


def test_an_unlabelled_folder_run_monitors_health_or_an_eval_dataset(tmp_path, caplog, monkeypatch):
    from tests.zoo.data import trees

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    for i in range(3):
        trees.imagefolder(tmp_path / "archive" / f"scan{i}", per_class=12)
    common = ("--dataset", "folder", "--data-root", str(tmp_path / "archive"), "--dataset-options", "{}")
    common += (
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--cache",
        "disk",
        "--export-name",
        "unlabelled-model",
    )
    out = tmp_path / "health"
    assert main(args(out, *common)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["effective_rank_final"] > 1 and "knn_test_final" not in summary
    assert (
        "monitoring embedding health only" in caplog.text
        and "not exported: a classifier needs classes" in caplog.text
    )
    evals = [m for m in metrics(out) if m["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 2, 4] and all("effective_rank" in e for e in evals)
    probed = tmp_path / "probed"
    eval_args = ("--eval-dataset", "synthetic", "--eval-dataset-options", "{num_images: 96}")
    assert main(args(probed, *common, *eval_args)) == 0
    summary = json.loads((probed / "summary.json").read_text())
    assert summary["eval_dataset"] == "synthetic" and 0 < summary["knn_test_final"] <= 1
    from zoo import load

    exported = load("unlabelled-model")
    assert exported.label_names == ["small_round", "large", "spindle", "gland"]
    assert (
        exported.zoo_metadata["probe_dataset"] == "synthetic" and exported.zoo_metadata["dataset"] == "folder"
    )
