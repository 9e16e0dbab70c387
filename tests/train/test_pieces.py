"""train/'s pieces on their own: optimizer groups, precision and thread choices, collapse detection, the study
recipes' values, configuration plumbing into the data."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch
import yaml
from timm.optim import Lars

from medssl_zoo.train import pretrain
from medssl_zoo.train.config import RECIPE_DIR, load_config
from medssl_zoo.train.monitor import CollapseDetector
from medssl_zoo.train.pretrain import build_accelerator, build_optimizer, main, setup_threads
from tests.helpers.accelerate_state import reset_accelerate_state
from tests.train.tiny import args, metrics
from zoo import create_method
from zoo.data.splits import read_manifest


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


STUDY = {"simclr", "dclw", "simsiam", "vicreg"}, {"breast", "crc", "pneumonia"}


@pytest.mark.parametrize("paper", [False, True])
def test_the_24_study_recipes_carry_the_studys_values(paper):
    names = [f"{m}-{d}{'-paper' if paper else ''}" for m in sorted(STUDY[0]) for d in sorted(STUDY[1])]
    assert len(names) == 12
    for name in names:
        raw = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())
        cfg = load_config(name)
        assert (
            cfg.backbone,
            cfg.image_size,
            cfg.batch_size,
            cfg.optimizer,
            cfg.lr,
            cfg.epochs,
            cfg.knn_k,
        ) == (
            "resnet50",
            224,
            64,
            "sgd",
            0.01,
            200,
            200,
        ), name
        assert (
            cfg.method == name.split("-")[0]
            and cfg.dataset == name.split("-")[1]
            and raw["method"] == cfg.method
        )
        if paper:  # the original code: SGD without momentum or schedule, Euclidean kNN, its augmentation
            assert (cfg.paper_mode, cfg.momentum, cfg.weight_decay, cfg.schedule) == (
                True,
                0.0,
                0.0,
                "constant",
            )
            assert (cfg.knn_metric, cfg.augment) == ("euclidean", "original"), name
        else:
            assert not cfg.paper_mode and cfg.momentum == 0.9 and cfg.schedule == "cosine", name


def test_grouped_split_and_split_manifest_reach_the_data(tmp_path):
    out = tmp_path / "grouped"
    common = ("--max-steps", "1", "--export-name", "null", "--dataset-options", "{num_images: 160}")
    assert main(args(out, *common, "--grouped-split", "true")) == 0
    sides: dict[str, set] = {}
    for _, _, split, group in read_manifest(out / "split.csv"):
        sides.setdefault(group, set()).add(split)
    assert len(sides) > 3 and all(len(s) == 1 for s in sides.values())  # slides never straddle splits
    ungrouped = tmp_path / "ungrouped"
    assert main(args(ungrouped, *common)) == 0
    assert (ungrouped / "split.csv").read_text() != (out / "split.csv").read_text()
    reused = tmp_path / "reused"
    assert main(args(reused, *common, "--split-manifest", str(out / "split.csv"))) == 0
    assert (reused / "split.csv").read_text() == (out / "split.csv").read_text()


def test_every_option_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    from zoo.run_config import RunConfig

    for name, field in RunConfig.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        assert flag in text and field.description, flag
    for group in (
        "what to train",
        "data and augmentation",
        "optimisation",
        "monitoring, checkpoints and outputs",
    ):
        assert group in text
    assert "One of: sgd, adam, adamw, lars" in text


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
