"""train/reproduce.py end to end on small synthetic cells: the table, resuming, paper mode, ImageNet-init cells."""

import json
import logging

import torch

from medssl_zoo.train import reproduce
from zoo.run_dir import read_run


def test_reproduce_on_synthetic_is_resumable(tmp_path, caplog):
    argv = [
        "--methods",
        "simclr,vicreg",
        "--synthetic-steps",
        "3",
        "--protocols",
        "knn,linear",
        "--fractions",
        "1.0",
        "--seeds",
        "0",
        "--out",
        str(tmp_path),
        "--pretrain-args",
        "--dataset-options '{num_images: 96}' --image-size 32 --batch-size 16 --knn-k 5",
    ]
    assert reproduce.main(argv) == 0
    table = (tmp_path / "results.md").read_text()
    assert "| synthetic | simclr | ssl | linear | 100% |" in table and "| synthetic | vicreg | ssl |" in table
    assert "| synthetic | — | random-init | linear |" in table
    assert (tmp_path / "results.csv").read_text().startswith("dataset,method,encoder,protocol")
    assert (tmp_path / "summary.png").is_file()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="reproduce")
    assert reproduce.main(argv) == 0
    assert caplog.text.count("finished earlier, skipped") == 2


def test_an_interrupted_cell_resumes_and_paper_mode_reaches_the_cells(tmp_path, caplog):
    common = ["--methods", "simclr", "--synthetic-steps", "4", "--protocols", "knn", "--fractions", "1.0"]
    common += ["--seeds", "0", "--out", str(tmp_path), "--paper-mode", "--baselines", "none"]
    tiny = (
        "--dataset-options '{num_images: 96}' --image-size 32 --batch-size 16 --knn-k 5 --checkpoint-every 2"
    )
    assert reproduce.main([*common, "--pretrain-args", f"{tiny} --halt-at-step 2"]) == 2  # a cell cut short
    assert "did not finish" in caplog.text
    run_dir = tmp_path / "runs" / "simclr-synthetic-paper"
    caplog.clear()
    caplog.set_level(logging.INFO, logger="reproduce")
    assert reproduce.main([*common, "--pretrain-args", tiny]) == 0
    assert "simclr-synthetic-paper: pre-training (resuming)" in caplog.text
    run = read_run(run_dir)
    assert run.finished and run.config.paper_mode is True and run.config.augment == "simclr"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "step"] == [1, 2, 3, 4]  # each step once


def test_reproduce_adds_an_imagenet_init_cell(tmp_path):
    from safetensors.torch import save_file

    from zoo import create_backbone

    weights = tmp_path / "test_resnet_imagenet.safetensors"
    torch.manual_seed(5)
    save_file(create_backbone("test_resnet").state_dict(), str(weights))
    argv = ["--methods", "simclr", "--synthetic-steps", "2", "--protocols", "knn", "--fractions", "1.0"]
    argv += ["--seeds", "0", "--baselines", "none", "--out", str(tmp_path / "out"), "--imagenet-init"]
    argv += [
        "--init-weights",
        str(weights),
        "--pretrain-args",
        "--dataset-options '{num_images: 96}' --image-size 32 --batch-size 16 --knn-k 5",
    ]
    assert reproduce.main(argv) == 0
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| synthetic | simclr | ssl |" in table and "| synthetic | simclr (ImageNet init) | ssl |" in table
    assert read_run(tmp_path / "out" / "runs" / "simclr-synthetic-imagenet-init").config.init == "imagenet"
