"""Every dataset spec on generated trees that reproduce the real layouts and quirks."""

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.zoo.data import trees
from zoo.data import DatasetNotFoundError, list_datasets, load_dataset, read_manifest
from zoo.data import layout as layout_module


def test_registry_has_all_datasets():
    assert list_datasets() == [
        "breast",
        "covid",
        "crc",
        "folder",
        "imagefolder",
        "medmnist",
        "multilabel-csv",
        "pneumonia",
        "synthetic",
    ]


def test_breast_archive_wrapper_space_junk_uppercase(tmp_path):
    ds = load_dataset("breast", trees.breast(tmp_path))
    assert ds.class_names == ["benign", "malignant"] and ds.channels == 3
    assert len(ds.records) == 6 + 10 + 3 + 5  # train (2x) + test (1x), junk excluded, .PNG included
    assert all(r.key.startswith(("train/", "test/")) for r in ds.records)
    assert not any("._" in r.key or "DS_Store" in r.key for r in ds.records)
    assert any(r.key.endswith(".PNG") for r in ds.records)
    # the study's policy: the official test folder is the test split, val drawn from train
    assert {r.split for r in ds.records if r.key.startswith("test/")} == {"test"}
    assert {r.split for r in ds.records if r.key.startswith("train/")} == {"train", "val"}
    assert ds.records[0].group.count("-") == 1  # slide id like 14-22549AB
    assert ds.read(0).shape == (3, 14, 20) and ds.read(0).dtype == torch.uint8


def test_breast_grouped_split_is_slide_disjoint(tmp_path):
    ds = load_dataset("breast", trees.breast(tmp_path, per_class=(40, 40), slides=12), grouped=True)
    sides = {}
    for r in ds.records:
        sides.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values()), "a slide is on both sides of a split"
    assert {r.split for r in ds.records} == {"train", "val", "test"}


def test_crc_double_nesting_tiff_and_source_groups(tmp_path):
    ds = load_dataset("crc", trees.crc(tmp_path))
    assert len(ds.class_names) == 8 and len(ds.records) == 40
    assert all(r.key.endswith(".tif") and "larger_images" not in r.key for r in ds.records)
    assert {r.group for r in ds.records} == {"CRC-Prim-HE-01", "CRC-Prim-HE-02", "CRC-Prim-HE-03"}
    assert sum(ds.counts()["test"]) == 8  # 20 % stratified
    assert ds.read(0).shape[0] == 3


def test_pneumonia_duplicate_macosx_rgb_and_merged_val(tmp_path):
    ds = load_dataset("pneumonia", trees.pneumonia(tmp_path))
    assert ds.class_names == ["NORMAL", "PNEUMONIA"] and ds.channels == 1 and ds.mean == (0.5,)
    assert len(ds.records) == 18 + 4 + 10  # the chest_xray/chest_xray duplicate is ignored
    assert not any(r.key.startswith("chest_xray/") for r in ds.records)
    assert sum(ds.counts()["test"]) == 10  # official test kept
    # official val (4) merged into train, then 10 % of the 22 drawn as val
    assert sum(ds.counts()["train"]) + sum(ds.counts()["val"]) == 22
    rgb_file = next(i for i, r in enumerate(ds.records) if r.key.endswith("0001.jpeg"))
    assert ds.read(rgb_file).shape[0] == 1  # RGB among grayscale → converted
    # patient numbers restart between splits: groups are scoped by the official split folder
    assert any(r.group.startswith("test/person") for r in ds.records)


def test_pneumonia_grouped_split_keeps_each_patient_on_one_side(tmp_path):
    counts = {"train": (20, 40), "val": (2, 2), "test": (4, 6)}
    ds = load_dataset("pneumonia", trees.pneumonia(tmp_path, counts=counts), grouped=True)
    sides: dict[str, set] = {}
    for r in ds.records:
        sides.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values()), sides
    patients = {r.group for r in ds.records if "person" in r.group}
    assert len(patients) > 10 and all("/" in g for g in patients)  # person<N> scoped by the official folder
    assert sum(ds.counts()["val"]) > 0 and sum(ds.counts()["test"]) > 0


def test_pneumonia_as_rgb_like_the_study(tmp_path):

    ds = load_dataset("pneumonia", trees.pneumonia(tmp_path), channels=3)
    assert ds.read(0).shape[0] == 3 and ds.mean == (0.5, 0.5, 0.5)


def test_covid_three_classes_with_a_space(tmp_path):
    ds = load_dataset("covid", trees.covid(tmp_path))
    assert ds.class_names == ["Covid", "Normal", "Viral Pneumonia"]
    assert sum(ds.counts()["test"]) == 6


def test_imagefolder_discovers_classes(tmp_path):
    ds = load_dataset("imagefolder", trees.imagefolder(tmp_path))
    assert ds.class_names == ["cats", "dogs", "eels"]
    assert sorted(ds.counts()) == ["test", "train", "val"] and sum(ds.counts()["test"]) > 0


