"""The out-of-distribution score in every export (issue 24.4): the score against scikit-learn's Ledoit-Wolf
Mahalanobis distance, the threshold against its definition, the separation of other modalities from the
synthetic histology tiles, older exports without a reference, and hostile reference files refused before
anything is allocated."""

import json
import shutil
import struct

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf

import zoo
from tests.helpers.ood_images import KINDS, ood_table
from zoo.hub_format import OOD_FILE
from zoo.probe import extract_features
from zoo.run_dir import read_run


def _copy(export, tmp_path, name="copy"):
    return shutil.copytree(export, tmp_path / name)


def _edit_block(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config["zoo"].pop(key, None)
        else:
            config["zoo"][key] = value
    path.write_text(json.dumps(config))


def _features(run_dir):
    run = read_run(run_dir)
    data, encoder = run.load_data(), run.load_encoder()
    return data, {
        s: extract_features(encoder, x, data.eval_transform, autocast=False)
        for s, (x, _) in data.splits.items()
    }


def test_the_score_is_sklearns_ledoit_wolf_mahalanobis_distance(tiny_export):
    data, feats = _features(tiny_export.parent / "run")
    model = zoo.load(tiny_export)
    x = feats["train"].double().numpy()
    mean, std = x.mean(0), x.std(0)
    scale = np.maximum(std, 0.01 * np.median(std)) + 1e-6
    reference = LedoitWolf().fit((x - mean) / scale)
    expected = reference.mahalanobis((feats["test"].double().numpy() - mean) / scale)
    inputs = data.eval_transform(data.test[0])
    got = model.ood_score(inputs).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-3)
    block = json.loads((tiny_export / "config.json").read_text())["zoo"]["ood"]
    assert block["shrinkage"] == pytest.approx(reference.shrinkage_, rel=1e-6)


def test_the_threshold_is_the_percentile_of_held_out_in_distribution_scores(tiny_export):
    """Recomputed from its definition: the 99th percentile of the val scores and of each training fifth scored
    by a reference fitted on the other four fifths (same seeded folds)."""
    _, feats = _features(tiny_export.parent / "run")
    x = feats["train"].double().numpy()

    def fit(rows):
        mean, std = rows.mean(0), rows.std(0)
        scale = np.maximum(std, 0.01 * np.median(std)) + 1e-6
        lw = LedoitWolf().fit((rows - mean) / scale)
        return lambda z: lw.mahalanobis((z - mean) / scale)

    held_out = [fit(x)(feats["val"].double().numpy())]
    for fold in np.array_split(np.random.default_rng(0).permutation(len(x)), 5):
        held_out.append(fit(np.delete(x, fold, axis=0))(x[fold]))
    block = json.loads((tiny_export / "config.json").read_text())["zoo"]["ood"]
    assert block["threshold"] == pytest.approx(np.percentile(np.concatenate(held_out), 99), rel=1e-3)
    assert block["percentile"] == 99 and block["calibrated_on"]["images"] == len(x) + len(feats["val"])
    assert zoo.load(tiny_export).ood.threshold == block["threshold"]


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    """The default run (SimCLR, test_resnet @ 64 px, 800 synthetic tiles), shortened to 30 steps of 64 images so
    that it fits in the suite, exported."""
    from medssl_zoo.hub.export import export_run
    from medssl_zoo.train.pretrain import main
    from tests.helpers.accelerate_state import reset_accelerate_state

    root = tmp_path_factory.mktemp("default-run")
    reset_accelerate_state()
    args = ["--output-dir", str(root / "run"), "--export-name", "null", "--progress", "false"]
    assert main([*args, "--max-steps", "30", "--batch-size", "64", "--eval-every", "1000"]) == 0
    reset_accelerate_state()
    return root / "run", export_run(root / "run", root / "simclr-synthetic")


@pytest.mark.slow
def test_other_modalities_are_told_apart_from_the_tiles(default_export):
    """AUROC >= 0.95 for every kind of foreign image (pydicom's CT and MR, X-ray-like images, flat noise) against
    the run's own test split, which is flagged at most 2 % of the time."""
    run_dir, export = default_export
    model = zoo.load(export)
    table = ood_table(model, read_run(run_dir).load_data().test[0])
    assert table["in-distribution"]["flagged"] <= 0.02, table
    for kind in KINDS:
        assert table[kind]["auroc"] >= 0.95, (kind, table)
    stored = json.loads((export / "config.json").read_text())["zoo"]["ood"]["test_flagged"]
    assert stored <= 0.02


