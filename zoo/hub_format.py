"""The Hub folder format, defined once: ``config.json`` in timm's schema plus a ``zoo`` metadata block.

Written by :mod:`hub.export`, read by :func:`zoo.load`. Plain ``timm.create_model("hf-hub:<repo>",
pretrained=True)`` reads the same file: timm uses ``architecture``, ``num_classes``, ``model_args``,
``pretrained_cfg`` and ignores the ``zoo`` block. The ``zoo`` block's task type, per-label thresholds and
out-of-distribution reference (``ood.safetensors``, beside the weights) are :mod:`zoo.task`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from timm.models import PretrainedCfg, filter_pretrained_cfg

from zoo.backbones import check_architecture, size_kwargs

__all__ = [
    "WEIGHTS_FILE",
    "MODEL_CONFIG_FILE",
    "CARD_FILE",
    "PLOT_FILE",
    "OOD_FILE",
    "EXPORT_FILES",
    "is_export",
    "make_config",
    "read_config",
    "validate_config",
    "zoo_home",
]

WEIGHTS_FILE, MODEL_CONFIG_FILE, CARD_FILE, PLOT_FILE = (
    "model.safetensors",
    "config.json",
    "README.md",
    "curves.png",
)
HEAD_FILE = "head.safetensors"  # a head-only export's linear head (zoo/composed.py)
OOD_FILE = "ood.safetensors"  # the out-of-distribution reference (zoo.ood); timm never reads it
EXPORT_FILES = frozenset({WEIGHTS_FILE, MODEL_CONFIG_FILE, CARD_FILE, PLOT_FILE, HEAD_FILE, OOD_FILE})
# bounds of what a config.json may ask for (anything larger is refused before a model is built)
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_CLASSES = 100_000
MIN_SIDE, MAX_SIDE = 8, 4096
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
# the only model_args a config.json may pass to timm.create_model, with their valid values
MODEL_ARGS = {
    "in_chans": lambda v: _is_int(v) and v in (1, 3),
    "img_size": lambda v: _is_int(v) and MIN_SIDE <= v <= MAX_SIDE,
}
REFUSED_MODEL_ARGS = {
    "checkpoint_path",
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "pretrained_strict",
}
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
        config = json.loads((folder / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
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
    run's own (input size, mean/std, crop, interpolation, licence, classes); ``model_args`` rebuild the model
    (``in_chans``, and ``img_size`` for ViTs trained at another size)."""
    ours = {k: v for k, v in default_cfg.items() if k in PRETRAINED_CFG_KEYS and k not in IMAGENET_ONLY}
    cfg = filter_pretrained_cfg(ours, remove_source=True)  # as timm's own save_for_hf writes it (no nulls)
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
        "model_args": {"in_chans": in_chans, **size_kwargs(architecture, data_config["input_size"][-1])},
        "pretrained_cfg": cfg,
        "zoo": zoo_metadata,
    }


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _check_model_args(model_args) -> None:
    if not isinstance(model_args, dict):
        raise ValueError(f"model_args must be a mapping, got {type(model_args).__name__}")
    refused = sorted(set(model_args) & REFUSED_MODEL_ARGS)
    if refused:
        raise ValueError(
            f"model_args {refused} are refused: weights are only read from {WEIGHTS_FILE}, never from a path or "
            "a download named in config.json (pickle files can run code)"
        )
    unknown = sorted(set(model_args) - set(MODEL_ARGS))
    if unknown:
        raise ValueError(f"unknown model_args {unknown}; allowed: {', '.join(MODEL_ARGS)}")
    for key, valid in MODEL_ARGS.items():
        if key in model_args and not valid(model_args[key]):
            raise ValueError(f"model_args.{key} = {model_args[key]!r} is out of range")


def _check_pretrained_cfg(cfg, in_chans: int) -> None:
    if not isinstance(cfg, dict):
        raise ValueError(f"pretrained_cfg must be a mapping, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - PRETRAINED_CFG_KEYS)
    if unknown:
        raise ValueError(f"unknown pretrained_cfg keys {unknown} (timm would refuse them)")
    size = cfg.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(_is_int(v) for v in size)):
        raise ValueError(f"pretrained_cfg.input_size must be [channels, height, width], got {size!r}")
    if size[0] != in_chans or not all(MIN_SIDE <= v <= MAX_SIDE for v in size[1:]):
        raise ValueError(
            f"pretrained_cfg.input_size {size} must have {in_chans} channel(s) (model_args.in_chans) and sides "
            f"in {MIN_SIDE}..{MAX_SIDE}"
        )
    for key in ("mean", "std"):
        values = cfg.get(key)
        if not (isinstance(values, list) and len(values) == in_chans and all(_is_number(v) for v in values)):
            raise ValueError(f"pretrained_cfg.{key} must be {in_chans} number(s), got {values!r}")
    if not all(v > 0 for v in cfg["std"]):
        raise ValueError(f"pretrained_cfg.std must be positive, got {cfg['std']}")
    crop_pct = cfg.get("crop_pct", 1.0)
    if not (_is_number(crop_pct) and 0.1 <= crop_pct <= 1.0):
        raise ValueError(f"pretrained_cfg.crop_pct must be in [0.1, 1], got {crop_pct!r}")
    if cfg.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise ValueError(f"pretrained_cfg.interpolation must be one of {', '.join(INTERPOLATIONS)}")


def validate_config(config) -> dict:
    """Check a ``config.json`` against the schema before anything is built from it: types, an allow-list of
    ``model_args``, bounded sizes. ``ValueError`` naming the first problem."""
    if not isinstance(config, dict):
        raise ValueError("config.json must be a JSON object")
    missing = [k for k in ("architecture", "num_classes", "pretrained_cfg") if k not in config]
    if missing:
        raise ValueError(f"config.json lacks {missing}: not a timm model config")
    if not isinstance(config["architecture"], str):
        raise ValueError(f"architecture must be a timm model name, got {config['architecture']!r}")
    check_architecture(config["architecture"])
    if not (_is_int(config["num_classes"]) and 0 <= config["num_classes"] <= MAX_CLASSES):
        raise ValueError(f"num_classes must be an integer in 0..{MAX_CLASSES}, got {config['num_classes']!r}")
    if "num_features" in config and not (_is_int(config["num_features"]) and config["num_features"] > 0):
        raise ValueError(f"num_features must be a positive integer, got {config['num_features']!r}")
    labels = config.get("label_names") or []
    if not (isinstance(labels, list) and all(isinstance(n, str) and len(n) <= 200 for n in labels)):
        raise ValueError("label_names must be a list of class names")
    if labels and len(labels) != config["num_classes"]:
        raise ValueError(f"{len(labels)} label_names for num_classes = {config['num_classes']}")
    model_args = config.get("model_args") or {}
    _check_model_args(model_args)
    _check_pretrained_cfg(config["pretrained_cfg"], model_args.get("in_chans", 3))
    if not isinstance(config.get("zoo", {}), dict):
        raise ValueError("the zoo block must be a mapping")
    from zoo.task import check_block  # the task type, thresholds and OOD reference of the zoo block

    check_block(config.get("zoo", {}), config["num_classes"])
    return config


def read_config(path: str | Path) -> dict:
    """Read and validate a ``config.json`` (bounded size, UTF-8 JSON, :func:`validate_config`); ``ValueError``
    naming the file and the problem."""
    path = Path(path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size} bytes: too large for a model config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid UTF-8 JSON ({e})") from e
    try:
        return validate_config(config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
