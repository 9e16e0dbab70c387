"""The Hub folder format, defined once: ``config.json`` in timm's schema plus a ``zoo`` metadata block.

Written by :mod:`hub.export`, read by :func:`zoo.load`. Plain ``timm.create_model("hf-hub:<repo>",
pretrained=True)`` reads the same file: timm uses ``architecture``, ``num_classes``, ``model_args``,
``pretrained_cfg`` and ignores the ``zoo`` block.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from timm.models import PretrainedCfg

__all__ = [
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "CARD_FILE",
    "PLOT_FILE",
    "EXPORT_FILES",
    "is_export",
    "make_config",
    "read_config",
    "zoo_home",
]

WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, PLOT_FILE = (
    "model.safetensors",
    "config.json",
    "README.md",
    "curves.png",
)
EXPORT_FILES = frozenset({WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, PLOT_FILE})
PRETRAINED_CFG_KEYS = {f.name for f in dataclasses.fields(PretrainedCfg)}
# fields of timm's ImageNet default cfg that do not describe our weights
IMAGENET_ONLY = (
    "tag",
    "hf_hub_id",
    "hf_hub_filename",
    "url",
    "file",
    "origin_url",
    "paper_ids",
    "paper_name",
    "notes",
    "source",
    "architecture",
    "custom_load",
    "state_dict",
    "hf_hub_revision",
)


def zoo_home() -> Path:
    """Where locally exported models live: ``$ZOO_HOME``, else ``./zoo_home`` (no home-directory default)."""
    return Path(os.environ.get("ZOO_HOME", "zoo_home")).resolve()


def is_export(folder: str | Path) -> bool:
    """Whether ``folder`` is an export of this project: a ``config.json`` with a ``zoo`` block and nothing but
    export files (the only kind of existing folder an export may replace)."""
    folder = Path(folder)
    try:
        names = {p.name for p in folder.iterdir()}
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("zoo"), dict) and names <= EXPORT_FILES


def make_config(
    architecture: str,
    default_cfg: dict,
    *,
    num_classes: int,
    num_features: int,
    in_chans: int,
    label_names: list[str],
    data_config: dict,
    license: str,
    zoo_metadata: dict,
    global_pool: str = "avg",
) -> dict:
    """A timm ``config.json``: the architecture's default cfg with every ImageNet-specific field replaced by the
    run's own (input size, mean/std, crop, interpolation, licence, classes)."""
    cfg = {k: v for k, v in default_cfg.items() if k in PRETRAINED_CFG_KEYS and k not in IMAGENET_ONLY}
    cfg.update(
        input_size=list(data_config["input_size"]),
        mean=list(data_config["mean"]),
        std=list(data_config["std"]),
        crop_pct=float(data_config.get("crop_pct", 1.0)),
        interpolation=data_config.get("interpolation", "bilinear"),
        num_classes=num_classes,
        license=license,
    )
    cfg.pop("test_input_size", None)
    cfg.pop("test_crop_pct", None)
    return {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": num_features,
        "global_pool": global_pool,
        "label_names": list(label_names),
        "model_args": {"in_chans": in_chans},
        "pretrained_cfg": cfg,
        "zoo": zoo_metadata,
    }


def read_config(path: str | Path) -> dict:
    """Read and check a ``config.json``; ``ValueError`` naming what is missing."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e
    missing = [k for k in ("architecture", "num_classes", "pretrained_cfg") if k not in config]
    if missing:
        raise ValueError(f"{path} lacks {missing}: not a timm model config")
    unknown = sorted(set(config["pretrained_cfg"]) - PRETRAINED_CFG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown pretrained_cfg keys {unknown} (timm would refuse them)")
    return config
