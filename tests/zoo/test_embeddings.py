"""zoo.embed / zoo.embeddings / zoo.search: exactness against the model itself, the format read by plain numpy,
pandas and safetensors, labels and splits kept, and the search against brute force."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

import zoo
from tests.helpers.embeddings import image_folder, model_folder
from tests.zoo.data import trees
from zoo.data import load_dataset, read_image
from zoo.data.transforms import eval_transform
from zoo.embeddings.format import INDEX_FILE, META_FILE, plan_id, write_csv, write_meta, write_shard
from zoo.embeddings.search import search

ROOT = Path(__file__).resolve().parents[2]
FAST = {"workers": 0, "progress": False}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_folder(tmp_path_factory.mktemp("model") / "m", size=32)


def test_an_embedded_image_is_the_models_own_features_of_it(model, tmp_path):
    """Each row = zoo.load(..., features_only=True) on that file through the model's eval transform, as a user
    would compute it one image at a time (fp32; grey and RGB files of varied sizes, nested folders)."""
    data = image_folder(tmp_path / "data", 23)
    emb = zoo.embed(
        str(model), data, tmp_path / "out", precision="fp32", batch_size=5, shard_size=8, workers=1
    )
    encoder = zoo.load(model, features_only=True)
    transform = eval_transform(encoder.pretrained_cfg)
    rows = emb.to_numpy()
    records = emb.records()
    assert len(rows) == len(records) == 23 and rows.dtype == np.float32
    with torch.inference_mode():
        for row, record in zip(rows, records, strict=True):
            x = transform(read_image(data / record["path"], 3))
            expected = encoder(x[None])[0].numpy()
            np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    assert [r["path"] for r in records] == sorted(
        (p.relative_to(data).as_posix() for p in data.rglob("*.png")), key=lambda p: p.split("/")
    )


def test_the_format_reads_with_plain_numpy_pandas_and_safetensors(model, tmp_path):
    """The README's recipe: meta.json lists the shards in order, safetensors.numpy loads each, index.csv's line i
    is row i. float16 storage is the float32 run rounded (numpy's own rounding as the second computation)."""
    data = image_folder(tmp_path / "data", 13)
    full = zoo.embed(str(model), data, tmp_path / "f32", shard_size=4, **FAST)
    half = zoo.embed(str(model), data, tmp_path / "f16", shard_size=4, dtype="float16", **FAST)

    out = tmp_path / "f16"
    meta = json.loads((out / META_FILE).read_text())
    X = np.concatenate([load_file(out / s["file"])["embeddings"] for s in meta["shards"]])
    df = pd.read_csv(out / INDEX_FILE)
    assert X.dtype == np.float16 and X.shape == (len(df), meta["key"]["model"]["width"])
    np.testing.assert_array_equal(X, full.to_numpy().astype(np.float16))
    np.testing.assert_array_equal(X, half.to_numpy())
    assert list(df.columns) == ["path", "size", "mtime_ns", "label", "split", "shard", "row"]
    assert (data / df.path[7]).stat().st_size == df["size"][7]
    assert (data / df.path[7]).stat().st_mtime_ns == df.mtime_ns[7]
    shard, row = df.shard[7], df.row[7]
    np.testing.assert_array_equal(X[7], load_file(out / meta["shards"][shard]["file"])["embeddings"][row])
    half.verify()


def test_a_labelled_dataset_keeps_its_labels_and_splits(model, tmp_path):
    """--dataset breast below a wrapper folder: paths relative to the data root as given, labels and splits those
    of load_dataset."""
    root = trees.breast(tmp_path / "data")
    emb = zoo.embed(str(model), root, tmp_path / "out", dataset="breast", **FAST)
    ds = load_dataset("breast", root)
    expected = {f"archive/BreaKHis 400X/{r.key}": (ds.class_names[r.label], r.split) for r in ds.records}
    records = emb.records()
    assert {r["path"]: (r["label"], r["split"]) for r in records} == expected
    assert all((root / r["path"]).is_file() for r in records)
    assert emb.meta["data"]["label_names"] == ["benign", "malignant"]


def test_a_medmnist_npz_is_embedded_row_by_row(model, tmp_path):
    path = trees.medmnist(tmp_path / "pathmnist.npz", n=(6, 3, 4), size=28, rgb=True, classes=3)
    emb = zoo.embed(str(model), path, tmp_path / "out", precision="fp32", **FAST)
    ds = load_dataset("medmnist", path)
    records = emb.records()
    assert [r["path"] for r in records] == [r.key for r in ds.records]
    assert {r["split"] for r in records} == {"train", "val", "test"}
    encoder = zoo.load(model, features_only=True)
    with torch.inference_mode():
        x = eval_transform(encoder.pretrained_cfg)(ds.read(5))
        np.testing.assert_allclose(emb.to_numpy()[5], encoder(x[None])[0].numpy(), rtol=1e-5, atol=1e-6)


def test_an_output_names_the_model_it_was_made_with(model, tmp_path):
    """What the demo's similar cases need: the output matches the loaded model (weights, revision, pooling,
    width), another model is refused naming what differs."""
    emb = zoo.embed(str(model), image_folder(tmp_path / "data", 3), tmp_path / "out", **FAST)
    emb.check_model(zoo.embeddings.model_identity(zoo.load(model)), "m")
    other = zoo.load(model_folder(tmp_path / "other", seed=2, size=32))
    with pytest.raises(
        zoo.embeddings.ModelMismatchError, match=r"not other: weights_sha256 '[0-9a-f]{64}' here"
    ):
        emb.check_model(zoo.embeddings.model_identity(other), "other")


def random_output(folder: Path, rows: int, width: int, shard_size: int, seed: int = 0) -> torch.Tensor:
    """A complete output of random vectors written with the format's own writers (several shards)."""
    folder.mkdir(parents=True)
    key = {"model": {"width": width}, "dtype": "float32"}
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))
    shards = []
    for k, start in enumerate(range(0, rows, shard_size)):
        part = x[start : start + shard_size]
        write_shard(folder / f"embeddings-{k:05d}.safetensors", part, plan_id(key), k, start, len(part), [])
        shards.append({"file": f"embeddings-{k:05d}.safetensors", "first_row": start, "rows": len(part)})
    write_csv(
        folder / INDEX_FILE,
        ("path", "size", "mtime_ns", "label", "split", "shard", "row"),
        ((f"{i}.png", 1, 1, "", "", i // shard_size, i % shard_size) for i in range(rows)),
    )
    write_meta(
        folder,
        {
            "format": "medssl-zoo-embeddings",
            "version": 1,
            "complete": True,
            "plan": plan_id(key),
            "key": key,
            "shards": shards,
        },
    )
    return x


def test_search_equals_brute_force_cosine_and_cdist(tmp_path):
    """Chunks smaller than a shard (a 20 KiB budget: a few dozen rows) give what one brute-force pass gives."""
    x = random_output(tmp_path / "out", rows=1000, width=64, shard_size=300)
    q = torch.randn(7, 64, generator=torch.Generator().manual_seed(1))
    hits = search(tmp_path / "out", q, k=10, budget_bytes=20_000)
    cosine = F.normalize(q, dim=1) @ F.normalize(x, dim=1).T
    scores, rows = cosine.topk(10, dim=1)
    assert torch.equal(hits.rows, rows)
    torch.testing.assert_close(hits.scores, scores, rtol=0, atol=1e-6)
    # the same neighbours by Euclidean distance between unit vectors (d^2 = 2 - 2 cos)
    distances = torch.cdist(F.normalize(q, dim=1), F.normalize(x, dim=1))
    assert torch.equal(distances.topk(10, dim=1, largest=False).indices, rows)
    one = zoo.search(tmp_path / "out", x[123].numpy(), k=1)
    assert one.rows.tolist() == [[123]] and one.scores.item() == pytest.approx(1.0)
    assert zoo.embeddings.open(tmp_path / "out").records([123])[0]["path"] == "123.png"


def test_search_refuses_queries_of_another_width(tmp_path):
    random_output(tmp_path / "out", rows=10, width=8, shard_size=4)
    with pytest.raises(ValueError, match=r"queries must be Q x 8"):
        zoo.search(tmp_path / "out", torch.zeros(2, 9))
    with pytest.raises(ValueError, match="positive number"):
        zoo.search(tmp_path / "out", torch.zeros(8), k=0)


SEARCH_PEAK = """
import gc, sys, threading, time
from pathlib import Path
import psutil
from tests.zoo.test_embeddings import random_output
from zoo.embeddings.search import search
folder = Path(sys.argv[1])
x = random_output(folder, rows=200_000, width=256, shard_size=100_000)  # 205 MB of float32 on disk
q = x[:4].clone()
del x
gc.collect()
process = psutil.Process()
base = peak = process.memory_info().rss
done = threading.Event()
def watch():
    global peak
    while not done.is_set():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.001)
watcher = threading.Thread(target=watch)
watcher.start()
hits = search(folder, q, k=3, budget_bytes=8 * 2**20)
done.set()
watcher.join()
assert hits.rows[:, 0].tolist() == [0, 1, 2, 3], hits.rows
print((peak - base) / 2**20)
"""


@pytest.mark.timeout(120)
def test_search_memory_is_bounded_by_the_chunk_not_the_archive(tmp_path):
    """200 000 x 256 float32 (205 MB) searched with an 8 MiB budget: the process grows by tens of MB at most."""
    proc = subprocess.run(
        [sys.executable, "-c", SEARCH_PEAK, str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth_mib = float(proc.stdout.split()[-1])
    assert growth_mib < 64, growth_mib


def test_the_command_line_runs_as_a_module(model, tmp_path, capsys):
    data = image_folder(tmp_path / "data", 6)
    cmd = [
        sys.executable,
        "-m",
        "medssl_zoo.embed",
        str(model),
        str(data),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "0",
        "--shard-size",
        "4",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(zoo.embeddings.open(tmp_path / "out")) == 6
    from medssl_zoo.embed import main

    with pytest.raises(SystemExit) as exit_:
        main([str(model), str(data), "--out", str(tmp_path / "x"), "--batch-size", "0"])
    assert exit_.value.code == 2 and "batch-size must be 1..65536" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