def test_an_export_made_before_references_says_so(tiny_export, tmp_path):
    old = _copy(tiny_export, tmp_path)
    (old / OOD_FILE).unlink()  # a copy made by this test
    _edit_block(old, ood=None, task=None)
    model = zoo.load(old)
    assert model.task == "multiclass" and model.thresholds is None and model.ood is None
    assert "no out-of-distribution reference" in model.ood_note
    with pytest.raises(ValueError, match="no out-of-distribution reference.*re-export"):
        model.ood_score(torch.zeros(1, 3, 32, 32))


def _reference_file(folder, header: dict, payload: bytes = b"") -> None:
    text = json.dumps(header).encode()
    (folder / OOD_FILE).write_bytes(struct.pack("<Q", len(text)) + text + payload)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "ood.safetensors is missing"),
        ("not safetensors", "safetensors|header|corrupt"),
        ("declares 40 GB", "corrupt or truncated .*not fully covered"),
        ("another width", r"precision is F32 \((\d+), \1\), expected F32 \(\d+, \d+\) for the model's"),
        ("huge", "bytes; a reference of"),
        ("wrong tensors", "not an OOD reference"),
        ("sha256", "sha256 is not the one config.json records"),
        ("nan", "non-finite values"),
    ],
)
def test_a_hostile_reference_is_refused_before_allocation(tiny_export, tmp_path, case, message):
    folder = _copy(tiny_export, tmp_path)
    path = folder / OOD_FILE
    block = json.loads((folder / "config.json").read_text())["zoo"]["ood"]
    f = zoo.load(tiny_export).num_features
    if case == "missing":
        path.unlink()
    elif case == "not safetensors":
        path.write_bytes(b"\xff" * 64)
    elif case in ("declares 40 GB", "another width"):  # a header that lies about the tensors' shapes
        side = 100_000 if case == "declares 40 GB" else f + 1
        shapes = {"mean": [f], "scale": [f], "location": [f], "precision": [side, side]}
        offsets, start = {}, 0
        for name, shape in shapes.items():
            size = 4 * int(np.prod(shape))
            offsets[name], start = [start, start + size], start + size
        header = {n: {"dtype": "F32", "shape": s, "data_offsets": offsets[n]} for n, s in shapes.items()}
        _reference_file(folder, header, b"" if case == "declares 40 GB" else b"\0" * start)
    elif case == "huge":
        with open(path, "r+b") as out:  # sparse
            out.truncate(1 << 32)
    elif case == "wrong tensors":
        _reference_file(
            folder, {"weights": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4
        )
    elif case in ("sha256", "nan"):
        from safetensors.torch import load_file, save

        tensors = load_file(path)
        tensors["mean"][0] = float("nan") if case == "nan" else tensors["mean"][0] + 1
        data = save(tensors, metadata={"format": "pt"})
        path.write_bytes(data)
        if case == "nan":
            import hashlib

            _edit_block(folder, ood={**block, "sha256": hashlib.sha256(data).hexdigest()})
    with pytest.raises(ValueError, match=message):
        zoo.load(folder)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "regression"}, "zoo.task must be one of"),
        ({"task": "multilabel"}, "zoo.thresholds must be"),
        ({"thresholds": [0.5]}, "thresholds belong to multi-label models only"),
        ({"ood": {"sha256": "x"}}, "zoo.ood.sha256 must be"),
        ({"ood": {"sha256": "0" * 64, "threshold": float("inf"), "percentile": 99}}, "zoo.ood.threshold"),
        ({"ood": []}, "zoo.ood must be a mapping"),
    ],
)
def test_a_bad_zoo_block_is_refused(tiny_export, tmp_path, changes, message):
    folder = _copy(tiny_export, tmp_path)
    _edit_block(folder, **changes)
    with pytest.raises(ValueError, match=message):
        zoo.load(folder)
