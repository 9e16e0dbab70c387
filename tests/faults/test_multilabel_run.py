"""A ChestMNIST-shaped multi-label run end to end (issue 24.2 and 24.3): the kNN monitor reports mean AUROC,
evaluate() scores every protocol with the multi-label metrics, the export is timm's classifier with sigmoid
semantics whose logits plain timm reproduces, config.json records the task and per-label thresholds, zoo.load
exposes them, the card shows the multi-label metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

import zoo
from tests.helpers.multilabel import check_demo_findings, check_multilabel_card, chest_npz
from zoo.probe import choose_thresholds, extract_features, fit_multilabel_probe, knn_multilabel
from zoo.run_dir import read_run

PLAIN_TIMM = Path(__file__).resolve().parents[1] / "hub" / "plain_timm.py"


def _args(npz: Path, out: Path) -> list[str]:
    from tests.train.tiny import TINY

    args = list(TINY)
    at = args.index("synthetic")
    args[at], args[at + 2] = "medmnist", "{}"
    return [
        *args,
        "--data-root",
        str(npz),
        "--output-dir",
        str(out),
        "--max-steps",
        "6",
        "--export-name",
        "null",
    ]


@pytest.fixture(scope="module")
def chest_run(tmp_path_factory):
    from medssl_zoo.hub.export import export_run
    from medssl_zoo.train.pretrain import main
    from tests.helpers.accelerate_state import reset_accelerate_state

    root = tmp_path_factory.mktemp("chest")
    npz = chest_npz(root / "chestmnist_32.npz", counts=(400, 80, 120), size=32)
    reset_accelerate_state()
    assert main(_args(npz, root / "run")) == 0
    reset_accelerate_state()
    return root / "run", export_run(root / "run", root / "simclr-chest")


def test_the_knn_monitor_reports_mean_auroc(chest_run):
    run_dir, _ = chest_run
    run = read_run(run_dir)
    data, encoder = run.load_data(), run.load_encoder()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["event"] == "eval"][-1]
    bank = extract_features(encoder, data.train[0], data.eval_transform)
    queries = extract_features(encoder, data.val[0], data.eval_transform)
    votes = knn_multilabel(bank, data.train[1], queries, k=5).numpy()
    y = data.val[1].numpy()
    present = [label for label in range(y.shape[1]) if 0 < y[:, label].sum() < len(y)]
    direct = np.mean([roc_auc_score(y[:, label], votes[:, label]) for label in present])
    assert last["knn"] == pytest.approx(direct, abs=1e-6)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["knn_metric"] == "mean AUROC"


def test_evaluate_scores_every_protocol_with_the_multilabel_metrics(chest_run, tmp_path):
    from medssl_zoo.train import evaluation

    run_dir, _ = chest_run
    options = evaluation.EvalOptions(
        protocols=("knn", "linear", "mlp"),
        fractions=(0.2, 1.0),
        seeds=(0,),
        baselines=(),
        mlp_epochs=3,
        output_dir=tmp_path / "eval",
    )
    result = evaluation.evaluate(run_dir, options)
    assert result["task"] == "multilabel"
    for row in result["summary"]:
        for key in ("auroc_macro", "auroc_micro", "map", "f1_macro", "f1_micro"):
            assert 0 <= row[key] <= 1, (row["protocol"], key)
    # the full-label linear row against a probe fitted here, thresholds chosen here on val
    run = read_run(run_dir)
    data, encoder = run.load_data(), run.load_encoder()
    feats = {s: extract_features(encoder, x, data.eval_transform) for s, (x, _) in data.splits.items()}
    probe = fit_multilabel_probe(feats["train"], data.train[1], feats["val"], data.val[1])
    test = torch.sigmoid(probe.logits(feats["test"])).numpy()
    linear = next(r for r in result["runs"] if r["protocol"] == "linear" and r["fraction"] == 1.0)
    y = data.test[1].numpy()
    present = [label for label in range(y.shape[1]) if 0 < y[:, label].sum() < len(y)]
    direct = np.mean([roc_auc_score(y[:, label], test[:, label]) for label in present])
    assert linear["auroc_macro"] == pytest.approx(direct, abs=1e-4)
    text = (tmp_path / "eval" / "results.md").read_text()
    assert "AUROC (macro)" in text and "mAP" in text


def test_the_export_is_a_sigmoid_classifier_that_plain_timm_loads(chest_run, tmp_path):
    run_dir, export = chest_run
    config = json.loads((export / "config.json").read_text())
    block = config["zoo"]
    assert block["task"] == "multilabel" and len(block["thresholds"]) == 14 == config["num_classes"]
    model = zoo.load(export)
    assert model.task == "multilabel" and model.thresholds == block["thresholds"]
    # plain timm, in a fresh process that never imports zoo: the same logits
    out = tmp_path / "logits.safetensors"
    subprocess.run(
        [sys.executable, str(PLAIN_TIMM), f"local-dir:{export}", str(out)],
        check=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=120,
    )
    reference = load_file(out)
    with torch.inference_mode():
        torch.testing.assert_close(model(reference["x"]), reference["logits"], rtol=0, atol=0)
    # the thresholds are the F1-best on val of the exported classifier's own sigmoid outputs
    run = read_run(run_dir)
    data = run.load_data()
    val = torch.sigmoid(extract_features(model, data.val[0], data.eval_transform, autocast=False))
    assert block["thresholds"] == pytest.approx(choose_thresholds(val, data.val[1]), abs=1e-6)
    test = torch.sigmoid(extract_features(model, data.test[0], data.eval_transform, autocast=False)).numpy()
    y = data.test[1].numpy()
    present = [label for label in range(y.shape[1]) if 0 < y[:, label].sum() < len(y)]
    direct = np.mean([roc_auc_score(y[:, label], test[:, label]) for label in present])
    assert block["metrics"]["auroc_macro"] == pytest.approx(direct, abs=1e-6)


def test_the_card_shows_the_multilabel_metrics_and_the_reference(chest_run):
    _, export = chest_run
    check_multilabel_card(export)


def test_the_demo_shows_each_findings_probability_and_threshold(chest_run, tmp_path):
    check_demo_findings(chest_run[1], tmp_path, channels=1)
