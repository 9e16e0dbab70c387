"""train/evaluate.py and train/reproduce.py end to end on small runs."""

import json
import logging
import shutil

import pytest

from train import evaluate, reproduce


@pytest.fixture
def tiny_run(tiny_export):
    return tiny_export.parent / "run"


def test_evaluate_a_run_directory_with_baselines_fractions_and_seeds(tiny_run, tmp_path):
    out = tmp_path / "eval"
    argv = [
        str(tiny_run),
        "--output-dir",
        str(out),
        "--fractions",
        "0.2,1.0",
        "--seeds",
        "0,1",
        "--protocols",
        "knn,knn_euclidean,linear,mlp",
        "--mlp-epochs",
        "5",
        "--baselines",
        "random,imagenet",
    ]
    assert evaluate.main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    encoders = {r["encoder"] for r in result["summary"]}
    assert encoders == {"ssl", "random-init"}  # ImageNet weights cannot be downloaded here: logged, left out
    row = next(
        r
        for r in result["summary"]
        if r["encoder"] == "ssl" and r["protocol"] == "linear" and r["fraction"] == 0.2
    )
    assert row["seeds"] == 2 and row["accuracy_std"] is not None and 0 <= row["accuracy"] <= 1
    for name in ("results.md", "confusion_matrix.png", "label_fraction.png", "tsne.png", "roc.png"):
        assert (out / name).is_file(), name
    assert "| ssl | linear | 100% |" in (out / "results.md").read_text()


def test_evaluate_a_checkpoint_and_an_export(tiny_run, tiny_export, tmp_path):
    checkpoint = next((tiny_run / "checkpoints").glob("step_*"))
    common = [
        "--fractions",
        "1.0",
        "--seeds",
        "0",
        "--protocols",
        "linear",
        "--baselines",
        "none",
        "--no-plots",
    ]
    assert evaluate.main([str(checkpoint), "--output-dir", str(tmp_path / "a"), *common]) == 0
    assert evaluate.main([str(tiny_export), "--output-dir", str(tmp_path / "b"), *common]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["summary"][0]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["summary"][0]
    assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-9)  # the same final encoder, the same split


def test_fine_tuning_protocol_runs(tiny_run, tmp_path):
    argv = [
        str(tiny_run),
        "--output-dir",
        str(tmp_path),
        "--fractions",
        "1.0",
        "--seeds",
        "0",
        "--protocols",
        "finetune",
        "--finetune-epochs",
        "1",
        "--baselines",
        "none",
        "--no-plots",
    ]
    assert evaluate.main(argv) == 0


def test_bad_inputs(tiny_run, tiny_export, tmp_path, caplog):
    common = [
        "--seeds",
        "0",
        "--protocols",
        "linear",
        "--baselines",
        "none",
        "--no-plots",
        "--output-dir",
        str(tmp_path),
    ]
    assert evaluate.main([str(tiny_run), "--fractions", "0.001", *common]) == 2
    assert "leaves class" in caplog.text
    broken = shutil.copytree(tiny_export, tmp_path / "three-classes")
    config = json.loads((broken / "config.json").read_text())
    config["label_names"] = ["a", "b", "c"]
    (broken / "config.json").write_text(json.dumps(config))
    assert evaluate.main([str(broken), "--fractions", "1.0", *common]) == 2
    assert "3 label_names for num_classes = 4" in caplog.text
    manifest = tmp_path / "split.csv"
    manifest.write_text((tiny_run / "split.csv").read_text().replace("tile/1,", "tile/99999,", 1))
    assert evaluate.main([str(tiny_run), "--fractions", "1.0", "--manifest", str(manifest), *common]) == 2
    assert "does not match the files on disk" in caplog.text
    with pytest.raises(SystemExit):
        evaluate.parse_args([str(tiny_run), "--protocols", "svm"])


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
