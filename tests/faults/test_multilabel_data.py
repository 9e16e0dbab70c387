"""Multi-label data (issue 24.1): ChestMNIST-shaped npz files load (they were refused), both labels-CSV layouts
give the labels that were written under every uncertain-label policy, patient-grouped and iteratively stratified
splits keep every label in every split and are saved in split.csv; hostile labels CSVs are refused, bounded."""

import csv
import os

import numpy as np
import pytest

from tests.helpers.multilabel import chest_npz, chexpert_folder, nih_folder
from zoo.data import load_dataset
from zoo.data.labels_csv import MAX_COLUMNS, MAX_CSV_BYTES
from zoo.data.stratify import iterative_split, missing_labels
from zoo.data.synthetic_chest import FINDINGS, generate
from zoo.files import FileTooLargeError

NAMES = [f.capitalize() for f in FINDINGS]


def _split_targets(ds, split):
    return ds.labels_of(ds.indices(split)).numpy()


def test_a_chestmnist_npz_loads_as_14_labels(tmp_path):
    """The 14 findings per image arrive as N x 14 targets, split by the file's own train / val / test."""
    path = chest_npz(tmp_path / "chestmnist_64.npz", counts=(120, 30, 40), size=28)
    ds = load_dataset("medmnist", path)
    assert ds.multilabel and ds.class_names == list(FINDINGS)
    _, labels = generate(190, 28, 0)
    bounds = {"train": (0, 120), "val": (120, 150), "test": (150, 190)}
    for r in ds.records:  # key: <split>/<row in the file, the splits in order>
        row = int(r.key.split("/")[1])
        assert bounds[r.split][0] <= row < bounds[r.split][1]
        np.testing.assert_array_equal(r.targets, labels[row].astype(np.float32))
    assert {s: len(ds.indices(s)) for s in ("train", "val", "test")} == {"train": 120, "val": 30, "test": 40}
    images, targets = ds.decode("test", 28)
    assert images.shape == (40, 1, 28, 28) and targets.shape == (40, 14)


def test_a_multilabel_npz_with_a_value_other_than_0_or_1_is_refused(tmp_path):
    path = chest_npz(tmp_path / "chestmnist_28.npz", counts=(20, 5, 5), size=28)
    import io
    import zipfile

    with zipfile.ZipFile(path) as zf:
        arrays = {n[:-4]: np.load(io.BytesIO(zf.read(n))) for n in zf.namelist()}
    arrays["val_labels"][3, 2] = 2
    bad = tmp_path / "bad_chestmnist.npz"
    np.savez_compressed(bad, **arrays)
    with pytest.raises(ValueError, match=r"val_labels\[\d+\] is 2, but labels are multi-label values 0..1"):
        load_dataset("medmnist", bad)


def test_nih_layout_reads_the_findings_and_groups_by_patient(tmp_path):
    root = nih_folder(tmp_path / "nih", count=240, size=24, per_patient=3)
    ds = load_dataset("multilabel-csv", root, grouped=True)
    _, labels = generate(240, 24, 0)
    assert ds.multilabel and ds.class_names == sorted(NAMES[j] for j in np.flatnonzero(labels.any(0)))
    for r in ds.records:  # images_00k/images/PPPPPPPP_FFF.png
        i = 3 * int(r.key.rsplit("/", 1)[1][:8]) + int(r.key[-7:-4])
        expected = {NAMES[j] for j in np.flatnonzero(labels[i])}
        assert {ds.class_names[j] for j in np.flatnonzero(r.targets == 1)} == expected
        assert not np.isnan(r.targets).any() and r.group == f"patient/{i // 3}"
    sides = {}
    for r in ds.records:
        sides.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values())  # a patient's images never straddle splits


@pytest.mark.parametrize("policy", ["zeros", "ones", "ignore"])
def test_chexpert_layout_under_each_uncertain_policy(tmp_path, policy):
    """1 present, 0 or blank absent, -1 by the policy: U-Zeros 0, U-Ones 1, U-Ignore unknown (NaN)."""
    base, written = chexpert_folder(tmp_path / "chexpert", count=300, size=24)
    ds = load_dataset("multilabel-csv", base, uncertain=policy, grouped=True)
    assert ds.class_names == NAMES
    expected = np.nan_to_num(written, nan=0.0)  # blank: not mentioned = absent
    expected[written == -1] = {"zeros": 0.0, "ones": 1.0, "ignore": np.nan}[policy]
    by_key = {r.key: r for r in ds.records}
    for i in range(300):
        r = by_key[f"train/patient{i // 2:05d}/study{i % 2 + 1}/view1_frontal.png"]
        np.testing.assert_array_equal(r.targets, expected[i].astype(np.float32))
        assert r.group == f"patient{i // 2:05d}"
    assert (written == -1).any() and np.isnan(written).any()
    # the split manifest names the labels, an unknown one marked '?', and reading it back gives the same split
    manifest = tmp_path / f"split-{policy}.csv"
    ds.write_manifest(manifest)
    rows = list(csv.reader(manifest.open()))
    assert any("?" in row[1] for row in rows[1:]) == (policy == "ignore")
    again = load_dataset("multilabel-csv", base, uncertain=policy, manifest=manifest)
    assert [r.split for r in again.records] == [r.split for r in ds.records]


