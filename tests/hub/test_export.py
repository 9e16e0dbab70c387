"""The export against a second computation: the folded classifier, loaded back, scores exactly what the probe
scored; a crash while writing leaves the previous export whole; the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medssl_zoo.hub.export as export_module
import zoo
from medssl_zoo.hub.export import export_run
from zoo.probe import extract_features, fit_linear_probe
from zoo.run_dir import read_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_run(tiny_export):
    return tiny_export.parent / "run"


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
        [sys.executable, "-m", "hub.export", str(tiny_run), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and zoo.load(out).label_names
    help_text = subprocess.run(
        [sys.executable, "-m", "hub.push", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "--tag" in help_text and "HF_TOKEN" in help_text
