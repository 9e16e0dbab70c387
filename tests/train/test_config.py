"""Where a run's configuration comes from: the embedded default only for the synthetic demo, export names never
reused by a run they were not written for, paths stored absolute, flags people mistype, bounded recipes."""

import json
import re
from pathlib import Path

import pytest

from medssl_zoo.train.config import build_parser, load_config, parse_args
from medssl_zoo.train.pretrain import main
from tests.zoo.data import trees


def test_a_named_dataset_starts_from_the_built_in_defaults(tmp_path):
    cfg = load_config(overrides={"dataset": "imagefolder", "data_root": str(tmp_path)})
    assert cfg.dataset_options == {} and cfg.export_name is None
    assert (cfg.backbone, cfg.image_size, cfg.batch_size, cfg.optimizer) == ("resnet50", 224, 64, "sgd")
    bare = load_config()  # the synthetic demo: the embedded default recipe
    assert (bare.backbone, bare.image_size, bare.export_name) == ("test_resnet", 64, "simclr-synthetic")


def test_pretraining_on_my_own_folder_without_a_recipe(tmp_path):
    """The second thing a new user does: their own class folders, no recipe, no --dataset-options."""
    trees.imagefolder(tmp_path / "histo", per_class=12)
    small = ["--backbone", "test_resnet", "--image-size", "32", "--batch-size", "8", "--max-steps", "2"]
    out = tmp_path / "run"
    argv = [
        "--dataset",
        "imagefolder",
        "--data-root",
        str(tmp_path / "histo"),
        *small,
        "--output-dir",
        str(out),
    ]
    assert main([*argv, "--progress", "false", "--knn-k", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "imagefolder" and "exported_to" not in summary


@pytest.mark.parametrize(
    ("recipe", "overrides", "export_name"),
    [
        (None, {}, "simclr-synthetic"),
        (None, {"max_steps": 5}, "simclr-synthetic"),
        (None, {"method": "dino"}, None),  # another method: never over the SimCLR demo's export
        ("default", {"dataset": "imagefolder"}, None),
        ("default", {"dataset_options": {}}, "simclr-synthetic"),
        (None, {"method": "dino", "export_name": "my-dino"}, "my-dino"),  # named by the user: kept
    ],
)
def test_an_export_name_is_never_reused_by_a_run_it_was_not_written_for(
    recipe, overrides, export_name, tmp_path
):
    overrides = {**overrides, "data_root": str(tmp_path)} if overrides.get("dataset") else overrides
    assert load_config(recipe, overrides).export_name == export_name


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(overrides={"dataset": "imagefolder", "data_root": "data", "output_dir": "runs/a"})
    assert cfg.data_root == str(tmp_path / "data") and cfg.output_dir == str(tmp_path / "runs" / "a")


def test_a_moved_dataset_names_config_yaml_and_the_flag(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = load_config(overrides={"dataset": "imagefolder", "data_root": str(tmp_path / "gone")}).to_dict()
    (run / "config.yaml").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=re.escape(f"recorded in {run / 'config.yaml'} does not exist")) as e:
        parse_args(["--output-dir", str(run), "--resume"])
    assert "--data-root DIR" in str(e.value)


def test_config_yaml_spellings_and_mistyped_flags(capsys):
    cfg, _ = parse_args(["--max_steps", "3", "--batch_size=16", "--output-dir", "null"])
    assert (cfg.max_steps, cfg.batch_size) == (3, 16)
    for flag, hint in (
        ("--learning-rate", "--lr"),
        ("--max-stesp", "--max-steps"),
        ("--bakcbone", "--backbone"),
    ):
        with pytest.raises(SystemExit):
            parse_args([flag, "1"])
        assert f"{flag}: did you mean {hint}" in capsys.readouterr().err


def test_help_says_which_defaults_a_bare_run_uses():
    text = build_parser().format_help()
    assert "(default: resnet50; default recipe: test_resnet)" in re.sub(r"\s+", " ", text)
    assert "python -m hub" not in text and "train/recipes" not in text  # works from the wheel too


def test_local_crops_larger_than_the_views_say_what_fits():
    with pytest.raises(
        ValueError, match=r"local_size must be in 8..image_size \(64\), got 96.*--local-size 27"
    ):
        load_config(overrides={"method": "dino", "local_crops": 6, "local_size": 96})


def test_an_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="recipe vicreg-brest not found; .*vicreg-breast"):
        load_config("vicreg-brest")
    assert Path(load_config("vicreg-breast").to_dict()["method"]) == Path("vicreg")


def test_study_recipes_extend_one_base_and_resolve_as_before(tmp_path):
    """The 24 study recipes name only method, dataset (and channels); the rest is study.yaml / study-paper.yaml."""
    from medssl_zoo.train.config import RECIPE_DIR

    small = [
        p
        for p in RECIPE_DIR.glob("*-*.yaml")
        if "\nextends: study" in p.read_text() and p.stem != "study-paper"
    ]
    assert len(small) == 24 and all(len(p.read_text().splitlines()) <= 5 for p in small)
    cfg = load_config("vicreg-pneumonia-paper", {"data_root": str(tmp_path)})
    assert (cfg.method, cfg.dataset, cfg.channels, cfg.momentum, cfg.warmup_steps) == (
        "vicreg",
        "pneumonia",
        3,
        0.0,
        0,
    )
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: simclr-crc\nlr: 0.05\n")  # a user's recipe on top of a shipped one
    cfg = load_config(mine, {"data_root": str(tmp_path)})
    assert (cfg.method, cfg.dataset, cfg.lr, cfg.momentum) == ("simclr", "crc", 0.05, 0.9)
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ValueError, match="goes round in a circle"):
        load_config(tmp_path / "a.yaml")