def test_the_stratified_split_keeps_every_label_in_every_split_and_is_seeded(tmp_path):
    path = chest_npz(tmp_path / "chestmnist_28.npz", counts=(300, 0, 0), size=28)
    splits = {}
    for seed in (0, 0, 1):
        ds = load_dataset("medmnist", path, split_policy="random", seed=seed)
        for s in ("train", "val", "test"):
            shown = _split_targets(ds, s).sum(axis=0)
            assert (shown > 0).all(), (seed, s, shown)  # every label in every split
        splits.setdefault(seed, []).append([r.split for r in ds.records])
    assert splits[0][0] == splits[0][1] and splits[0][0] != splits[1][0]
    sizes = [splits[0][0].count(s) for s in ("train", "val", "test")]
    assert abs(sizes[2] - 60) <= 6 and abs(sizes[1] - 0.1 * 240) <= 6  # the default fractions, near enough


def test_iterative_stratification_against_its_definition():
    """Sechidis et al.'s criterion computed another way: each label's share in every subset stays close to the
    desired proportion (a random split of rare labels misses subsets, this must not)."""
    rng = np.random.default_rng(3)
    positives = rng.random((400, 10)) < np.linspace(0.02, 0.4, 10)
    proportions = (0.6, 0.2, 0.2)
    subset = iterative_split(positives, proportions, seed=5)
    assert missing_labels(positives, subset, 3) == []
    for label in range(10):
        counts = np.array([positives[subset == k, label].sum() for k in range(3)])
        assert np.abs(counts - np.array(proportions) * counts.sum()).max() <= 2, (label, counts)
    groups = np.repeat(np.arange(100), 4)
    grouped = iterative_split(positives, proportions, seed=5, groups=groups)
    assert all(len(set(grouped[groups == g])) == 1 for g in range(100))


def test_a_label_too_rare_for_every_split_is_named(tmp_path):
    root = tmp_path / "rare"
    root.mkdir()
    from PIL import Image

    rows = [["Image Index", "Finding Labels"]]
    for i in range(30):
        Image.new("L", (8, 8), i).save(root / f"{i}.png")
        rows.append([f"{i}.png", "Hernia" if i == 0 else ("Mass" if i % 2 else "No Finding")])
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValueError, match=r"label 'Hernia' has 1 positive image\(s\).*none in"):
        load_dataset("multilabel-csv", root)


# --- hostile labels CSVs: each one a one-line refusal, before anything grows with the file ---


def _folder(tmp_path, n=4):
    from PIL import Image

    root = tmp_path / "data"
    root.mkdir()
    for i in range(n):
        Image.new("L", (8, 8), i).save(root / f"{i}.png")
    return root


@pytest.mark.timeout(60)
def test_a_huge_labels_csv_is_refused_by_its_size(tmp_path):
    root = _folder(tmp_path)
    with open(root / "labels.csv", "wb") as f:  # sparse: a 300 MB file that takes no disk
        f.write(b"Image Index,Finding Labels\n")
        f.truncate(MAX_CSV_BYTES + 1)
    with pytest.raises(FileTooLargeError, match="keep the rows of the images you use"):
        load_dataset("multilabel-csv", root)


@pytest.mark.timeout(60)
def test_a_one_megabyte_field_is_refused(tmp_path):
    root = _folder(tmp_path)
    (root / "labels.csv").write_text("Image Index,Finding Labels\n0.png," + "A" * 2**20 + "\n")
    with pytest.raises(ValueError, match="fields are at most 4096 characters"):
        load_dataset("multilabel-csv", root)


@pytest.mark.parametrize("value", ["../outside.png", "/etc/passwd", "a/../../outside.png", "C:\\x.png"])
def test_a_csv_naming_files_outside_the_folder_is_refused(tmp_path, value):
    root = _folder(tmp_path)
    (tmp_path / "outside.png").write_bytes((root / "0.png").read_bytes())
    (root / "labels.csv").write_text(f"Path,Mass\n0.png,1\n1.png,0\n{value},1\n")
    with pytest.raises(ValueError, match="names a file outside the dataset folder"):
        load_dataset("multilabel-csv", root)


@pytest.mark.timeout(60)
def test_100000_label_columns_are_refused_on_the_header(tmp_path):
    root = _folder(tmp_path)
    header = ",".join(["Path"] + [f"L{i}" for i in range(100_000)])
    (root / "labels.csv").write_text(header + "\n" + "0.png" + ",0" * 100_000 + "\n")
    with pytest.raises(ValueError, match=f"100001 columns, more than {MAX_COLUMNS}"):
        load_dataset("multilabel-csv", root)


def test_nih_findings_beyond_the_label_limit_are_refused(tmp_path):
    root = _folder(tmp_path, 2)
    many = "|".join(np.base_repr(36 + i, 36) for i in range(1001))  # 1001 names in 3003 characters
    (root / "labels.csv").write_text(f"Image Index,Finding Labels\n0.png,{many}\n1.png,F1\n")
    with pytest.raises(ValueError, match="more than 1000; name the ones to use"):
        load_dataset("multilabel-csv", root)


def test_bad_values_and_options_name_what_to_do(tmp_path):
    root = _folder(tmp_path)
    (root / "labels.csv").write_text("Path,Mass\n0.png,maybe\n")
    with pytest.raises(ValueError, match=r"line 2: 'maybe' is not 1, 0, -1 or empty"):
        load_dataset("multilabel-csv", root)
    with pytest.raises(ValueError, match="uncertain must be one of zeros, ones, ignore"):
        load_dataset("multilabel-csv", root, uncertain="half")
    (root / "labels.csv").write_text("Path,Mass\n0.png,1\n0.png,0\n")
    with pytest.raises(ValueError, match="labelled twice"):
        load_dataset("multilabel-csv", root)
    os.remove(root / "labels.csv")
    with pytest.raises(ValueError, match=r"0 \.csv files"):
        load_dataset("multilabel-csv", root)
