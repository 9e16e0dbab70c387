"""Model folders and image archives for the embedding tests, made in a second."""

import json
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from zoo.files import atomic_write_json, save_safetensors
from zoo.hub_format import MODEL_CONFIG_FILE, WEIGHTS_FILE, make_config


def model_folder(path: Path, seed: int = 0, size: int = 32, architecture: str = "test_resnet") -> Path:
    """An export folder of a randomly initialised timm model (``zoo.load`` reads it like any export); also the
    embedding bench's (bench/embed_throughput.py), so there is one generator."""
    torch.manual_seed(seed)
    model = timm.create_model(architecture, num_classes=2)
    data_config = {
        "input_size": (3, size, size),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
    }
    config = make_config(
        architecture,
        dict(model.pretrained_cfg),
        num_classes=2,
        num_features=model.num_features,
        in_chans=3,
        label_names=["a", "b"],
        data_config=data_config,
        license="mit",
        zoo_metadata={"method": "random", "dataset": "none"},
    )
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / MODEL_CONFIG_FILE, config)
    save_safetensors(model.state_dict(), path / WEIGHTS_FILE)
    return path


def image_folder(root: Path, count: int, seed: int = 0, size=(40, 30), depth: int = 3) -> Path:
    """``count`` random PNGs spread over nested folders (``d0/d1/…``), some grey, some RGB, of varied sizes."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root.joinpath(*(f"d{(i >> k) % 3}" for k in range(i % depth)))
        folder.mkdir(parents=True, exist_ok=True)
        w, h = size[0] + i % 7, size[1] + i % 5
        shape = (h, w) if i % 4 == 0 else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img{i:05d}.png")
    return root


def hostile_outputs(root: Path) -> dict[str, Path]:
    """Embedding outputs as a stranger could hand them over (to search them, or as the demo's --similar DIR)."""
    from zoo.embeddings.format import plan_id

    key = {"model": {"width": 4}, "dtype": "float32"}
    meta = {
        "format": "medssl-zoo-embeddings",
        "version": 1,
        "complete": True,
        "plan": plan_id(key),
        "key": key,
    }
    cases = {}

    def case(name: str, shard: bytes | None, **changes) -> None:
        folder = root / name
        folder.mkdir(parents=True)
        shards = [
            {"file": changes.pop("file", "embeddings-00000.safetensors"), "first_row": 0, "rows": 1 << 40}
        ]
        (folder / "meta.json").write_text(json.dumps({**meta, "shards": shards, **changes}))
        if shard is not None:
            (folder / "embeddings-00000.safetensors").write_bytes(shard)
        cases[name] = folder

    header = json.dumps(
        {
            "__metadata__": {
                "medssl-zoo-embeddings": json.dumps(
                    {"plan": plan_id(key), "shard": 0, "first_file": 0, "files": 1 << 40, "skipped": []}
                )
            },
            "embeddings": {"dtype": "F32", "shape": [1 << 40, 4], "data_offsets": [0, 16 << 40]},
        }
    )
    case("2^40 rows declared in 200 bytes", len(header).to_bytes(8, "little") + header.encode())
    case("a 2^60-byte header claim", (1 << 60).to_bytes(8, "little") + b"{}")
    case("a shard path outside the folder", None, file="../../../../etc/passwd")
    case("a plan that is not its key's", None, plan="0" * 64)
    big = root / "a 20 MB meta.json"
    big.mkdir()
    (big / "meta.json").write_text(json.dumps({**meta, "padding": "x" * 20_000_000}))
    cases[big.name] = big
    return cases
