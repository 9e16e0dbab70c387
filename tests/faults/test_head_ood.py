"""The out-of-distribution reference and the task on head-only catalogue exports (issue 24 item 5): a head on a
frozen catalogue encoder carries the reference of a full export (fitted on the encoder's train features), zoo.load
composes it with the head (the score of the pooled features the head reads), older head-only folders say they
have none, hostile reference files are refused before the encoder is downloaded, a multi-label head records its
per-label thresholds, the demo treats a composed model like any other, and both exports share one folder writer."""

import hashlib
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

import zoo
from medssl_zoo.hub import export
from medssl_zoo.hub.export_head import export_head
from tests.helpers.multilabel import check_demo_findings, check_multilabel_card
from tests.helpers.ood_images import model_inputs, ood_images, ood_table
from zoo.data.run_data import DataRequest, load_run_data
from zoo.hub_format import HEAD_FILE, OOD_FILE
from zoo.probe import choose_thresholds, extract_features

pytestmark = pytest.mark.timeout(300)
BASE = "standin-uni"  # a 32-d ViT served by the test mirror, as a catalogue encoder
TILES = {"num_images": 480}


def _splits(folder, dataset="synthetic", data_root=None, options=None, grouped=False):
    """The export's split decoded again as the encoder sees it (seeded: the same images)."""
    encoder = zoo.load(BASE, features_only=True)
    cfg = encoder.pretrained_cfg
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k in
              ("input_size", "mean", "std", "crop_pct", "interpolation")}  # fmt: skip
    request = DataRequest(
        dataset, cfg["input_size"][-1], dataset_options=options or {}, channels=3, grouped_split=grouped
    )
    return encoder, load_run_data(request, data_root=data_root, data_config=config)


@pytest.fixture(scope="module")
def tiles_head(standins, tmp_path_factory):
    out = tmp_path_factory.mktemp("heads") / "uni-tiles"
    return export_head(BASE, "synthetic", None, out, dataset_options=TILES)


def _copy(folder, tmp_path, name="copy"):
    return shutil.copytree(folder, tmp_path / name)


def _config(folder):
    return json.loads((folder / "config.json").read_text())


def test_a_head_export_carries_the_reference_and_its_card_states_it(tiles_head):
    assert sorted(p.name for p in tiles_head.iterdir()) == ["README.md", "config.json", HEAD_FILE, OOD_FILE]
    block = _config(tiles_head)["zoo"]
    assert block["task"] == "multiclass" and "thresholds" not in block
    ood = block["ood"]
    assert ood["sha256"] == hashlib.sha256((tiles_head / OOD_FILE).read_bytes()).hexdigest()
    assert ood["percentile"] == 99 and ood["fitted_on"] == {"split": "train", "images": 324}
    card = (tiles_head / "README.md").read_text()
    assert f"above **{ood['threshold']:.1f}**" in card and "## Out-of-distribution inputs" in card
    assert "no reference in this export" not in card


def test_the_score_is_the_mahalanobis_distance_of_the_encoders_plain_features(tiles_head):
    """Computed another way: the encoder's features by a plain forward pass, scikit-learn's Ledoit-Wolf fitted on
    train's, its Mahalanobis distance of the test features against zoo.load(head).ood_score."""
    encoder, data = _splits(tiles_head, options=TILES)
    with torch.no_grad():
        train = encoder(data.eval_transform(data.train[0])).double().numpy()
        test_inputs = data.eval_transform(data.test[0])
        test = encoder(test_inputs).double().numpy()
    mean, std = train.mean(0), train.std(0)
    scale = np.maximum(std, 0.01 * np.median(std)) + 1e-6
    expected = LedoitWolf().fit((train - mean) / scale).mahalanobis((test - mean) / scale)
    model = zoo.load(tiles_head)
    assert model.ood is not None and model.ood.num_features == 32 and model.task == "multiclass"
    np.testing.assert_allclose(model.ood_score(test_inputs).double().numpy(), expected, rtol=2e-3)
    flagged = _config(tiles_head)["zoo"]["ood"]["test_flagged"]
    assert flagged == pytest.approx(
        float((model.ood_score(test_inputs) > model.ood.threshold).float().mean())
    )


def test_the_score_tells_other_images_from_the_tiles(tiles_head):
    """AUROC (scikit-learn) against the test split, of which few are flagged. The stand-in encoder has random
    weights (a trained one separates better: the full export's default run must reach 0.95 on every kind): CT, MR
    and X-ray-like images reach 0.95 on its features, flat noise about 0.90 (measured 0.902)."""
    model = zoo.load(tiles_head)
    _, data = _splits(tiles_head, options=TILES)
    table = ood_table(model, data.test[0])
    assert table["in-distribution"]["flagged"] <= 0.05, table
    for kind in ("CT", "MR", "X-ray-like"):
        assert table[kind]["auroc"] >= 0.95, (kind, table)
    assert table["flat noise"]["auroc"] >= 0.85, table
    inside = model.ood_score(model_inputs(model, list(data.test[0]))).numpy()
    outside = model.ood_score(model_inputs(model, ood_images("flat noise"))).numpy()
    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    assert table["flat noise"]["auroc"] == pytest.approx(roc_auc_score(labels, np.r_[inside, outside]))


