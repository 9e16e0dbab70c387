"""Multi-label data for tests and bench: a ChestMNIST-shaped ``.npz`` of the procedural chest images
(:mod:`zoo.data.synthetic_chest`), and image folders with NIH-style and CheXpert-style labels CSVs."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.synthetic_chest import FINDINGS, generate

SPLITS = ("train", "val", "test")
NIH_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender"]
CHEXPERT_META = ["Sex", "Age", "Frontal/Lateral", "AP/PA"]


def chest_npz(path: Path, counts=(700, 100, 200), size: int = 64, seed: int = 0) -> Path:
    """A ChestMNIST-format npz (``{split}_images`` N x S x S uint8, ``{split}_labels`` N x 14 uint8)."""
    images, labels = generate(sum(counts), size, seed)
    bounds = np.cumsum((0, *counts))
    arrays = {}
    for split, a, b in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[a:b], labels[a:b]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            zf.writestr(f"{key}.npy", buffer.getvalue())
    return path


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def nih_folder(root: Path, count: int = 60, size: int = 32, per_patient: int = 3, seed: int = 0) -> Path:
    """ChestX-ray14's layout: ``images_00k/images/<patient>_<follow-up>.png`` and ``Data_Entry_2017.csv``."""
    images, labels = generate(count, size, seed)
    rows = []
    for i, (image, present) in enumerate(zip(images, labels, strict=True)):
        patient, follow_up = i // per_patient, i % per_patient
        name = f"{patient:08d}_{follow_up:03d}.png"
        _save(root / f"images_{1 + i * 2 // count:03d}" / "images" / name, image)
        found = "|".join(FINDINGS[j].capitalize() for j in np.flatnonzero(present)) or "No Finding"
        rows.append([name, found, follow_up, patient, 50, "F"])
    with open(root / "Data_Entry_2017.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([NIH_HEADER, *rows])
    return root


def chexpert_folder(
    root: Path, count: int = 60, size: int = 32, uncertain_every: int = 4, seed: int = 0
) -> tuple[Path, np.ndarray]:
    """CheXpert's layout: ``CheXpert-v1.0-small/train/patientNNNNN/studyK/view1_frontal.jpg`` and its
    ``train.csv`` naming them from the parent folder; returns (the ``CheXpert-v1.0-small`` folder, the values
    written: N x 14 with 1, 0, -1 and NaN for blank). Every ``uncertain_every``-th positive is written as -1,
    every 5th negative left blank."""
    base = root / "CheXpert-v1.0-small"
    images, labels = generate(count, size, seed)
    values = labels.astype(np.float64)
    flat = values.reshape(-1)  # a view: writes go to values
    flat[np.flatnonzero(labels.ravel() == 1)[::uncertain_every]] = -1
    flat[np.flatnonzero(labels.ravel() == 0)[::5]] = np.nan
    names = [f.capitalize() for f in FINDINGS]
    rows = []
    for i, image in enumerate(images):
        relative = f"train/patient{i // 2:05d}/study{i % 2 + 1}/view1_frontal.png"
        _save(base / relative, image)
        cells = ["" if np.isnan(v) else f"{v:.1f}" for v in values[i]]
        rows.append([f"CheXpert-v1.0-small/{relative}", "Female", "60", "Frontal", "AP", *cells])
    with open(base / "train.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Path", *CHEXPERT_META, *names], *rows])
    return base, values


def check_multilabel_card(folder: Path) -> None:
    """A multi-label export's card: the multi-label metrics, sigmoid semantics and the OOD threshold."""
    import json

    card = (folder / "README.md").read_text()
    assert "Macro AUROC" in card and "mAP" in card and "**sigmoid**" in card and "Accuracy" not in card
    block = json.loads((folder / "config.json").read_text())["zoo"]
    assert f"above **{block['ood']['threshold']:.1f}**" in card


def check_demo_findings(folder: Path, tmp_path: Path, channels: int) -> None:
    """The demo on a multi-label export: for a chest image, the Label output is each finding's sigmoid probability
    (a second computation: the loaded model's own forward on the demo's preprocessing), and the table shows each
    with its threshold and verdict."""
    import pytest
    import torch

    import zoo
    from medssl_zoo.demo import app
    from medssl_zoo.demo.imaging import read_upload
    from zoo.data.synthetic_chest import render_chest

    shown = app.add_operator_model(str(folder))
    path = tmp_path / "chest.png"
    Image.fromarray(render_chest(np.random.default_rng(5), {1, 2}, 64)).save(path)
    label, _, info, card = app.classify(str(path), shown, "", False, 14)
    model = zoo.load(folder)
    x, _ = app.preprocess(read_upload(path, channels)[0], model)
    with torch.inference_mode():
        expected = torch.sigmoid(model(x))[0]  # a sigmoid per finding, not a softmax
    assert len(label) == 14 and "labels (multi-label)" in card
    for name, p, t in zip(model.label_names, expected.tolist(), model.thresholds, strict=True):
        assert label[name] == pytest.approx(p, abs=1e-6)  # the Label output: {finding: probability}
        assert f"| {name} | {p:.3f} | {t:.3f} | {'**present**' if p >= t else 'absent'} |" in info
