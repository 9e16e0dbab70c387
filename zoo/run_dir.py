"""The run directory of a pre-training run, defined once: its file names and reading a run back.

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
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zoo.backbones import create_backbone
from zoo.data.run_data import RunData, load_run_data
from zoo.files import read_yaml
from zoo.run_config import RunConfig, from_stored
from zoo.wrapped import unwrapped_keys

__all__ = [
    "RUN_CONFIG_FILE",
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
    "is_run",
    "is_run_file",
    "read_run",
    "read_run_record",
]

RUN_CONFIG_FILE = "config.yaml"
MAX_RUN_CONFIG_BYTES = 256 * 1024  # a resolved configuration is ~1.5 KB
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

# every name a run directory may hold: a folder with anything else in it was not made by a run
RUN_FILES = frozenset(
    {
        RUN_CONFIG_FILE,
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
    return (Path(path) / RUN_CONFIG_FILE).is_file()


@dataclass
class Run:
    """A run directory read back: its configuration and, once finished, its summary."""

    path: Path
    config: RunConfig
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
        state = unwrapped_keys(state)  # a checkpoint of a DDP / compiled model by an older version
        if any(k.startswith("backbone.") for k in state):  # an Accelerate checkpoint of the whole SSL model
            state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        convs = [v for v in state.values() if v.ndim == 4]
        in_chans = convs[0].shape[1] if convs else (self.config.channels or 3)
        encoder = create_backbone(self.config.backbone, in_chans=in_chans, image_size=self.config.image_size)

        encoder.load_state_dict(state, strict=True)
        return encoder

    def load_data(self, data_root: str | Path | None = None) -> RunData:
        """The run's labelled data (``RunConfig.labelled_data``) with its own split (``split.csv``) and, once
        finished, its own data config. ``ValueError`` for an unlabelled run without an evaluation dataset."""
        data_config = (self.summary or {}).get("data_config")
        labelled = self.config.labelled_data()
        if labelled is None:
            raise ValueError(
                f"{self.path} was pre-trained on an unlabelled folder without --eval-dataset: there are no classes "
                "to probe; evaluate its encoder on a labelled dataset (evaluate --dataset NAME --data-root DIR)"
            )
        own = labelled.dataset == self.config.dataset
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
        raise ValueError(f"{path} is not a pre-training run directory (no {RUN_CONFIG_FILE})")
    stored = read_yaml(path / RUN_CONFIG_FILE, MAX_RUN_CONFIG_BYTES, "run configuration")
    if not isinstance(stored, dict) or not {"method", "backbone", "dataset"} <= set(stored):
        raise ValueError(f"{path / RUN_CONFIG_FILE} is not a run configuration (method, backbone, dataset)")
    config = from_stored(stored, str(path / RUN_CONFIG_FILE))
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
