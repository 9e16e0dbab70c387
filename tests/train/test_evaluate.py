"""train/evaluate.py (the evaluation API and its CLI) end to end on small runs."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from medssl_zoo.train import evaluate, evaluation
from zoo.probe import extract_features, knn_accuracy
from zoo.run_dir import read_run


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
        "random",
    ]
    assert evaluate.main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    encoders = {r["encoder"] for r in result["summary"]}
    assert encoders == {"ssl", "random-init"}
    row = next(
        r
        for r in result["summary"]
        if r["encoder"] == "ssl" and r["protocol"] == "linear" and r["fraction"] == 0.2
    )
    runs = [
        r["accuracy"]
        for r in result["runs"]
        if r["encoder"] == "ssl" and r["protocol"] == "linear" and r["fraction"] == 0.2
    ]
    assert row["seeds"] == 2 and len(runs) == 2
    assert row["accuracy"] == pytest.approx(np.mean(runs)) and row["accuracy_std"] == pytest.approx(
        np.std(runs)
    )
    # the full-label kNN against a direct computation on the run's own data and encoder
    run = read_run(tiny_run)
    data, encoder = run.load_data(), run.load_encoder()
    feats = {s: extract_features(encoder, x, data.eval_transform) for s, (x, _) in data.splits.items()}
    direct = knn_accuracy(feats["train"], data.train[1], feats["test"], data.test[1], 4, k=5, metric="cosine")
    knn = next(
        r
        for r in result["summary"]
        if r["encoder"] == "ssl" and r["protocol"] == "knn" and r["fraction"] == 1.0
    )
    assert knn["accuracy"] == pytest.approx(direct, abs=1e-6)  # float32 vs float64 of the same count
    baseline = next(r for r in result["summary"] if r["encoder"] == "random-init" and r["protocol"] == "knn")
    assert baseline["accuracy"] != knn["accuracy"]
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


def test_fine_tuning_trains_a_copy_and_scores_it(tiny_run, tmp_path):
    run = read_run(tiny_run)
    data, encoder = run.load_data(), run.load_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    options = evaluation.EvalOptions(finetune_epochs=2)
    task = evaluation.ProbeTask(encoder, data, {}, {}, torch.arange(len(data.train[1])), 0, options, 5)
    probabilities = evaluation.predict_finetune(task)["test"]  # val and test: multi-label thresholds need val
    assert probabilities.shape == (len(data.test[1]), 4)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(data.test[1])))
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())  # the source is untouched
    frozen = torch.softmax(
        extract_features(encoder, data.test[0], data.eval_transform) @ torch.zeros(96, 4), 1
    )
    assert not torch.allclose(probabilities, frozen)  # a trained head, not a uniform guess
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
        "5",
        "--baselines",
        "none",
        "--no-plots",
    ]
    assert evaluate.main(argv) == 0
    row = json.loads((tmp_path / "metrics.json").read_text())["summary"][0]
    assert row["protocol"] == "finetune" and row["accuracy"] > 0.3 and row["auroc"] > 0.6  # chance: 0.25, 0.5


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


def test_imagenet_baseline_from_a_local_weights_file(tiny_run, tmp_path):
    from safetensors.torch import save_file

    from zoo import create_backbone

    weights = tmp_path / "test_resnet_imagenet.safetensors"
    torch.manual_seed(3)
    save_file(create_backbone("test_resnet").state_dict(), str(weights))
    argv = [str(tiny_run), "--output-dir", str(tmp_path / "eval"), "--fractions", "1.0", "--seeds", "0"]
    argv += ["--protocols", "knn", "--baselines", "imagenet", "--weights", str(weights), "--no-plots"]
    assert evaluate.main(argv) == 0
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {r["encoder"] for r in result["summary"]} == {"ssl", "imagenet-supervised"}


def test_an_unlabelled_run_is_evaluated_on_its_eval_dataset_or_a_named_one(tmp_path, caplog, monkeypatch):
    """19.3: a --dataset folder run, with and without --eval-dataset."""
    from medssl_zoo.train.pretrain import main as pretrain
    from tests.train.tiny import args
    from tests.zoo.data import trees

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    trees.imagefolder(tmp_path / "archive", per_class=12)
    common = ("--dataset", "folder", "--data-root", str(tmp_path / "archive"), "--dataset-options", "{}")
    common += ("--max-steps", "2", "--export-name", "null")
    assert pretrain(args(tmp_path / "bare", *common)) == 0
    quick = ["--protocols", "knn", "--fractions", "1.0", "--seeds", "0", "--baselines", "none", "--no-plots"]
    assert evaluate.main([str(tmp_path / "bare"), *quick]) == 2
    assert (
        "pre-trained on an unlabelled folder" in caplog.text
        and "--dataset NAME --data-root DIR" in caplog.text
    )
    named = [
        "--dataset",
        "synthetic",
        "--dataset-options",
        "{num_images: 96}",
        "--output-dir",
        str(tmp_path / "e1"),
    ]
    assert evaluate.main([str(tmp_path / "bare"), *quick, *named]) == 0
    eval_args = ("--eval-dataset", "synthetic", "--eval-dataset-options", "{num_images: 96}")
    assert pretrain(args(tmp_path / "probed", *common, *eval_args)) == 0
    assert evaluate.main([str(tmp_path / "probed"), *quick, "--output-dir", str(tmp_path / "e2")]) == 0
    result = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert result["dataset"] == "synthetic" and result["summary"][0]["accuracy"] > 0


def test_another_folder_of_the_same_kind_gets_a_fresh_split_and_its_own_classes(tmp_path, caplog):
    """19.4: a run (and its export) evaluated on another imagefolder with other classes."""
    from medssl_zoo.hub.export import export_run
    from medssl_zoo.train.pretrain import main as pretrain
    from tests.zoo.data import trees

    caplog.set_level(logging.INFO, logger="evaluate")
    trees.imagefolder(tmp_path / "mine", per_class=12)
    trees.imagefolder(tmp_path / "theirs", classes=("ants", "bees"), per_class=15)
    small = ["--backbone", "test_resnet", "--image-size", "32", "--batch-size", "8", "--max-steps", "2"]
    run = tmp_path / "run"
    argv = ["--dataset", "imagefolder", "--data-root", str(tmp_path / "mine"), *small, "--knn-k", "3"]
    assert pretrain([*argv, "--progress", "false", "--output-dir", str(run)]) == 0
    export = export_run(run, tmp_path / "export")
    quick = [
        "--protocols",
        "knn,linear",
        "--fractions",
        "1.0",
        "--seeds",
        "0",
        "--baselines",
        "none",
        "--no-plots",
    ]
    for target, manifest in (
        (run, []),
        (export, []),
        (run, ["--manifest", "none"]),
        (run, ["--manifest", ""]),
    ):
        out = tmp_path / f"eval-{len(list(tmp_path.glob('eval-*')))}"
        other = ["--data-root", str(tmp_path / "theirs"), "--output-dir", str(out)]
        assert evaluate.main([str(target), *quick, *other, *manifest]) == 0, caplog.text
        result = json.loads((out / "metrics.json").read_text())
        assert result["classes"] == ["ants", "bees"] and sum(map(sum, result["counts"].values())) == 30
    assert "classifier (cats, dogs, eels) is not used" in caplog.text
    # the run's own folder keeps the run's split, unless a fresh one is asked for
    own = tmp_path / "own"
    assert evaluate.main([str(run), *quick, "--output-dir", str(own)]) == 0
    split = (run / "split.csv").read_text().splitlines()[1:]
    counts = json.loads((own / "metrics.json").read_text())["counts"]
    assert sum(counts["test"]) == sum(1 for row in split if row.split(",")[2] == "test")


def test_knn_never_votes_with_more_neighbours_than_the_smallest_class(tiny_run, tmp_path, caplog):
    """19.9: k = 200 with a handful of labels per class reported exactly chance for every encoder."""
    argv = [str(tiny_run), "--protocols", "knn_euclidean", "--fractions", "0.2,1.0", "--seeds", "0"]
    argv += ["--baselines", "none", "--no-plots", "--output-dir", str(tmp_path)]
    assert evaluate.main(argv) == 0
    runs = json.loads((tmp_path / "metrics.json").read_text())["runs"]
    run = read_run(tiny_run)
    data = run.load_data()
    for row in runs:
        subset = evaluation.label_fraction_indices(
            data.train[1], row["fraction"], 0, data.dataset.class_names
        )
        smallest = int(torch.bincount(data.train[1][subset]).min())
        assert row["k"] == min(200, smallest)
    assert "used k =" in caplog.text


def test_a_requested_baseline_that_cannot_be_built_is_an_error(tiny_run, tmp_path, caplog):
    """19.10: a missing --weights file, or ImageNet weights offline, stop the evaluation (exit 2), not a dropped row."""
    common = [str(tiny_run), "--protocols", "knn", "--fractions", "1.0", "--seeds", "0", "--no-plots"]
    common += ["--output-dir", str(tmp_path / "eval")]
    assert (
        evaluate.main(
            [*common, "--baselines", "imagenet", "--weights", str(tmp_path / "missing.safetensors")]
        )
        == 2
    )
    assert "missing.safetensors is not a readable safetensors file" in caplog.text
    assert evaluate.main([*common, "--baselines", "imagenet"]) == 2
    assert "--weights FILE.safetensors" in caplog.text
    assert not (tmp_path / "eval" / "metrics.json").exists()
