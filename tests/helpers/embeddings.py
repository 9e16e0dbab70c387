"""Model folders and image archives for the embedding tests, made in a second."""

import json
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from zoo.files import save_safetensors
from zoo.hub_format import CONFIG_FILE, WEIGHTS_FILE, make_config


def model_folder(path: Path, seed: int = 0, size: int = 32, architecture: str = "test_resnet") -> Path:
    """An export folder of a randomly initialised timm model (``zoo.load`` reads it like any export)."""
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
    (path / CONFIG_FILE).write_text(json.dumps(config))
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
