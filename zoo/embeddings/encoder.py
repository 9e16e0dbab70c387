"""The encoder an archive is embedded with, and what identifies it in an output's key.

Anything :func:`zoo.load` takes (a zoo name, an export folder, a Hub id, a catalogue entry) is loaded with
``features_only=True`` and preprocessed by its own data config through :func:`zoo.data.eval_transform`, exactly
as a user would; a finished pre-training run is read through :mod:`zoo.run_dir` (its final encoder and data
config). The identity recorded is the architecture, the Hub commit (for downloads), the sha256 of the weights
file (so a retrained model under the same name is another model), the pooling and the feature width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from zoo.files import sha256_file
from zoo.hub_format import WEIGHTS_FILE
from zoo.load import load
from zoo.run_dir import ENCODER_FILE, is_run, read_run

__all__ = ["Encoder", "load_encoder", "model_identity", "pooling_of"]


@dataclass
class Encoder:
    """A features-only model in eval mode, its data config and identity."""

    module: torch.nn.Module
    name: str
    data_config: dict
    identity: dict

    @property
    def width(self) -> int:
        return int(self.identity["width"])


def pooling_of(model: torch.nn.Module) -> str:
    """The model's global pooling: a catalogue encoder's own (``cls``, ``cls+mean-patch``; :mod:`zoo.pooling`),
    else as timm names it (``avg``, ``token``, …)."""
    if getattr(model, "zoo_pooling", None):
        return str(model.zoo_pooling)
    pool = getattr(model, "global_pool", None)
    pool = getattr(pool, "pool_type", pool)
    return str(pool) if pool is not None else "unknown"


def _data_config(cfg: dict) -> dict:
    """The five keys :func:`zoo.data.eval_transform` reads, with its defaults written out (JSON types)."""
    missing = [k for k in ("input_size", "mean", "std") if k not in cfg]
    if missing:
        raise ValueError(f"the model's data config lacks {missing}; re-export it with medssl-export")
    return {
        "input_size": [int(v) for v in cfg["input_size"]],
        "crop_pct": float(cfg.get("crop_pct") or 1.0),
        "interpolation": str(cfg.get("interpolation") or "bilinear"),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
    }


def _identity(model: torch.nn.Module, architecture: str, weights: Path, commit: str | None) -> dict:
    return {
        "architecture": architecture,
        "revision": commit,
        "weights_sha256": sha256_file(weights),
        "pooling": pooling_of(model),
        "width": int(model.num_features),
    }


def _from_run(path: Path) -> Encoder:
    run = read_run(path)
    data_config = (run.summary or {}).get("data_config")
    if not run.finished or not data_config:
        raise ValueError(f"{path} is a run that has not finished; embed with its export or let it finish")
    module = run.load_encoder().eval()
    identity = _identity(module, run.config.backbone, path / ENCODER_FILE, None)
    return Encoder(module, path.name, _data_config(data_config), identity)


def _commit(folder: Path) -> str | None:
    """The Hub commit a downloaded model came from (its cache folder is ``snapshots/<commit>``)."""
    return folder.name if folder.parent.name == "snapshots" and len(folder.name) == 40 else None


def model_identity(module: torch.nn.Module) -> dict:
    """The identity of a model :func:`zoo.load` returned (architecture, Hub commit, weights' sha256, pooling,
    width), to compare with an output's (:meth:`zoo.embeddings.Embeddings.check_model`)."""
    folder = Path(module.source)
    architecture = str(module.pretrained_cfg.get("architecture") or type(module).__name__)
    weights = Path(getattr(module, "weights_path", None) or folder / WEIGHTS_FILE)  # a catalogue .bin
    return _identity(module, architecture, weights, _commit(folder))


def load_encoder(model: str | Path, revision: str | None = None) -> Encoder:
    """The encoder ``model`` names: anything :func:`zoo.load` takes, or a finished run directory."""
    if is_run(Path(model)):
        return _from_run(Path(model))
    module = load(model, revision=revision, features_only=True)
    return Encoder(module, str(model), _data_config(dict(module.pretrained_cfg)), model_identity(module))