def test_imagefolder_test_and_val_folders_are_its_splits(tmp_path):
    for split, n in (("train", 20), ("val", 4), ("test", 5)):
        trees.imagefolder(tmp_path / split, classes=("a", "b"), per_class=n)
    ds = load_dataset("imagefolder", tmp_path)
    by_split = {
        s: {r.key.split("/")[0] for r in ds.records if r.split == s} for s in ("train", "val", "test")
    }
    assert by_split == {"train": {"train"}, "val": {"val"}, "test": {"test"}}
    assert ds.counts() == {"train": [20, 20], "val": [4, 4], "test": [5, 5]}
    shutil.rmtree(tmp_path / "val")  # no val folder: val is drawn from train, test stays the test folder
    ds = load_dataset("imagefolder", tmp_path)
    assert ds.counts()["test"] == [5, 5] and sum(ds.counts()["val"]) > 0
    assert all(r.key.startswith("train/") for r in ds.records if r.split == "val")


@pytest.mark.timeout(20)  # a regression would list paths for minutes and gigabytes: fail in seconds instead
def test_links_back_to_an_ancestor_are_not_followed(tmp_path):
    root = trees.imagefolder(tmp_path / "data")
    reference = load_dataset("imagefolder", root)
    (root / "loop").symlink_to(root, target_is_directory=True)  # ln -s $ROOT $ROOT/loop
    (root / "cats" / "again").symlink_to(root / "cats", target_is_directory=True)
    (root / "dogs" / "up").symlink_to(root, target_is_directory=True)
    elsewhere = trees.imagefolder(tmp_path / "more", classes=("extra",), per_class=3)
    (root / "eels" / "shared").symlink_to(
        elsewhere / "extra", target_is_directory=True
    )  # a real link: followed
    ds = load_dataset("imagefolder", root)
    assert ds.class_names == reference.class_names
    assert sum(map(sum, ds.counts().values())) == 18 + 3


def test_a_file_name_that_is_not_utf8_is_skipped_by_name(tmp_path, caplog):
    root = trees.imagefolder(tmp_path / "data")
    bad = os.path.join(os.fsencode(root / "cats"), b"caf\xe9.jpg")  # Latin-1 bytes, as old zips have them
    shutil.copyfile(root / "cats" / "0.jpg", bad)
    ds = load_dataset("imagefolder", root)
    assert sum(map(sum, ds.counts().values())) == 18
    assert "caf\\xe9.jpg" in caplog.text and "not valid UTF-8" in caplog.text
    ds.write_manifest(tmp_path / "split.csv")  # no UnicodeEncodeError


@pytest.mark.parametrize("rgb", [True, False])
def test_medmnist_npz_with_all_six_keys(tmp_path, rgb):
    path = trees.medmnist(tmp_path / "pathmnist_64.npz", size=64, rgb=rgb, classes=9, n=(18, 9, 9))
    ds = load_dataset("medmnist", path)
    assert ds.counts() == {"train": [2] * 9, "val": [1] * 9, "test": [1] * 9}  # official splits kept
    assert ds.read(0).shape == ((3 if rgb else 1), 64, 64)
    assert ds.class_names[0] == "adipose"
    other = load_dataset("medmnist", trees.medmnist(tmp_path / "octmnist.npz", classes=3))
    assert other.class_names == ["class_0", "class_1", "class_2"]
    same = load_dataset("medmnist", tmp_path, flag="pathmnist", size=64)
    assert [r.key for r in same.records] == [r.key for r in ds.records]


def test_medmnist_3d_flags_are_refused_and_multi_label_flags_not_reduced(tmp_path):
    volumes = {f"{s}_images": np.zeros((4, 28, 28, 28), np.uint8) for s in ("train", "val", "test")}
    labels = {f"{s}_labels": np.zeros((4, 1), np.uint8) for s in ("train", "val", "test")}
    np.savez(tmp_path / "organmnist3d.npz", **volumes, **labels)
    with pytest.raises(ValueError, match="3D volumes .* not supported"):
        load_dataset("medmnist", tmp_path / "organmnist3d.npz")
    images = {f"{s}_images": np.zeros((4, 28, 28), np.uint8) for s in ("train", "val", "test")}
    multi = {f"{s}_labels": np.eye(4, 14, dtype=np.uint8) for s in ("train", "val", "test")}
    np.savez(tmp_path / "chestmnist.npz", **images, **multi)
    chest = load_dataset("medmnist", tmp_path / "chestmnist.npz")  # multi-label: 14 labels, none reduced away
    assert chest.multilabel and chest.num_classes == 14


