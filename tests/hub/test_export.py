"""The export against a second computation: the folded classifier, loaded back, scores exactly what the probe
scored; a crash while writing leaves the previous export whole; the CLI."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medssl_zoo.hub.export as export_module
import zoo
from medssl_zoo.hub.export import export_run
from zoo.data.splits import file_sha256
from zoo.files import temporary_path
from zoo.hub_format import is_export
from zoo.probe import LinearProbe, extract_features, fit_linear_probe
from zoo.run_config import RunConfig, build, from_stored
from zoo.run_dir import SPLIT_FILE, read_run

ROOT = Path(__file__).resolve().parents[2]


def test_the_zoo_block_records_the_run(tiny_run, tiny_export):
    block = json.loads((tiny_export / "config.json").read_text())["zoo"]
    cfg = read_run(tiny_run).config
    assert (block["probe_dataset"], block["method"], block["seed"]) == ("synthetic", "simclr", cfg.seed)
    assert (block["init"], block["eval_split"], block["encoder"]) == ("random", "test", "the backbone")
    assert block["training"] == f"adamw lr {cfg.lr}, batch 16, 4 steps"
    assert {"knn_accuracy", "linear_accuracy"} <= set(block["metrics"])
    assert block["split_manifest_sha256"] == file_sha256(tiny_run / SPLIT_FILE)
    assert block["config"] == export_module.published_config(cfg)
    assert (
        json.loads((tiny_export / "config.json").read_text())["pretrained_cfg"]["license"]
        == "CC0 (generated)"
    )


def test_loaded_export_scores_the_stored_linear_accuracy_on_the_runs_test_split(tiny_run, tiny_export):
    """zoo.load(export) on the run's own test split, through the model's own eval transform, gives the accuracy the
    export recorded: the standardisation of the probe is folded into timm's classifier, not lost."""
    run = read_run(tiny_run)
    data = run.load_data()
    model = zoo.load(tiny_export)
    logits = extract_features(
        model, data.test[0], data.eval_transform, autocast=False
    )  # the classifier's outputs
    accuracy = (logits.argmax(dim=1) == data.test[1]).float().mean().item()
    stored = json.loads((tiny_export / "config.json").read_text())["zoo"]["metrics"]["linear_accuracy"]
    assert accuracy == pytest.approx(stored, abs=1e-9)
    # a second computation: the probe refitted on the run's encoder, applied with its standardisation, agrees
    # with the exported layer on raw features (the standardisation was folded in, not dropped)
    encoder = run.load_encoder()
    feats = {
        s: extract_features(encoder, x, data.eval_transform, autocast=False)
        for s, (x, _) in data.splits.items()
    }
    probe = fit_linear_probe(feats["train"], data.train[1], feats["val"], data.val[1])
    with torch.no_grad():
        exported = model.get_classifier()(feats["test"])
    torch.testing.assert_close(exported, probe.logits(feats["test"]), rtol=1e-4, atol=1e-4)
    unfolded = feats["test"] @ probe.weight.T + probe.bias  # an export that forgot the folding computes this
    assert not torch.allclose(exported, unfolded, atol=1e-2)


def test_a_crash_while_writing_keeps_the_previous_export(tiny_run, tmp_path, monkeypatch):
    first = export_run(tiny_run, tmp_path / "model")
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    def power_cut(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "save_safetensors", power_cut)
    with pytest.raises(OSError, match="disk full"):
        export_run(tiny_run, tmp_path / "model")
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # whole, unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind


