"""The pre-training configuration: a dataclass read from a YAML recipe and overridden by CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zoo.backbones import check_architecture
from zoo.data import list_datasets
from zoo.data.recipes import RECIPES
from zoo.methods import list_methods

__all__ = ["PretrainConfig", "load_config", "parse_args", "RESUMABLE_CHANGES", "RECIPE_DIR"]

RECIPE_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = RECIPE_DIR / "default.yaml"
# fields that may differ between a checkpoint and the run that resumes it
RESUMABLE_CHANGES = {
    "output_dir",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_with",
    "num_threads",
    "data_root",
    "progress",
}


@dataclass
class PretrainConfig:
    """Everything a pre-training run depends on. ``batch_size`` is the global batch (all processes)."""

    # what to train
    method: str = "simclr"
    backbone: str = "resnet50"
    paper_mode: bool = False
    # data
    dataset: str = "synthetic"
    data_root: str | None = None
    dataset_options: dict = field(default_factory=dict)
    channels: int | None = None
    grouped_split: bool = False
    split_seed: int = 16
    split_manifest: str | None = None
    image_size: int = 224
    cache_size: int | None = None  # decoded cache resolution; None = image_size * 8/7 (256 for 224)
    augment: str = "simclr"
    crop_scale: list[float] | None = None
    # optimisation
    batch_size: int = 64
    epochs: int = 200
    max_steps: int | None = None  # optimizer steps; overrides epochs
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr: float = 0.0
    grad_accum_steps: int = 1
    mixed_precision: str = "auto"
    seed: int = 0
    num_threads: int | None = None
    # monitoring and outputs
    knn_k: int = 200
    knn_metric: str = "cosine"
    eval_every: int = 0  # steps; 0 = at the end of every epoch
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch
    keep_checkpoints: int = 2
    log_with: str = "none"
    output_dir: str | None = None
    export_name: str | None = None  # also export the encoder into ZOO_HOME under this name
    progress: bool = True

    CHOICES: typing.ClassVar[dict] = {
        "optimizer": ("sgd", "adam", "adamw", "lars"),
        "schedule": ("cosine", "constant"),
        "mixed_precision": ("auto", "no", "bf16", "fp16"),
        "knn_metric": ("cosine", "euclidean"),
        "log_with": ("none", "tensorboard"),
        "augment": tuple(RECIPES),
    }

    def validate(self) -> PretrainConfig:
        """Raise ``ValueError`` naming the key and the valid choices for any invalid value."""
        choices = {**self.CHOICES, "method": tuple(list_methods()), "dataset": tuple(list_datasets())}
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ValueError(
                    f"{key}={getattr(self, key)!r} is not valid; choose one of: {', '.join(valid)}"
                )
        check_architecture(self.backbone)
        positive = (
            "batch_size",
            "epochs",
            "lr",
            "image_size",
            "grad_accum_steps",
            "knn_k",
            "keep_checkpoints",
        )
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2: SSL losses need several samples per batch")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be > 0 or null, got {self.max_steps}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or null (the dataset's own), got {self.channels}")
        if self.crop_scale is not None and len(self.crop_scale) != 2:
            raise ValueError(f"crop_scale must be [low, high], got {self.crop_scale}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(PretrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(PretrainConfig)}


def _coerce(key: str, value, annotation):
    """Check ``value`` against the field's annotation (YAML already parsed numbers, booleans, lists)."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if value is None and kind is type(None):
            return None
        if origin is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                continue
        if origin is int and isinstance(value, bool):
            continue
        if origin is not type(None) and isinstance(value, origin):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"{key}: expected {names}, got {value!r}")


def load_config(recipe: str | Path | None = None, overrides: dict | None = None) -> PretrainConfig:
    """Read a YAML recipe (default: the embedded default), apply ``overrides``, validate.

    Unknown keys are an error (never silently ignored).
    """
    path = Path(recipe) if recipe else DEFAULT_RECIPE
    if recipe and not path.is_file() and (RECIPE_DIR / f"{recipe}.yaml").is_file():
        path = RECIPE_DIR / f"{recipe}.yaml"  # a recipe name such as vicreg-breast
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
        raise ValueError(f"recipe {recipe} not found; give a YAML path or one of: {names}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of configuration keys")
    values.update(overrides or {})
    types_ = _field_types()
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ValueError(
            f"unknown configuration keys {unknown} (in {path.name} or the flags); valid keys: "
            f"{', '.join(sorted(types_))}"
        )
    kwargs = {k: _coerce(k, v, types_[k]) for k, v in values.items()}
    return PretrainConfig(**kwargs).validate()


def parse_args(argv: list[str] | None = None) -> tuple[PretrainConfig, argparse.Namespace]:
    """``--config RECIPE``, ``--resume [PATH|latest]``, ``--halt-at-step N`` and one ``--<key> VALUE`` flag per
    configuration field (values parsed as YAML: ``--crop-scale [0.2,1]``, ``--dataset-options {size: 96}``)."""
    parser = argparse.ArgumentParser(
        description="Self-supervised pre-training (run with `accelerate launch train/pretrain.py`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config", help="YAML recipe path or name in train/recipes (default: the embedded default)"
    )
    parser.add_argument(
        "--resume", nargs="?", const="latest", help="continue a run: 'latest' or a checkpoint path"
    )
    parser.add_argument(
        "--halt-at-step", type=int, help="stop (with a checkpoint) after this step, as a crash would"
    )
    for name in _field_types():
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, type=yaml.safe_load, default=argparse.SUPPRESS
        )
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in _field_types()}
    return load_config(args.config, overrides), args
