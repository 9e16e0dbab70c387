"""Hostile dataset inputs: MedMNIST files that lie, folder trees that fan out, loop, block or go deep, split
manifests that are not manifests, DICOMs inside an archive, and a bad ZOO_HUB_TIMEOUT. Each ends in the right
data or one clear error, within bounds measured in a fresh process; a regression fails in seconds (timeouts)."""

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data import load_dataset

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- MedMNIST files


def npy_header(dtype, shape, fortran=False) -> bytes:
    out = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return out.getvalue()


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def medmnist_arrays(n=(6, 3, 3), size=8, classes=3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(SPLITS, n, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray], raw: dict[str, bytes] | None = None) -> Path:
    """An npz of ``arrays`` (deflated, as ``np.savez_compressed``) plus members given as raw bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, array in arrays.items():
            zf.writestr(f"{key}.npy", npy(array))
        for key, data in (raw or {}).items():
            zf.writestr(f"{key}.npy", data)
    return path


def zip_bomb(path: Path, nbytes: int) -> Path:
    """train_images: ``nbytes`` of zeros deflated to about nbytes / 1000 (written in 1 MiB blocks)."""
    count = nbytes // (28 * 28)
    arrays = medmnist_arrays(size=28)
    arrays["train_labels"] = np.zeros((count, 1), np.uint8)
    del arrays["train_images"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, array in arrays.items():
            zf.writestr(f"{key}.npy", npy(array))
        with zf.open("train_images.npy", "w", force_zip64=True) as member:
            member.write(npy_header(np.uint8, (count, 28, 28)))
            block, left = bytes(1 << 20), count * 28 * 28
            while left:
                member.write(block[: min(left, len(block))])
                left -= min(left, len(block))
    return path


def peak_traced(function) -> tuple[BaseException | None, int]:
    """(what ``function()`` raised, peak bytes allocated meanwhile, numpy's arrays included)."""
    tracemalloc.start()
    try:
        function()
        raised = None
    except BaseException as e:  # noqa: BLE001 (handed back to the test)
        raised = e
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return raised, peak


@pytest.mark.timeout(60)
def test_a_deflated_npz_bomb_is_refused_before_it_is_inflated(tmp_path):
    path = zip_bomb(tmp_path / "pathmnist.npz", 256 * 2**20)
    assert path.stat().st_size < 2 * 2**20  # a 256 MiB array in well under 2 MB
    raised, peak = peak_traced(lambda: load_dataset("medmnist", path))
    assert isinstance(raised, ValueError) and "zip bomb" in str(raised), raised
    assert "pathmnist.npz" in str(raised) and "train_images" in str(raised)
    assert peak < 16 * 2**20, peak  # nothing of the array was allocated


@pytest.mark.timeout(60)
def test_an_npy_header_that_claims_a_huge_array_is_refused_before_allocation(tmp_path):
    arrays = medmnist_arrays()
    del arrays["train_images"]
    lie = npy_header(np.uint8, (10**5, 1000, 1000)) + bytes(100)  # claims 100 GB, holds 100 bytes
    path = write_npz(tmp_path / "liar.npz", arrays, {"train_images": lie})
    raised, peak = peak_traced(lambda: load_dataset("medmnist", path))
    assert isinstance(raised, ValueError) and "train_images declares" in str(raised), raised
    assert "its header describes 100000000" in str(raised) and peak < 16 * 2**20


def test_the_decoded_size_is_bounded_by_the_machine(tmp_path, monkeypatch):
    from zoo.data import medmnist as medmnist_module

    path = write_npz(tmp_path / "pathmnist_64.npz", medmnist_arrays(size=64))
    monkeypatch.setattr(medmnist_module, "decoded_limit", lambda: 20_000)
    with pytest.raises(ValueError, match=r"pathmnist_64.npz decodes to .* GiB, more than .* smaller size"):
        load_dataset("medmnist", path)
    monkeypatch.undo()
    assert len(load_dataset("medmnist", path).records) == 12


def test_an_npz_with_thousands_of_members_is_refused_before_its_directory_is_read(tmp_path):
    path = write_npz(tmp_path / "many.npz", medmnist_arrays())
    with zipfile.ZipFile(path, "a") as zf:
        for i in range(1000):
            zf.writestr(f"x{i}.npy", b"")
    with pytest.raises(ValueError, match="many.npz holds 1006 members"):
        load_dataset("medmnist", path)


@pytest.mark.parametrize("label", [1000, 30_000_000, 2**63 + 5])
def test_a_label_beyond_the_class_bound_is_refused(tmp_path, label):
    arrays = medmnist_arrays()
    dtype = np.uint64 if label > 2**62 else np.uint32
    arrays["val_labels"] = arrays["val_labels"].astype(dtype)
    arrays["val_labels"][1] = label
    path = write_npz(tmp_path / "octmnist.npz", arrays)
    with pytest.raises(ValueError, match=rf"octmnist.npz: val_labels\[1\] is {label}, but labels are"):
        load_dataset("medmnist", path)


def test_a_negative_label_is_one_clear_error(tmp_path):
    arrays = medmnist_arrays()
    arrays["test_labels"] = arrays["test_labels"].astype(np.int16)
    arrays["test_labels"][2] = -1
    path = write_npz(tmp_path / "breastmnist.npz", arrays)
    with pytest.raises(
        ValueError, match=r"breastmnist.npz: test_labels\[2\] is -1, but labels are class indices"
    ):
        load_dataset("medmnist", path)


def test_the_largest_allowed_label_loads(tmp_path):
    arrays = medmnist_arrays()
    arrays["train_labels"] = arrays["train_labels"].astype(np.int64)
    arrays["train_labels"][0] = 999
    ds = load_dataset("medmnist", write_npz(tmp_path / "x.npz", arrays))
    assert ds.num_classes == 1000 and ds.counts()["train"][999] == 1


def read_all(ds) -> np.ndarray:
    """The pixels as the dataset serves them, in the file's order (records are sorted by key)."""
    order = sorted(range(len(ds.records)), key=lambda i: int(ds.records[i].key.split("/")[1]))
    return np.stack([ds.read(i).numpy()[0] for i in order])


def test_float_images_in_zero_one_are_scaled_not_zeroed(tmp_path):
    arrays = medmnist_arrays()
    rng = np.random.default_rng(1)
    floats = {s: rng.random(arrays[f"{s}_images"].shape).astype(np.float32) for s in SPLITS}
    floats["val"][0, 0, 0] = np.nan  # ignored, becomes 0
    for s in SPLITS:
        arrays[f"{s}_images"] = floats[s]
    ds = load_dataset("medmnist", write_npz(tmp_path / "f.npz", arrays))
    expected = np.rint(np.nan_to_num(np.concatenate([floats[s] for s in SPLITS])) * 255).astype(np.uint8)
    assert ds.read(0).dtype == torch.uint8 and np.array_equal(read_all(ds), expected)
    assert read_all(ds).mean() > 100  # not black


def test_int64_images_beyond_a_byte_are_rescaled_not_wrapped(tmp_path):
    arrays = medmnist_arrays()
    wide = {s: arrays[f"{s}_images"].astype(np.int64) * 16 - 300 for s in SPLITS}  # -300 .. 3780
    for s in SPLITS:
        arrays[f"{s}_images"] = wide[s]
    ds = load_dataset("medmnist", write_npz(tmp_path / "w.npz", arrays))
    every = np.concatenate([wide[s] for s in SPLITS]).astype(np.float64)
    expected = np.rint((every - every.min()) * 255 / (every.max() - every.min())).astype(np.uint8)
    assert np.array_equal(read_all(ds), expected)  # one range for the whole file, every split alike


def test_integer_images_already_in_a_byte_and_fortran_order_are_kept_exactly(tmp_path):
    arrays = medmnist_arrays()
    original = np.concatenate([arrays[f"{s}_images"] for s in SPLITS])
    arrays["train_images"] = np.asfortranarray(arrays["train_images"].astype(np.int64))
    arrays["val_images"] = arrays["val_images"].astype(np.float64)
    ds = load_dataset("medmnist", write_npz(tmp_path / "k.npz", arrays))
    assert ds.pixels.dtype == np.uint8 and np.array_equal(read_all(ds), original)


@pytest.mark.parametrize(
    ("dtype", "message"),
    [(np.complex64, "holds complex64 values; images must be"), (np.bool_, "holds bool values")],
)
def test_images_of_another_type_are_refused_by_type(tmp_path, dtype, message):
    arrays = medmnist_arrays()
    arrays["test_images"] = arrays["test_images"].astype(dtype)
    with pytest.raises(ValueError, match=f"c.npz: test_images {message}"):
        load_dataset("medmnist", write_npz(tmp_path / "c.npz", arrays))


def test_pickled_and_damaged_members_are_refused(tmp_path):
    arrays = medmnist_arrays()
    del arrays["val_labels"]
    pickled = io.BytesIO()
    np.save(pickled, np.array([object()] * 3), allow_pickle=True)
    path = write_npz(tmp_path / "p.npz", arrays, {"val_labels": pickled.getvalue()})
    with pytest.raises(ValueError, match="p.npz: val_labels holds Python objects"):
        load_dataset("medmnist", path)
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="z.npz is not a .npz file"):
        load_dataset("medmnist", tmp_path / "z.npz")