def test_the_ood_percentile_flag_places_the_threshold(standins, tiles_head, tmp_path):
    argv = [str(tmp_path / "p90"), "--base", BASE, "--dataset", "synthetic", "--dataset-options",
            json.dumps(TILES), "--ood-percentile", "90"]  # fmt: skip
    assert export.main(argv) == 0  # medssl-export --base dispatches to the head export
    ninety, default = _config(tmp_path / "p90")["zoo"]["ood"], _config(tiles_head)["zoo"]["ood"]
    assert ninety["percentile"] == 90 and ninety["threshold"] < default["threshold"]
    assert zoo.load(tmp_path / "p90").ood.threshold == ninety["threshold"]


def test_a_head_folder_made_before_references_loads_without_one(tiles_head, tmp_path):
    old = _copy(tiles_head, tmp_path)
    (old / OOD_FILE).unlink(missing_ok=True)  # a copy made by this test
    config = _config(old)
    for key in ("ood", "task"):
        config["zoo"].pop(key, None)  # (a folder made before has neither)
    (old / "config.json").write_text(json.dumps(config))
    model = zoo.load(old)
    assert model.task == "multiclass" and model.thresholds is None and model.ood is None
    assert "no out-of-distribution reference" in model.ood_note
    with pytest.raises(ValueError, match="no out-of-distribution reference"):
        model.ood_score(torch.zeros(1, 3, 32, 32))


def _lying_header(path, side):
    shapes = {"mean": [32], "scale": [32], "location": [32], "precision": [side, side]}
    header, start = {}, 0
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[name], start = (
            {"dtype": "F32", "shape": shape, "data_offsets": [start, start + size]},
            start + size,
        )
    text = json.dumps(header).encode()
    payload = b"\0" * start if side < 1000 else b""  # 40 GB declared, none of it there
    path.write_bytes(len(text).to_bytes(8, "little") + text + payload)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "case, message",
    [
        ("sha256", "sha256 is not the one config.json records"),
        ("another width", r"precision is F32 \(33, 33\), expected F32 \(32, 32\)"),
        ("declares 40 GB", "corrupt or truncated .*not fully covered"),
        ("huge", "bytes; a reference of 32 features is at most"),
        ("missing", "ood.safetensors is missing"),
    ],
)
def test_a_hostile_reference_is_refused_before_the_encoder_is_loaded(
    tiles_head, tmp_path, monkeypatch, case, message
):
    folder = _copy(tiles_head, tmp_path)
    path = folder / OOD_FILE
    if case == "sha256":
        tensors = load_file(path)
        tensors["mean"][0] += 1
        path.write_bytes(save(tensors, metadata={"format": "pt"}))
    elif case in ("another width", "declares 40 GB"):
        _lying_header(path, 33 if case == "another width" else 100_000)
    elif case == "huge":
        with open(path, "r+b") as out:  # sparse
            out.truncate(1 << 32)
    else:
        path.unlink()
    monkeypatch.setattr(
        sys.modules["zoo.load"], "load_entry", lambda *a: pytest.fail("the encoder was loaded")
    )
    with pytest.raises(ValueError, match=message):
        zoo.load(folder)


@pytest.fixture(scope="module")
def chest_head(standins, tmp_path_factory):
    from tests.helpers.multilabel import chest_npz

    root = tmp_path_factory.mktemp("chest-head")
    npz = chest_npz(root / "chestmnist_32.npz", counts=(300, 80, 100), size=32)
    return npz, export_head(BASE, "medmnist", npz, root / "uni-chest")


def test_a_multilabel_head_records_its_thresholds_and_metrics(chest_head):
    """Thresholds: the best F1 on val of the composed model's own sigmoid outputs; macro AUROC on test against
    scikit-learn; the card shows the multi-label metrics and the reference."""
    npz, folder = chest_head
    config = _config(folder)
    block = config["zoo"]
    assert block["task"] == "multilabel" and len(block["thresholds"]) == 14 == config["num_classes"]
    assert "ood" in block and (folder / OOD_FILE).is_file()
    model = zoo.load(folder)
    assert model.task == "multilabel" and model.thresholds == block["thresholds"] and model.ood is not None
    _, data = _splits(folder, "medmnist", npz)
    val = torch.sigmoid(extract_features(model, data.val[0], data.eval_transform, autocast=False))
    assert block["thresholds"] == pytest.approx(choose_thresholds(val, data.val[1]), abs=1e-6)
    test = torch.sigmoid(extract_features(model, data.test[0], data.eval_transform, autocast=False)).numpy()
    y = data.test[1].numpy()
    present = [label for label in range(y.shape[1]) if 0 < y[:, label].sum() < len(y)]
    direct = np.mean([roc_auc_score(y[:, label], test[:, label]) for label in present])
    assert block["metrics"]["auroc_macro"] == pytest.approx(direct, abs=1e-5)
    check_multilabel_card(folder)