def test_export_and_push_command_lines(tiny_run, tmp_path):
    out = tmp_path / "cli-model"
    proc = subprocess.run(
        [sys.executable, "-m", "medssl_zoo.hub.export", str(tiny_run), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and zoo.load(out).label_names
    help_text = subprocess.run(
        [sys.executable, "-m", "medssl_zoo.hub.push", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--tag" in help_text and "HF_TOKEN" in help_text


def test_the_zoo_block_of_older_and_epoch_based_runs(tiny_run):
    stored = dict(read_run(tiny_run).config.to_dict(), max_steps=None, epochs=200)
    del stored["init"]  # a run made before --init existed
    cfg = from_stored(stored, "config.yaml")
    block = export_module._zoo_metadata(cfg, {"linear_accuracy": 0.5}, tiny_run, "synthetic")
    assert set(block) == {  # the hub format's zoo block (DESIGN.md), read by the card, the demo and `zoo info`
        "probe_dataset", "task", "method", "dataset", "seed", "paper_mode", "grouped_split", "init", "encoder", "config",
        "eval_split", "training", "metrics", "split_manifest_sha256", "code_version",
    }  # fmt: skip
    assert (block["probe_dataset"], block["seed"], block["eval_split"]) == ("synthetic", cfg.seed, "test")
    assert block["metrics"] == {"linear_accuracy": 0.5} and block["code_version"] == zoo.__version__
    assert block["init"] == "random" and block["training"].endswith(", 200 epochs")
    steps = export_module._zoo_metadata(cfg.model_copy(update={"max_steps": 4}), {}, tiny_run, "synthetic")
    assert steps["training"].endswith(", 4 steps")
    assert (
        export_module._zoo_metadata(cfg.model_copy(update={"init": "imagenet"}), {}, tiny_run, "synthetic")[
            "init"
        ]
        == "imagenet"
    )


def test_published_config_keeps_no_path_of_the_training_machine():
    paths = {"data_root": "/home/a/data", "output_dir": "/home/a/runs/x", "init": "imagenet"}
    files = {"split_manifest": "/home/a/splits/breast-split.csv", "init_weights": "/home/a/w/r50.safetensors"}
    public = export_module.published_config(build({**paths, **files}))
    assert "data_root" not in public and "output_dir" not in public
    assert (public["split_manifest"], public["init_weights"]) == ("breast-split.csv", "r50.safetensors")
    assert export_module.published_config(build(paths))["split_manifest"] is None
    assert set(public) == set(RunConfig.model_fields) - {"data_root", "output_dir"}


def safetensors_metadata(folder):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return f.metadata()


def test_build_classifier_builds_vits_at_the_runs_input_size():
    encoder = zoo.create_backbone("test_vit", image_size=32)
    f = encoder.num_features
    probe = LinearProbe(torch.randn(3, f), torch.zeros(3), torch.zeros(f), torch.ones(f), 1.0, 0.0)
    model = export_module.build_classifier(encoder, "test_vit", 3, probe, image_size=32)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_build_classifier_refuses_weights_the_architecture_does_not_have():
    encoder = zoo.create_backbone("test_resnet")
    encoder.register_buffer(
        "stray", torch.zeros(1)
    )  # an extra tensor only: the head keys are still the missing ones
    f = encoder.num_features
    probe = LinearProbe(torch.randn(2, f), torch.zeros(2), torch.zeros(f), torch.ones(f), 1.0, 0.0)
    with pytest.raises(
        ValueError, match=r"^encoder and test_resnet disagree: missing .* unexpected \['stray'\]"
    ):
        export_module.build_classifier(encoder, "test_resnet", 3, probe)


def test_write_folder_makes_missing_parents_and_clears_its_own_stale_temporary_folder(tiny_export, tmp_path):
    out = tmp_path / "a" / "b" / "model"
    stale = temporary_path(out)  # the name an export of this process id left when it crashed
    stale = stale.with_name(stale.name.rsplit("-", 1)[0] + "-00000000")
    stale.mkdir(parents=True)
    assert stale.name.startswith(".model.tmp-")
    (stale / "junk").write_text("x")
    model = zoo.load(tiny_export)
    config = json.loads((tiny_export / "config.json").read_text())
    export_module.write_folder(out, model, config, "card\n")
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]
    deeper = tmp_path / "x" / "y" / "model"  # no parent exists yet
    assert export_module.write_folder(deeper, model, config, "card\n") == deeper and is_export(deeper)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert safetensors_metadata(out) == {"format": "pt"}  # transformers / timm refuse other formats
    assert (
        json.loads((out / "config.json").read_text()) == config
        and (out / "README.md").read_text() == "card\n"
    )


def test_export_cli_logs_its_progress(tiny_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "medssl_zoo.hub.export", str(tiny_run), str(tmp_path / "m")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "INFO " in proc.stderr, proc.stderr  # progress is logged at INFO


def test_export_main_documents_its_arguments_and_defaults_to_zoo_home(
    tiny_run, tmp_path, monkeypatch, capsys
):
    with pytest.raises(SystemExit) as exited:
        export_module.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 0
    for phrase in (
        "run_dir the run directory (runs/<method>-<dataset>-<time>)",
        "out_dir destination folder (default: $ZOO_HOME/<method>-<dataset>)",
        "--force if OUT_DIR exists and is not an earlier export, move it aside (renamed, never deleted) first",
    ):
        assert phrase in help_text, phrase
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    assert export_module.main([str(tiny_run)]) == 0
    assert zoo.load(tmp_path / "home" / "simclr-synthetic").label_names


def test_a_vit_run_at_32_px_exports_loads_back_and_names_its_repo(tmp_path, caplog):
    """A ViT trained at the run's input size (not timm's 224) is rebuilt at that size by zoo.load and plain timm."""
    from medssl_zoo.train.pretrain import main
    from tests.helpers.accelerate_state import reset_accelerate_state
    from tests.hub.test_roundtrip import plain_timm_logits, same_logits
    from tests.train.tiny import args

    reset_accelerate_state()
    assert (
        main(args(tmp_path / "run", "--backbone", "test_vit", "--max-steps", "2", "--export-name", "null"))
        == 0
    )
    reset_accelerate_state()
    with caplog.at_level(logging.INFO):
        out = export_run(tmp_path / "run", tmp_path / "vit", repo_id="medssl-test/vit-tiny")
    assert f"exported {tmp_path / 'run'} → {out} (linear " in caplog.text and ", kNN " in caplog.text
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["img_size"] == 32 and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert (
        config["pretrained_cfg"]["license"] == "CC0 (generated)"
        and config["zoo"]["probe_dataset"] == "synthetic"
    )
    same_logits(zoo.load(out), plain_timm_logits(f"local-dir:{out}", tmp_path))
    assert "medssl-test/vit-tiny" in (out / "README.md").read_text()


def test_a_foreign_folder_is_refused_naming_its_first_five_files(tmp_path):
    many, two = tmp_path / "many", tmp_path / "two"
    for folder, names in ((many, [f"f{i}.txt" for i in range(7)]), (two, ["a", "b"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_text("mine")
    with pytest.raises(
        export_module.ExportError, match=r"\(it holds f0.txt, f1.txt, f2.txt, f3.txt, f4.txt …\); "
    ):
        export_module.check_destination(many)
    with pytest.raises(export_module.ExportError, match=r"\(it holds a, b\); nothing was changed"):
        export_module.check_destination(two)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of ``text`` as rows of cells: a table is a run of consecutive lines starting with '|',
    its second line the |---| separator (what a renderer such as the Hub's parses)."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            tables.append(block)
        i += 1
    return tables


def test_the_cards_tables_parse_as_tables(tiny_export):
    """Every line of the card that looks like a table row belongs to a table with a header and a separator (a blank
    line inside the Training table once turned its rows from "backbone" on into text)."""
    card = (tiny_export / "README.md").read_text()
    tables = markdown_tables(card)
    assert len(tables) >= 2
    for table in tables:
        assert len(table) >= 3 and set("".join(table[1])) <= set("-: "), table[:2]  # header, separator, rows
        assert all(len(row) == len(table[0]) for row in table), table
    training = next(t for t in tables if any(row[0] == "method" for row in t))
    assert [row[0] for row in training[2:]][:4] == [
        "method",
        "exported encoder",
        "initialisation",
        "backbone",
    ]
    assert {"seed", "paper mode", "split manifest sha256", "code version"} <= {row[0] for row in training}
