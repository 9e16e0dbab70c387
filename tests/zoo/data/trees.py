"""Generated dataset trees that reproduce the real layouts and their quirks (notes/datasets.md)."""

from pathlib import Path

import numpy as np
from PIL import Image


def image(path: Path, mode="RGB", size=(20, 14), seed=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    Image.fromarray(array, mode=mode).save(path, format=fmt)
    return path


def junk(folder: Path):
    """macOS droppings every real zip has."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "._hidden.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")


def breast(root: Path, per_class=(6, 10), slides=4) -> Path:
    """archive/BreaKHis 400X/{train,test}/{benign,malignant}/SOB_*.png — slides shared by train and test."""
    base = root / "archive" / "BreaKHis 400X"
    n = 0
    for split, count_scale in (("train", 2), ("test", 1)):
        for c, (label, count) in enumerate(zip(("benign", "malignant"), per_class, strict=True)):
            for i in range(count * count_scale // 2):
                slide = f"{14 + i % slides}-{22549 + 100 * c + i % slides}AB"  # a slide has one diagnosis
                kind = "B_A" if label == "benign" else "M_DC"
                ext = ".PNG" if i == 0 else ".png"  # upper-case extension
                image(base / split / label / f"SOB_{kind}-{slide}-400-{n:03d}{ext}", seed=n)
                n += 1
            junk(base / split / label)
    return root


def crc(root: Path, per_class=5, sources=3) -> Path:
    """Kather_…_5000/Kather_…_5000/{01_TUMOR,…}/*.tif, doubly nested, with the larger images beside it."""
    outer = root / "Kather_texture_2016_image_tiles_5000"
    inner = outer / "Kather_texture_2016_image_tiles_5000"
    from zoo.data import get_dataset_spec

    for c, name in enumerate(get_dataset_spec("crc").class_names):
        for i in range(per_class):
            src = f"CRC-Prim-HE-{(i % sources) + 1:02d}"
            image(inner / name / f"{c}A{i}_{src}_0{i}.tif_Row_1_Col_{i}.tif", seed=c * 100 + i, fmt="TIFF")
    image(outer / "Kather_texture_2016_larger_images_10" / "CRC-Prim-HE-01_APPLICATION.tif", fmt="TIFF")
    (outer / "hmnist_28_28_RGB.csv").write_text("pixel0000,label\n0,1\n")
    return root


def pneumonia(root: Path, counts=None) -> Path:
    """chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg + the chest_xray/chest_xray duplicate + __MACOSX."""
    counts = counts or {"train": (6, 12), "val": (2, 2), "test": (4, 6)}
    top = root / "chest_xray"
    for tree in (top, top / "chest_xray"):
        n = 0
        for split, (normal, pneu) in counts.items():
            for i in range(normal):
                mode = "RGB" if i == 1 else "L"  # a few RGB files among grayscale ones
                image(tree / split / "NORMAL" / f"IM-{100 + i // 2:04d}-000{i}.jpeg", mode=mode, seed=n)
                n += 1
            for i in range(pneu):
                kind = "bacteria" if i % 2 else "virus"
                image(tree / split / "PNEUMONIA" / f"person{i // 2}_{kind}_{i}.jpeg", mode="L", seed=n)
                n += 1
    junk(top / "train" / "NORMAL")
    mac = root / "__MACOSX" / "chest_xray" / "train" / "NORMAL"
    mac.mkdir(parents=True)
    (mac / "._IM-0100-0000.jpeg").write_bytes(b"\x00\x05\x16\x07")
    return root


def covid(root: Path, per_class=4) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(("Covid", "Normal", "Viral Pneumonia")):
            for i in range(per_class if split == "train" else 2):
                image(root / "Covid" / split / name / f"{c}{i}.jpg", mode="L", seed=c * 10 + i, fmt="JPEG")
    return root


def imagefolder(root: Path, classes=("cats", "dogs", "eels"), per_class=6) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            image(root / name / f"{i}.jpg", seed=c * 10 + i, fmt="JPEG")
    return root


def medmnist(path: Path, n=(10, 4, 6), size=28, rgb=True, classes=3) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        shape = (count, size, size, 3) if rgb else (count, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path
