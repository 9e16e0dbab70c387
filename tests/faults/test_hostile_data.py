"""Hostile dataset inputs: MedMNIST files that lie, folder trees that fan out, loop, block or go deep, split
manifests that are not manifests, DICOMs inside an archive, and a bad ZOO_HUB_TIMEOUT. Each ends in the right
data or one clear error, within bounds measured in a fresh process; a regression fails in seconds (timeouts)."""

import io
import json
import logging
import os
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.faults import corpus
from tests.zoo.data import trees
from zoo.data import ImageDecodeError, load_dataset, read_image, read_manifest

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


# ---------------------------------------------------------------- folder trees


def diamond(top: Path, levels: int = 25) -> list[Path]:
    """Folders L0…L{levels-1}, one image each, and in each two links (a, b) to the next: 2^levels paths."""
    images = []
    for k in range(levels):
        images.append(trees.image(top / f"L{k}" / f"img{k}.png", seed=k, size=(8, 8)))
    for k in range(levels - 1):
        for name in ("a", "b"):
            (top / f"L{k}" / name).symlink_to(top / f"L{k + 1}", target_is_directory=True)
    return images


@pytest.mark.timeout(20)
def test_a_diamond_of_links_is_read_once_per_real_folder(tmp_path):
    root = tmp_path / "data"
    diamond(root)
    ds = load_dataset("folder", root)
    assert sorted(r.key for r in ds.records) == sorted(f"L{k}/img{k}.png" for k in range(25))  # own names


@pytest.mark.timeout(20)
def test_a_diamond_outside_the_root_is_followed_once_through_links(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    outside = tmp_path / "outside"
    images = diamond(outside)
    root = tmp_path / "data"
    root.mkdir()
    (root / "start").symlink_to(outside / "L0", target_is_directory=True)
    ds = load_dataset("folder", root)
    listed = {os.path.realpath(ds.base / r.key) for r in ds.records}
    assert len(ds.records) == 25 and listed == {os.path.realpath(p) for p in images}
    assert "skipped 24 links to folders read already" in caplog.text  # each L{k}'s second link


@pytest.mark.timeout(20)
def test_links_back_up_and_across_are_followed_once_in_a_labelled_tree(tmp_path):
    root = trees.imagefolder(tmp_path / "data")
    (root / "cats" / "up").symlink_to(tmp_path, target_is_directory=True)  # above the root
    (root / "dogs" / "cats").symlink_to(root / "cats", target_is_directory=True)
    ds = load_dataset("imagefolder", root)
    assert sum(map(sum, ds.counts().values())) == 18 + 6  # dogs/cats lists cats' six once more, nothing else


@pytest.mark.timeout(20)
def test_a_fifo_named_like_an_image_is_skipped_by_name_and_never_opened(tmp_path, caplog):
    root = trees.imagefolder(tmp_path / "data", per_class=4)
    os.mkfifo(root / "cats" / "stuck.png")
    os.mkfifo(root / "dogs" / "stuck.dcm")
    ds = load_dataset("imagefolder", root)
    assert sorted(r.key for r in ds.records) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.jpg")
    )
    assert "skipped 2 entries that are neither regular files nor folders (pipes" in caplog.text
    assert "cats/stuck.png" in caplog.text and "dogs/stuck.dcm" in caplog.text
    with pytest.raises(ImageDecodeError, match="stuck.png: not a regular file"):
        read_image(root / "cats" / "stuck.png")
    with pytest.raises(ImageDecodeError, match="stuck.dcm: not a readable DICOM file .*not a regular file"):
        read_image(root / "dogs" / "stuck.dcm")
    assert sum(len(ds.decode(s, 8)[0]) for s in SPLITS) == 12


def deep_tree(top: Path, depth: int) -> Path:
    """``top/d/d/…/d`` ``depth`` folders deep (built one mkdir at a time: os.makedirs recurses)."""
    path = str(top)
    os.mkdir(path)
    for _ in range(depth):
        path = os.path.join(path, "d")
        os.mkdir(path)
    return Path(path)


def remove_deep_tree(top: Path) -> None:
    """Our own deep tree, bottom up, without recursion (os.walk and shutil.rmtree recurse on Python 3.11: left
    behind, it would break pytest's removal of old temporary folders)."""
    if not top.is_dir():
        return
    chain = [str(top)]
    while os.path.isdir(os.path.join(chain[-1], "d")):
        chain.append(os.path.join(chain[-1], "d"))
    for folder in reversed(chain):
        for name in os.listdir(folder):
            if name != "d":
                os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


@pytest.mark.timeout(60)
def test_a_tree_1100_folders_deep_is_walked_without_recursion(tmp_path):
    root = tmp_path / "deep"
    try:
        bottom = deep_tree(root, 1100)
        trees.image(bottom / "bottom.png", size=(8, 8))
        trees.image(root / "top.png", seed=1, size=(8, 8))
        ds = load_dataset("folder", root)
        keys = sorted(r.key for r in ds.records)
        assert keys == sorted(["top.png", "d/" * 1100 + "bottom.png"])
        assert len(ds.decode("train", 8)[0]) == 2
    finally:
        remove_deep_tree(root)