def test_medmnist_missing_keys(tmp_path):

    np.savez(tmp_path / "x.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="missing keys"):
        load_dataset("medmnist", tmp_path / "x.npz")


def test_split_is_independent_of_file_system_order(tmp_path, monkeypatch):
    root = trees.crc(tmp_path)
    reference = [(r.key, r.split) for r in load_dataset("crc", root).records]
    real_walk, real_iterdir = layout_module.os.walk, Path.iterdir

    def shuffled_walk(top, **kwargs):
        for dirpath, dirnames, filenames in real_walk(top, **kwargs):
            random.Random(1).shuffle(filenames)
            random.Random(3).shuffle(dirnames)
            yield dirpath, dirnames, filenames

    def shuffled_iterdir(self):
        items = list(real_iterdir(self))
        random.Random(2).shuffle(items)
        return iter(items)

    monkeypatch.setattr(layout_module.os, "walk", shuffled_walk)
    monkeypatch.setattr(Path, "iterdir", shuffled_iterdir)
    assert [(r.key, r.split) for r in load_dataset("crc", root).records] == reference


def test_split_changes_with_the_seed_and_stays_stratified(tmp_path):
    root = trees.crc(tmp_path)
    a, b = load_dataset("crc", root, seed=1), load_dataset("crc", root, seed=2)
    assert [r.split for r in a.records] != [r.split for r in b.records]
    assert a.counts()["test"] == [1] * 8


def test_grouped_crc_never_splits_a_source_image(tmp_path):
    ds = load_dataset("crc", trees.crc(tmp_path, per_class=10, sources=10), grouped=True, test_fraction=0.2)
    sides = {}
    for r in ds.records:
        sides.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values())
    counts = {split: sum(c) for split, c in ds.counts().items()}
    assert all(counts.values()), counts  # every split has groups: not everything in train
    assert 0.1 <= counts["test"] / len(ds.records) <= 0.3


def test_manifest_round_trip_and_mismatch(tmp_path):
    root = trees.crc(tmp_path / "data")
    ds = load_dataset("crc", root, seed=3)
    digest = ds.write_manifest(tmp_path / "split.csv")
    assert len(digest) == 64 and len(read_manifest(tmp_path / "split.csv")) == 40
    again = load_dataset("crc", root, seed=99, manifest=tmp_path / "split.csv")
    assert [r.split for r in again.records] == [r.split for r in ds.records]
    next(next(root.rglob("01_TUMOR")).iterdir()).unlink()
    with pytest.raises(ValueError, match="does not match the files on disk: 1 listed but missing"):
        load_dataset("crc", root, manifest=tmp_path / "split.csv")


def test_missing_root_names_layout_and_download(tmp_path):
    with pytest.raises(
        DatasetNotFoundError, match=r"BreaKHis 400X/\{train,test\}/\{benign,malignant\}.*kaggle"
    ):
        load_dataset("breast", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no folder with the expected layout"):
        load_dataset("pneumonia", tmp_path / "empty")


def test_empty_class_folder_and_unknown_dataset(tmp_path):
    root = trees.crc(tmp_path)
    for f in next(root.rglob("08_EMPTY")).iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="class folder '08_EMPTY' is missing or has no"):
        load_dataset("crc", root)
    with pytest.raises(ValueError, match="Unknown dataset .kather.; valid: breast, covid, crc"):
        load_dataset("kather")
    with pytest.raises(ValueError, match="unknown options"):
        load_dataset("synthetic", num_tiles=3)


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    root = trees.imagefolder(tmp_path, per_class=30)
    (root / "cats" / "0.jpg").write_bytes(b"not an image")
    data = (root / "dogs" / "1.jpg").read_bytes()
    (root / "dogs" / "1.jpg").write_bytes(data[: len(data) // 3])  # truncated
    ds = load_dataset("imagefolder", root, split_policy="random", test_fraction=0.5)
    total = sum(len(ds.indices(s)) for s in ("train", "val", "test"))
    decoded = sum(len(ds.decode(s, 16)[0]) for s in ("train", "val", "test"))
    assert decoded == total - 2
    assert "skipped" in caplog.text and "0.jpg" in caplog.text


def test_too_many_corrupt_images_is_an_error(tmp_path):
    root = trees.imagefolder(tmp_path, per_class=10)
    for path in list(root.rglob("*.jpg"))[:8]:
        path.write_bytes(b"garbage")
    ds = load_dataset("imagefolder", root)
    with pytest.raises(ValueError, match="could not be read"):
        for split in ("train", "val", "test"):
            ds.decode(split, 16)


def test_sixteen_bit_grayscale_is_rescaled_not_clipped(tmp_path):
    from zoo.data import read_image

    array = np.linspace(1000, 4000, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(array).save(tmp_path / "xray16.png")
    out = read_image(tmp_path / "xray16.png", channels=1)
    assert out.min().item() == 0 and out.max().item() == 255 and len(out.unique()) > 32
