"""The decoded disk cache: the same pixels as decoding into RAM, reused by the next run, never used half-written,
decoded once for several processes; unlabelled folders."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.zoo.data import trees
from zoo.data import load_dataset

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "zoo-cache"
    monkeypatch.setenv("ZOO_CACHE", str(folder))
    return folder


def test_disk_cache_holds_exactly_what_memory_decoding_gives(tmp_path, cache):
    ds = load_dataset("crc", trees.crc(tmp_path / "data"))
    for split in ("train", "val", "test"):
        memory, memory_labels = ds.decode(split, 24, cache="memory")
        disk, disk_labels = ds.decode(split, 24, cache="disk")
        assert torch.equal(memory, disk) and torch.equal(memory_labels, disk_labels)
    assert len(list(cache.glob("*.json"))) == 3


def test_the_next_load_reads_the_cache_without_decoding(tmp_path, cache, monkeypatch):
    ds = load_dataset("crc", trees.crc(tmp_path / "data"))
    first, _ = ds.decode("train", 24, cache="disk")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(type(ds), "read", no_decoding)
    again, _ = ds.decode("train", 24, cache="disk")
    assert torch.equal(first, again)


def test_a_half_written_cache_is_never_used(tmp_path, cache):
    ds = load_dataset("crc", trees.crc(tmp_path / "data"))
    reference = ds.decode("train", 24, cache="disk")[0].clone()  # a copy: the file is tampered with below
    (record,) = cache.glob("*.json")
    data = record.with_suffix(".u8")
    record.unlink()  # a crash between writing the pixels and the record that makes them complete
    data.unlink()
    data.write_bytes(b"\xff" * 100)
    assert torch.equal(ds.decode("train", 24, cache="disk")[0], reference) and record.is_file()
    truncated = data.read_bytes()[:-5]  # a cache damaged later (a new file: no mapping of ours points at it)
    data.unlink()
    data.write_bytes(truncated)
    assert torch.equal(ds.decode("train", 24, cache="disk")[0], reference)


def test_changed_files_get_a_new_cache_and_the_stale_one_goes(tmp_path, cache):
    root = trees.crc(tmp_path / "data")
    ds = load_dataset("crc", root)
    ds.decode("train", 24, cache="disk")
    (old,) = cache.glob("*.json")
    first = next(p for p in sorted(root.rglob("*.tif")) if "larger_images" not in str(p))
    first.unlink()
    trees.image(first, size=(22, 14), seed=999, fmt="TIFF")  # the same name, other pixels (and size)
    ds = load_dataset("crc", root)
    in_train = any(r.key.endswith(first.name) and r.split == "train" for r in ds.records)
    assert torch.equal(ds.decode("train", 24, cache="disk")[0], ds.decode("train", 24)[0])
    (new,) = cache.glob("*.json")  # one entry: the new one if the file is in train, else the same
    assert (new != old) == in_train


def test_several_processes_decode_once(tmp_path, cache):
    root = trees.crc(tmp_path / "data", per_class=12)
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from zoo.data import load_dataset
from zoo.data import dataset as module
calls = []
real = module.MedicalDataset.read
module.MedicalDataset.read = lambda self, i: (calls.append(i), real(self, i))[1]
images, _ = load_dataset("crc", {str(root)!r}).decode("train", 24, cache="disk")
print(len(calls), int(images.sum()))
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    decoded = sorted(int(calls) for calls, _ in outputs)
    assert decoded[0] == decoded[1] == 0 and decoded[2] > 0  # one decoded, two waited and read
    assert len({checksum for _, checksum in outputs}) == 1


def test_an_unlabelled_folder_takes_every_image_at_any_depth(tmp_path):
    root = tmp_path / "archive"
    trees.imagefolder(root / "2024" / "scanner-a", per_class=3)
    trees.imagefolder(root / "2025", classes=("x",), per_class=2)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "notes.txt").write_text("not an image")
    ds = load_dataset("folder", root)
    assert len(ds.records) == 9 + 2 and ds.class_names == ["unlabelled"]
    assert ds.counts() == {"train": [11], "val": [0], "test": [0]}
    assert ds.decode("val", 16)[0].shape == (0, 3, 16, 16)
