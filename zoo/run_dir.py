"""The run directory of a pre-training run, defined once: its file names, reading a run back, and its data.

Written by ``train/pretrain.py``; read by ``train/evaluate.py`` (evaluation, resume), ``train/reproduce.py`` and
``hub/export.py`` (as :mod:`zoo.hub_format` owns the exported folder). Layout::

    <run>/config.yaml                the resolved configuration (written once setup succeeded)
    <run>/run.json                   the run's identity and provenance (written just before config.yaml)
    <run>/split.csv                  the split manifest (path, label, split, group)
    <run>/metrics.jsonl              one JSON object per step / evaluation
    <run>/checkpoints/step_NNNNNNN/  Accelerate state + trainer_state.json (complete folders only)
    <run>/encoder.safetensors        the final backbone; encoder_best.safetensors: best val kNN
    <run>/summary.json               final metrics and the data config (a finished run)
    <run>/curves.png                 loss and kNN curves
    <run>/eval/                      ``train/evaluate.py`` output

Nothing else in the project spells these names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from zoo.backbones import create_backbone
from zoo.data import get_dataset_spec
from zoo.data.dataset import MedicalDataset, load_dataset
from zoo.data.transforms import eval_transform

__all__ = [
    "CONFIG_FILE",
    "RUN_RECORD_FILE",
    "SPLIT_FILE",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "ENCODER_FILE",
    "BEST_ENCODER_FILE",
    "CURVES_FILE",
    "CHECKPOINTS_DIR",
    "EVAL_DIR",
    "RUN_FILES",
    "TRACKING_DIR",
    "Run",
    "RunData",
    "cache_size_of",
    "default_cache_size",
    "is_run",
    "is_run_file",
    "load_run_data",
    "make_data_config",
    "monitor_config",
    "read_run",
    "read_run_record",
]

CONFIG_FILE = "config.yaml"
RUN_RECORD_FILE = "run.json"
RUN_RECORD_LIMIT = 64 * 1024  # bytes; a record is a few hundred
SPLIT_FILE = "split.csv"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ENCODER_FILE = "encoder.safetensors"
BEST_ENCODER_FILE = "encoder_best.safetensors"
CURVES_FILE = "curves.png"
CHECKPOINTS_DIR = "checkpoints"
EVAL_DIR = "eval"
TRACKING_DIR = "tracking"
DISK_CACHE_ABOVE = 2 * 1024**3  # decoded bytes above which cache="auto" decodes a folder dataset to disk

# every name a run directory may hold: a folder with anything else in it was not made by a run
RUN_FILES = frozenset(
    {
        CONFIG_FILE,
        RUN_RECORD_FILE,
        SPLIT_FILE,
        METRICS_FILE,
        SUMMARY_FILE,
        ENCODER_FILE,
        BEST_ENCODER_FILE,
        CURVES_FILE,
        CHECKPOINTS_DIR,
        EVAL_DIR,
        TRACKING_DIR,
    }
)


def is_run_file(name: str) -> bool:
    """Whether a file name belongs in a run directory (one of ``RUN_FILES`` or its temporary file)."""
    return name in RUN_FILES or name.lstrip(".").split(".tmp")[0] in RUN_FILES


def is_run(path: str | Path) -> bool:
    """Whether ``path`` holds a pre-training run (its configuration was written)."""
    return (Path(path) / CONFIG_FILE).is_file()


def default_cache_size(dataset: str, image_size: int, cache_size: int | None = None) -> int:
    """The resolution images are decoded at: ``cache_size``, else the image size for the synthetic tiles (they
    are rendered at it) and image size × 8/7 otherwise (256 for 224, the usual eval resize)."""
    return cache_size or (image_size if dataset == "synthetic" else round(image_size * 8 / 7))


def make_data_config(dataset: MedicalDataset, image_size: int, cache_size: int) -> dict:
    """The timm data config of a run: what its encoder expects (input size, mean/std of the dataset as loaded,
    crop_pct = image size / cache size, bilinear)."""
    return {
        "input_size": (dataset.channels, image_size, image_size),
        "crop_pct": image_size / cache_size,
        "interpolation": "bilinear",
        "mean": tuple(dataset.mean),
        "std": tuple(dataset.std),
    }


def cache_size_of(data_config: Mapping) -> int:
    """The inverse of :func:`make_data_config`: the resolution the run decoded its images at."""
    return round(data_config["input_size"][1] / data_config.get("crop_pct", 1.0))


@dataclass
class RunData:
    """A run's dataset with each split decoded once at the cache size, and its data config.

    Shape:
        train, val, test: (uint8 N x C x S x S images, N labels).
    """

    dataset: MedicalDataset
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    data_config: dict

    @property
    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def eval_transform(self):
        return eval_transform(self.data_config)


def load_run_data(
    cfg: Mapping,
    *,
    manifest: str | Path | None = None,
    data_root: str | Path | None = None,
    data_config: Mapping | None = None,
) -> RunData:
    """Load and decode the data of a run configuration (``config.yaml``'s keys).

    ``manifest`` (default: the configuration's ``split_manifest``) reuses a split instead of drawing one;
    ``data_config`` (a finished run's) fixes the cache size and normalisation instead of deriving them.
    """
    size = (
        cache_size_of(data_config)
        if data_config
        else default_cache_size(cfg["dataset"], cfg["image_size"], cfg.get("cache_size"))
    )
    options = dict(cfg.get("dataset_options") or {})
    if cfg["dataset"] == "synthetic":
        options.setdefault("size", size)  # the tiles are rendered at the cache size
    ds = load_dataset(
        cfg["dataset"],
        data_root or cfg.get("data_root"),
        channels=cfg.get("channels"),
        grouped=cfg.get("grouped_split", False),
        seed=cfg.get("split_seed", 16),
        manifest=manifest or cfg.get("split_manifest"),
        **options,
    )
    cache = _cache_kind(cfg.get("cache", "auto"), ds, size)
    splits = {s: ds.decode(s, size, cache=cache, progress=cache == "disk") for s in ("train", "val", "test")}
    config = dict(data_config) if data_config else make_data_config(ds, cfg["image_size"], size)
    return RunData(ds, splits["train"], splits["val"], splits["test"], config)


def _cache_kind(requested: str, dataset: MedicalDataset, size: int) -> str:
    """``auto``: a memory-mapped disk cache for folder datasets larger than ``DISK_CACHE_ABOVE`` decoded, RAM
    otherwise (in-memory kinds, MedMNIST and synthetic, are in RAM anyway)."""
    if requested != "auto":
        return requested
    decoded = len(dataset.records) * dataset.channels * size * size
    return "disk" if dataset.base is not None and decoded > DISK_CACHE_ABOVE else "memory"


def monitor_config(cfg: Mapping) -> dict | None:
    """The labelled data a run is monitored and probed on: ``eval_dataset`` when given, else the run's own data
    when it has labels, else None (an unlabelled archive: embedding health only)."""
    if cfg.get("eval_dataset"):
        return {
            "dataset": cfg["eval_dataset"],
            "data_root": cfg.get("eval_data_root"),
            "dataset_options": cfg.get("eval_dataset_options") or {},
            "image_size": cfg["image_size"],
            "cache_size": cfg.get("cache_size"),
            "channels": cfg.get("channels"),
            "cache": cfg.get("cache", "auto"),
        }
    return None if get_dataset_spec(cfg["dataset"]).kind == "unlabelled" else dict(cfg)


@dataclass
class Run:
    """A run directory read back: its configuration and, once finished, its summary."""

    path: Path
    config: dict
    summary: dict | None

    @property
    def finished(self) -> bool:
        return self.summary is not None and (self.path / ENCODER_FILE).is_file()

    def load_encoder(self, weights: str | Path | None = None) -> torch.nn.Module:
        """The backbone with the run's final weights, or ``weights`` (an encoder file of the run or a checkpoint's
        ``model.safetensors`` of the whole SSL model, whose ``backbone.*`` tensors are taken)."""
        path = Path(weights) if weights else self.path / ENCODER_FILE
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path} cannot be read as safetensors ({e}); is the run finished?") from e
        if any(k.startswith("backbone.") for k in state):  # an Accelerate checkpoint of the whole SSL model
            state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        convs = [v for v in state.values() if v.ndim == 4]
        in_chans = convs[0].shape[1] if convs else (self.config.get("channels") or 3)
        encoder = create_backbone(
            self.config["backbone"], in_chans=in_chans, image_size=self.config.get("image_size")
        )

        encoder.load_state_dict(state, strict=True)
        return encoder

    def load_data(self, data_root: str | Path | None = None) -> RunData:
        """The run's labelled data (:func:`monitor_config`) with its own split (``split.csv``) and, once finished,
        its own data config. ``ValueError`` for an unlabelled run without an evaluation dataset."""
        data_config = (self.summary or {}).get("data_config")
        labelled = monitor_config(self.config)
        if labelled is None:
            raise ValueError(
                f"{self.path} was pre-trained on an unlabelled folder without --eval-dataset: there are no classes "
                "to probe; evaluate its encoder on a labelled dataset (evaluate --dataset NAME --data-root DIR)"
            )
        own = labelled["dataset"] == self.config["dataset"]
        return load_run_data(
            labelled,
            manifest=self.path / SPLIT_FILE if own else None,
            data_root=data_root,
            data_config=data_config,
        )


def read_run(path: str | Path) -> Run:
    """Read the run directory ``path``; ``ValueError`` saying what is wrong when it is not a readable run."""
    path = Path(path)
    if not is_run(path):
        raise ValueError(f"{path} is not a pre-training run directory (no {CONFIG_FILE})")
    try:
        config = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path / CONFIG_FILE} is not readable YAML ({e})") from e
    if not isinstance(config, dict) or not {"method", "backbone", "dataset"} <= set(config):
        raise ValueError(f"{path / CONFIG_FILE} is not a run configuration (method, backbone, dataset)")
    summary = None
    if (path / SUMMARY_FILE).is_file():
        try:
            summary = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path / SUMMARY_FILE} is not valid JSON ({e})") from e
    return Run(path, config, summary)


def read_run_record(path: str | Path) -> dict:
    """``run.json`` of the run directory ``path``: ``run_id`` (the run's identity, also written into each of its
    checkpoints) and ``init_weights`` (name and sha256 of the file the backbone started from, when one did); ``{}``
    for a run written before the record existed. ``ValueError`` naming the file when it is not a record."""
    from zoo.files import read_json

    file = Path(path) / RUN_RECORD_FILE
    if not file.exists() and not file.is_symlink():
        return {}
    record = read_json(file, RUN_RECORD_LIMIT, "run record")
    run_id, init = (record.get("run_id"), record.get("init_weights")) if isinstance(record, dict) else (0, 0)
    valid_id = isinstance(run_id, str) and len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)
    valid_init = init is None or (
        isinstance(init, dict) and all(isinstance(init.get(k), str) for k in ("file", "sha256"))
    )
    if not (valid_id and valid_init):
        raise ValueError(f"{file} is not a run record of this project (run_id, init_weights)")
    return record