def test_skipped_files_are_named_in_one_bounded_line_per_reason(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="zoo.data.walk")
    root = tmp_path / "archive"
    for i in range(4):
        trees.image(root / "scans" / f"{i}.png", seed=i, size=(8, 8))
    trees.junk(root / "scans")
    (root / "__MACOSX").mkdir()
    for i in range(300):
        (root / "scans" / f"._{i}.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "notes.txt").write_text("not an image")
    load_dataset("folder", root)
    lines = [r.getMessage() for r in caplog.records if r.name == "zoo.data.walk"]
    assert len(lines) == 2, lines  # one per reason, not one per file
    junk = next(line for line in lines if "junk" in line)
    assert "skipped 303 junk files and folders (hidden, ._*, __MACOSX)" in junk and "and 298 more" in junk
    assert "__MACOSX" in junk and len(junk) < 1000
    assert any("skipped 1 files that are not images" in line and "notes.txt" in line for line in lines)


# ---------------------------------------------------------------- DICOMs in a folder archive


def mixed_archive(root: Path) -> dict[str, np.ndarray]:
    """PNGs, a .dcm and a suffix-less DICOM (as PACS exports name them), with the pixels each must give."""
    expected = {}
    root.mkdir()
    for i in range(2):
        array = np.random.default_rng(i).integers(0, 256, (12, 10), dtype=np.uint8)
        Image.fromarray(array).save(root / f"photo{i}.png")
        expected[f"photo{i}.png"] = array
    ramp = np.arange(0, 200, dtype=np.uint8).reshape(10, 20)
    corpus.dicom(root / "ct.dcm", ramp)
    (root / "series").mkdir()
    corpus.dicom(root / "series" / "IM0001", ramp[::-1].copy())
    rescaled = np.rint((ramp.astype(float) - ramp.min()) * 255 / (ramp.max() - ramp.min())).astype(np.uint8)
    expected["ct.dcm"], expected["series/IM0001"] = rescaled, rescaled[::-1]
    return expected


def test_dicoms_in_a_mixed_folder_archive_are_read(tmp_path):
    expected = mixed_archive(tmp_path / "archive")
    ds = load_dataset("folder", tmp_path / "archive", channels=1)
    assert sorted(r.key for r in ds.records) == sorted(expected)
    for i, record in enumerate(ds.records):
        assert np.array_equal(ds.read(i).numpy()[0], expected[record.key]), record.key


def test_without_pydicom_dicoms_are_skipped_and_named_with_the_hint(tmp_path, monkeypatch, caplog):
    expected = mixed_archive(tmp_path / "archive")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # `import pydicom` now raises ImportError
    ds = load_dataset("folder", tmp_path / "archive")
    assert sorted(r.key for r in ds.records) == ["photo0.png", "photo1.png"]
    assert "skipped 2 DICOM files (pydicom is not installed: pip install 'medssl-zoo[demo]')" in caplog.text
    assert "ct.dcm" in caplog.text and "series/IM0001" in caplog.text
    with pytest.raises(ImageDecodeError, match="ct.dcm: a DICOM file, but pydicom is not installed"):
        read_image(tmp_path / "archive" / "ct.dcm")
    assert len(expected) == 4


# ---------------------------------------------------------------- split manifests


@pytest.fixture
def crc_and_manifest(tmp_path):
    root = trees.crc(tmp_path / "data", per_class=3)
    ds = load_dataset("crc", root)
    ds.write_manifest(tmp_path / "split.csv")
    return root, tmp_path / "split.csv"


def test_a_manifest_that_is_a_device_or_a_folder_is_refused_by_name(crc_and_manifest, tmp_path):
    root, _ = crc_and_manifest
    with pytest.raises(ValueError, match="split manifest /dev/zero is not a regular file"):
        load_dataset("crc", root, manifest="/dev/zero")
    with pytest.raises(ValueError, match=f"split manifest {tmp_path} is (a folder|not a regular file)"):
        load_dataset("crc", root, manifest=tmp_path)
    with pytest.raises(FileNotFoundError, match="split manifest .*nope.csv does not exist"):
        load_dataset("crc", root, manifest=tmp_path / "nope.csv")


def test_a_manifest_larger_than_its_images_allow_is_refused_before_it_is_read(crc_and_manifest, tmp_path):
    root, _ = crc_and_manifest
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:
        f.truncate(64 * 2**20)  # 64 MiB of NUL bytes, no newline, for a dataset of 24 images
    raised, peak = peak_traced(lambda: load_dataset("crc", root, manifest=big))
    assert isinstance(raised, ValueError) and "split manifest" in str(raised) and "at most" in str(raised)
    assert peak < 16 * 2**20


def test_a_field_of_128_kib_is_one_clear_error(crc_and_manifest, tmp_path):
    root, good = crc_and_manifest
    text = good.read_text(encoding="utf-8")
    long = tmp_path / "long.csv"
    long.write_text(text + "x" * 128 * 1024 + ",01_TUMOR,train,g\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"split manifest .*long.csv(, line \d+: unreadable CSV|: a field of)"
    ):
        load_dataset("crc", root, manifest=long)
    shorter = tmp_path / "shorter.csv"
    shorter.write_text(text + "x" * 5000 + ",01_TUMOR,train,g\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"shorter.csv: a field of 5000 characters .* at most 4096"):
        load_dataset("crc", root, manifest=shorter)


def test_a_manifest_that_is_not_utf8_is_named(crc_and_manifest, tmp_path):
    root, good = crc_and_manifest
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(good.read_bytes() + "café.tif,01_TUMOR,train,g\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"split manifest .*latin1.csv is not UTF-8 text"):
        load_dataset("crc", root, manifest=latin)


def test_duplicate_rows_with_conflicting_splits_are_named(crc_and_manifest, tmp_path):
    root, good = crc_and_manifest
    rows = read_manifest(good)
    path, label, split, group = rows[4]
    other = "test" if split != "test" else "train"
    twice = tmp_path / "twice.csv"
    twice.write_text(good.read_text(encoding="utf-8") + f"{path},{label},{other},{group}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"lists '{path}' in {split} and in {other} \(data rows 5 and 25\)"):
        load_dataset("crc", root, manifest=twice)
    same = tmp_path / "same.csv"
    same.write_text(good.read_text(encoding="utf-8") + f"{path},{label},{split},{group}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"lists '{path}' twice"):
        load_dataset("crc", root, manifest=same)


def test_a_good_manifest_still_round_trips_through_the_bounded_reader(crc_and_manifest):
    root, good = crc_and_manifest
    first = load_dataset("crc", root, seed=1)
    again = load_dataset("crc", root, seed=99, manifest=good)
    assert [r.split for r in again.records] == [r.split for r in load_dataset("crc", root).records]
    assert len(first.records) == len(again.records) == 24


# ---------------------------------------------------------------- ZOO_HUB_TIMEOUT


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "soon", "1e300"])
def test_a_hub_timeout_that_is_not_a_positive_finite_number_is_refused(monkeypatch, value):
    import zoo
    from zoo.load import _hub_timeout

    monkeypatch.setenv("ZOO_HUB_TIMEOUT", value)
    with pytest.raises(
        ValueError, match=rf"ZOO_HUB_TIMEOUT='{value}' is not a number of seconds in \(0, 3600\]"
    ):
        _hub_timeout()
    with pytest.raises(ValueError, match="ZOO_HUB_TIMEOUT"):
        zoo.load("some-org/some-model")  # refused before any network wait


def test_a_valid_hub_timeout_is_used(monkeypatch):
    from zoo.load import _hub_timeout

    monkeypatch.setenv("ZOO_HUB_TIMEOUT", " 2.5 ")
    assert _hub_timeout() == 2.5
    monkeypatch.delenv("ZOO_HUB_TIMEOUT")
    assert _hub_timeout() == 30.0


# ---------------------------------------------------------------- bounds in a fresh process

FRESH = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from zoo.data import load_dataset
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
status = open("/proc/self/status").read()
size = int(status.split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.RLIM_INFINITY))  # a regression fails fast
results = {{}}
for name, args, kwargs in {cases!r}:
    start = time.time()
    try:
        ds = load_dataset(*args, **kwargs)
        outcome = f"loaded {{len(ds.records)}} records"
    except BaseException as e:
        outcome = f"{{type(e).__name__}}: {{e}}"
    results[name] = {{"outcome": outcome, "seconds": round(time.time() - start, 3)}}
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({{"results": results, "grown_mb": grown / 1024}}))
"""


def fresh(cases: list) -> dict:
    script = FRESH.format(root=str(ROOT), cases=cases)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.timeout(180)
def test_hostile_inputs_stay_bounded_in_a_fresh_process(tmp_path):
    """The hostile cases one after another in a fresh process (address space capped 1 GiB above the imports):
    each refused or loaded as it should, the peak RSS grows by less than 100 MB, each takes seconds."""
    bomb = zip_bomb(tmp_path / "bomb.npz", 512 * 2**20)
    arrays = medmnist_arrays()
    arrays["train_labels"] = arrays["train_labels"].astype(np.uint32)
    arrays["train_labels"][0] = 30_000_000
    label = write_npz(tmp_path / "label.npz", arrays)
    crc = trees.crc(tmp_path / "crc", per_class=3)
    diamond(tmp_path / "diamond")
    cases = [
        ("npz bomb", ["medmnist", str(bomb)], {}),
        ("npz label", ["medmnist", str(label)], {}),
        ("manifest /dev/zero", ["crc", str(crc)], {"manifest": "/dev/zero"}),
        ("diamond", ["folder", str(tmp_path / "diamond")], {}),
    ]
    out = fresh(cases)
    results = {name: r["outcome"] for name, r in out["results"].items()}
    assert "zip bomb" in results["npz bomb"], results
    assert "train_labels[0] is 30000000" in results["npz label"], results
    assert "is not a regular file" in results["manifest /dev/zero"], results
    assert results["diamond"] == "loaded 25 records", results
    assert out["grown_mb"] < 100, out
    assert all(r["seconds"] < 30 for r in out["results"].values()), out
