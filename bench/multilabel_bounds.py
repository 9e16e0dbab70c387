"""Bounds of the hostile multi-label inputs (README reliability table): each case in a fresh process, its outcome
(the first line of the refusal), peak RSS and wall time.

    python bench/multilabel_bounds.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time
def hwm():  # this process's own peak RSS (MiB): VmHWM of its memory map, which exec started afresh (ru_maxrss
    # would carry the peak of the process that forked it)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
import torch, zoo, zoo.data  # imports are not the case's cost
before, t = hwm(), time.perf_counter()
kind, path = sys.argv[1:3]
try:
    if kind == "csv":
        from zoo.data import load_dataset
        load_dataset("multilabel-csv", path)
    else:
        zoo.load(path)
    outcome = "accepted"
except Exception as e:
    outcome = f"{type(e).__name__}: {e}"
print(json.dumps({"outcome": outcome[:160], "s": time.perf_counter() - t, "rss_mb": hwm(), "grew_mb": hwm() - before}))
"""
LOAD_CSV, LOAD_MODEL = "csv", "model"  # what the child does with its path


def _images(root: Path, n: int = 4) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    for i in range(n):
        Image.new("L", (8, 8), i).save(root / f"{i}.png")
    return root


def csv_cases(tmp: Path) -> dict[str, tuple[str, Path]]:
    from zoo.data.labels_csv import MAX_CSV_BYTES

    cases = {}
    root = _images(tmp / "huge")
    with open(root / "labels.csv", "wb") as f:
        f.write(b"Image Index,Finding Labels\n")
        f.truncate(MAX_CSV_BYTES + 1)
    cases["labels CSV of 256 MiB + 1 byte (sparse)"] = (LOAD_CSV, root)
    root = _images(tmp / "field")
    (root / "labels.csv").write_text("Image Index,Finding Labels\n0.png," + "A" * 2**20 + "\n")
    cases["a 1 MiB field"] = (LOAD_CSV, root)
    root = _images(tmp / "outside")
    (root / "labels.csv").write_text("Path,Mass\n0.png,1\n../../etc/passwd,1\n")
    cases["a row naming ../../etc/passwd"] = (LOAD_CSV, root)
    root = _images(tmp / "columns")
    header = ",".join(["Path"] + [f"L{i}" for i in range(100_000)])
    (root / "labels.csv").write_text(header + "\n0.png" + ",0" * 100_000 + "\n")
    cases["10^5 label columns"] = (LOAD_CSV, root)
    rows = ["Image Index,Finding Labels"] + [f"x{i}.png,Mass" for i in range(3_000_000)]
    root = _images(tmp / "rows")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    cases["3 million rows naming no image (53 MB)"] = (LOAD_CSV, root)
    return cases


def reference_cases(tmp: Path, export: Path) -> dict[str, tuple[str, Path]]:
    import struct

    import zoo

    features = zoo.load(export).num_features
    cases = {}
    folder = shutil.copytree(export, tmp / "declares")
    shapes = {
        "mean": [features],
        "scale": [features],
        "location": [features],
        "precision": [100_000, 100_000],
    }
    header, start = {}, 0
    for name, shape in shapes.items():
        size = 4 * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name], start = (
            {"dtype": "F32", "shape": shape, "data_offsets": [start, start + size]},
            start + size,
        )
    text = json.dumps(header).encode()
    (folder / "ood.safetensors").write_bytes(struct.pack("<Q", len(text)) + text)
    cases["ood.safetensors declaring a 100000² (40 GB) precision matrix"] = (LOAD_MODEL, folder)
    folder = shutil.copytree(export, tmp / "sparse")
    with open(folder / "ood.safetensors", "r+b") as f:
        f.truncate(1 << 32)
    cases["ood.safetensors of 4 GiB (sparse)"] = (LOAD_MODEL, folder)
    folder = shutil.copytree(export, tmp / "garbage")
    (folder / "ood.safetensors").write_bytes(b"\xff" * 64)
    cases["ood.safetensors of garbage"] = (LOAD_MODEL, folder)
    return cases


def measure(code: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, code, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = csv_cases(tmp)
        if len(sys.argv) > 1:  # an export folder (made by this project) for the reference cases
            cases.update(reference_cases(tmp, Path(sys.argv[1])))
        for name, (code, path) in cases.items():
            result = measure(code, path)
            print(
                f"| {name} | {result['outcome']} | {result['rss_mb']:.0f} MiB peak RSS (+{result['grew_mb']:.0f} MiB over the imports), {result['s']:.2f} s |"
            )


if __name__ == "__main__":
    main()
