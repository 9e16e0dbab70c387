"""The shipped recipes and the options they set reach the run: the study's values, splits and manifests, --help."""

import pytest
import yaml

from medssl_zoo.train.config import RECIPE_DIR, load_config
from medssl_zoo.train.pretrain import main
from tests.train.tiny import args
from zoo.data.splits import read_manifest

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