def test_the_demo_shows_a_composed_models_findings_and_warning(chest_head, tiles_head, tmp_path):
    from PIL import Image

    from medssl_zoo.demo import app
    from zoo.data.synthetic import render_tile

    check_demo_findings(chest_head[1], tmp_path, channels=3)
    tiles = app.add_operator_model(str(tiles_head))
    tile, noise = tmp_path / "tile.png", tmp_path / "noise.png"
    Image.fromarray(render_tile(np.random.default_rng([123, 2]), 2, 32)).save(tile)
    Image.fromarray(ood_images("flat noise", 1)[0].permute(1, 2, 0).numpy()).save(noise)
    warning = app.OOD_WARNING.format(dataset="synthetic")
    assert warning not in app.classify(str(tile), tiles, "", False, 3)[2]
    assert warning in app.classify(str(noise), tiles, "", False, 3)[2]


def test_both_exports_are_written_by_one_writer(tiles_head, tmp_path, monkeypatch):
    """A crash while the head export writes keeps the previous one whole: the full export's writer (its
    save_safetensors) writes it too."""
    out = _copy(tiles_head, tmp_path, "head")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def power_cut(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_safetensors", power_cut)
    with pytest.raises(OSError, match="disk full"):
        export_head(BASE, "synthetic", None, out, dataset_options=TILES)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]  # no temporary folder left behind


def test_an_encoder_wider_than_the_bound_gets_no_reference(standins, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(export, "MAX_FEATURES", 16)  # standin-uni's 32 features stand for a too-wide encoder
    out = export_head(BASE, "synthetic", None, tmp_path / "wide", dataset_options=TILES)
    assert OOD_FILE not in {p.name for p in out.iterdir()} and "ood" not in _config(out)["zoo"]
    assert "no OOD reference: 32 features, more than 16" in caplog.text
    assert "has **no** out-of-distribution reference" in (out / "README.md").read_text()
    assert zoo.load(out).ood is None


def test_the_demo_shows_where_a_composed_model_looks(tiles_head, tmp_path):
    """Grad-CAM of a composed model (the demo's default) is the ViT's own: the same map as the encoder carrying
    the head as its timm classifier (the second computation)."""
    import copy

    from PIL import Image

    from medssl_zoo.demo import app
    from medssl_zoo.demo.saliency import grad_cam
    from zoo.data.synthetic import render_tile

    tiles = app.add_operator_model(str(tiles_head))
    tile = tmp_path / "tile.png"
    Image.fromarray(render_tile(np.random.default_rng([123, 2]), 2, 32)).save(tile)
    _, heat, _, _ = app.classify(str(tile), tiles, "", True, 3)
    assert isinstance(heat, Image.Image)
    model = zoo.load(tiles_head)
    plain = copy.deepcopy(model.encoder)
    plain.head = model.head  # timm's ViT with this classifier: head(fc_norm(pool(tokens)))
    x = torch.randn(1, 3, 32, 32)
    for target in range(4):
        np.testing.assert_allclose(grad_cam(model, x, target), grad_cam(plain, x, target), atol=1e-5)


def test_a_head_on_a_chexpert_style_csv_with_uncertain_labels_ignored(standins, tmp_path):
    """multilabel-csv through the command line (--dataset-options): the unknown (uncertain, ignored) labels are
    left out of the thresholds' choice as in a full export; the head loads with its task and reference."""
    from tests.helpers.multilabel import chexpert_folder

    folder, _ = chexpert_folder(tmp_path / "chexpert", count=400)
    out = tmp_path / "uni-chexpert"
    argv = [str(out), "--base", BASE, "--dataset", "multilabel-csv", "--data-root", str(folder),
            "--dataset-options", "{uncertain: ignore}", "--grouped"]  # fmt: skip
    assert export.main(argv) == 0
    config = _config(out)
    model = zoo.load(out)
    assert model.task == "multilabel" and model.thresholds == config["zoo"]["thresholds"]
    assert len(model.thresholds) == config["num_classes"] == len(model.label_names) and model.ood is not None
    _, data = _splits(out, "multilabel-csv", folder, {"uncertain": "ignore"}, grouped=True)
    assert torch.isnan(data.val[1]).any()  # unknown labels in val
    val = torch.sigmoid(extract_features(model, data.val[0], data.eval_transform, autocast=False))
    assert model.thresholds == pytest.approx(choose_thresholds(val, data.val[1]), abs=1e-6)
