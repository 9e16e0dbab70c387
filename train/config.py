"""The pre-training configuration: one dataclass, read from a YAML recipe and overridden by CLI flags.

A *recipe* is a YAML file of configuration keys (one shipped in ``recipes/`` beside this module, or any path); the *resolved
configuration* (recipe + flags) is what a run stores as its ``config.yaml``. Every field's help text lives
next to it, here, and is what ``medssl-pretrain --help`` prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import math
import os
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from medssl_zoo.train.tracking import TRACKERS, parse_trackers
from zoo.backbones import check_architecture
from zoo.data import get_dataset_spec, list_datasets
from zoo.data.augment_policies import AUGMENT_POLICIES
from zoo.files import load_yaml, read_yaml
from zoo.methods import list_methods
from zoo.registry import is_model_name
from zoo.run_dir import is_run, read_run

__all__ = ["PretrainConfig", "load_config", "parse_args", "RESUMABLE_CHANGES", "RECIPE_DIR", "GROUPS"]

log = logging.getLogger("train")
RECIPE_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = RECIPE_DIR / "default.yaml"
GROUPS = {
    "method": "what to train",
    "data": "data and augmentation",
    "optimisation": "optimisation",
    "run": "monitoring, checkpoints and outputs",
}
# fields that may differ between a checkpoint and the run that resumes it
RESUMABLE_CHANGES = {
    "output_dir",
    "cache",
    "eval_data_root",
    "compile",
    "loader_workers",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_with",
    "log_every",
    "num_threads",
    "data_root",
    "progress",
    "export_name",
}


def option(default, group: str, help: str, factory=None):
    """A configuration field with its help text and ``--help`` group (``GROUPS``)."""
    metadata = {"group": group, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class PretrainConfig:
    """Everything a pre-training run depends on. ``batch_size`` is the global batch (all processes)."""

    method: str = option("simclr", "method", "SSL method")
    backbone: str = option("resnet50", "method", "any timm architecture (timm.list_models())")
    init: str = option(
        "random",
        "method",
        "initial backbone weights: random, imagenet (timm's pretrained weights), or a zoo name / export folder "
        "to continue from",
    )
    init_weights: str | None = option(
        None, "method", "a safetensors file of backbone weights for --init imagenet offline"
    )
    loss_options: dict = option(
        None, "method", "override the loss's hyper-parameters, e.g. {temperature: 1.0}", factory=dict
    )
    ema_momentum: float | None = option(
        None, "method", "teacher-student methods: the EMA's base momentum, cosine to 1 (null: the method's)"
    )
    paper_mode: bool = option(
        False,
        "method",
        "reproduce the original study's code exactly, deviations included (one-sided DCLW, VICReg's summed "
        "variance term, SimSiam without predictor, crop scale (0.08, 0.1))",
    )
    dataset: str = option("synthetic", "data", "registered dataset")
    data_root: str | None = option(None, "data", "the unzipped download (wrapper folders are fine)")
    dataset_options: dict = option(
        None, "data", "dataset-specific options, e.g. {num_images: 400} or {flag: pathmnist}", factory=dict
    )
    channels: int | None = option(
        None, "data", "1 or 3 to override the dataset's own channels (null: its own)"
    )
    grouped_split: bool = option(
        False, "data", "keep each slide / source image / patient on one side of every split"
    )
    split_seed: int = option(16, "data", "seed of the train/val/test split (16 as in the study)")
    split_manifest: str | None = option(None, "data", "a split.csv to reuse instead of drawing a split")
    image_size: int = option(224, "data", "input size of the encoder (px)")
    cache_size: int | None = option(
        None, "data", "size images are decoded at, once (null: image_size x 8/7, 256 for 224)"
    )
    cache: str = option(
        "auto",
        "data",
        "where decoded images live: memory, disk (a memory-mapped file in $ZOO_CACHE, reused by later runs and "
        "every process), auto (disk for folder datasets over 2 GiB decoded)",
    )
    eval_dataset: str | None = option(
        None, "data", "a labelled dataset to monitor (kNN) and probe an unlabelled 'folder' run on"
    )
    eval_data_root: str | None = option(None, "data", "the eval dataset's folder")
    eval_dataset_options: dict = option(None, "data", "the eval dataset's options", factory=dict)
    augment: str = option("simclr", "data", "augmentation policy")

    local_crops: int = option(
        0, "data", "multi-crop (DINO): local crops per image besides the two global ones (at most 6)"
    )
    local_size: int = option(96, "data", "multi-crop: the local crops' size (px)")
    local_crop_scale: list[float] = option(
        None, "data", "multi-crop: the local crops' area range [low, high]", factory=lambda: [0.05, 0.4]
    )
    crop_scale: list[float] | None = option(
        None, "data", "RandomResizedCrop area range [low, high] (null: the policy's)"
    )
    batch_size: int = option(64, "optimisation", "global batch size (all processes together)")
    epochs: int = option(200, "optimisation", "passes over the train split")
    max_steps: int | None = option(None, "optimisation", "optimizer steps; overrides epochs")
    optimizer: str = option("sgd", "optimisation", "timm optimizer; norms and biases get no weight decay")
    lr: float = option(0.01, "optimisation", "peak learning rate")
    momentum: float = option(0.9, "optimisation", "SGD / LARS momentum, in [0, 1)")
    weight_decay: float = option(0.0, "optimisation", "weight decay (not applied to norms and biases)")
    schedule: str = option("cosine", "optimisation", "learning-rate schedule after the warmup")
    warmup_steps: int = option(0, "optimisation", "linear warmup from lr/100, in optimizer steps")
    clip_grad: float | None = option(
        None, "optimisation", "clip the gradients' global norm (null: no clipping)"
    )
    compile: bool = option(
        False,
        "optimisation",
        "torch.compile the model (GPUs; measure with bench/pretrain_throughput.py first)",
    )
    loader_workers: int = option(
        0,
        "optimisation",
        "loader processes gathering batches (0: in the training process; GPUs may want 2-4)",
    )

    min_lr: float = option(0.0, "optimisation", "final learning rate of the cosine schedule")
    grad_accum_steps: int = option(1, "optimisation", "batches accumulated per optimizer step")
    mixed_precision: str = option(
        "auto", "optimisation", "auto: bf16 where this machine runs it fast (measured), else fp32"
    )
    seed: int = option(0, "optimisation", "seed of the initialisation, batch order and augmentations")
    num_threads: int | None = option(
        None, "optimisation", "CPU threads per process (null: the cores divided among the processes)"
    )
    knn_k: int = option(200, "run", "neighbours of the kNN monitor and the final kNN")
    knn_metric: str = option("cosine", "run", "kNN distance (euclidean: the study's)")
    eval_every: int = option(0, "run", "kNN on val every N steps (0: at the end of every epoch)")
    checkpoint_every: int = option(0, "run", "checkpoint every N steps (0: at the end of every epoch)")
    keep_checkpoints: int = option(2, "run", "newest checkpoints kept")
    log_with: str = option(
        "none",
        "run",
        f"experiment trackers, comma-separated: none or any of {', '.join(TRACKERS)} (through Accelerate; "
        "each needs its package)",
    )
    log_every: int = option(
        10, "run", "steps between loss-health checks and metric writes (every step is still recorded)"
    )
    output_dir: str | None = option(None, "run", "run directory (null: runs/<method>-<dataset>-<time>)")
    export_name: str | None = option(None, "run", "also export the encoder into $ZOO_HOME under this name")
    progress: bool = option(True, "run", "show a progress bar")

    CHOICES: typing.ClassVar[dict] = {
        "optimizer": ("sgd", "adam", "adamw", "lars"),
        "schedule": ("cosine", "constant"),
        "mixed_precision": ("auto", "no", "bf16", "fp16"),
        "knn_metric": ("cosine", "euclidean"),
        "augment": tuple(AUGMENT_POLICIES),
        "cache": ("auto", "memory", "disk"),
    }
    POSITIVE: typing.ClassVar[tuple] = (
        "batch_size",
        "epochs",
        "lr",
        "image_size",
        "grad_accum_steps",
        "knn_k",
        "keep_checkpoints",
        "log_every",
    )
    NON_NEGATIVE: typing.ClassVar[tuple] = (
        "momentum",
        "weight_decay",
        "warmup_steps",
        "local_crops",
        "loader_workers",
        "min_lr",
        "eval_every",
        "checkpoint_every",
    )
    POSITIVE_OR_NULL: typing.ClassVar[tuple] = ("max_steps", "num_threads", "cache_size", "clip_grad")

    @classmethod
    def choices(cls) -> dict[str, tuple]:
        return {**cls.CHOICES, "method": tuple(list_methods()), "dataset": tuple(list_datasets())}

    def validate(self) -> PretrainConfig:
        """Raise ``ValueError`` naming the key (and the valid choices) for any invalid value."""
        for key, valid in self.choices().items():
            if getattr(self, key) not in valid:
                raise ValueError(
                    f"{key}={getattr(self, key)!r} is not valid; choose one of: {', '.join(valid)}"
                )
        check_architecture(self.backbone)
        parse_trackers(self.log_with)
        for key in self.POSITIVE:
            if not getattr(self, key) > 0 or not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in self.NON_NEGATIVE:
            if not getattr(self, key) >= 0 or not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in self.POSITIVE_OR_NULL:
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0 or null, got {getattr(self, key)}")
        self._check_ranges()
        return self

    def _check_ranges(self) -> None:
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2: SSL losses need several samples per batch")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or null (the dataset's own), got {self.channels}")
        if self.cache_size is not None and self.cache_size < self.image_size:
            raise ValueError(f"cache_size ({self.cache_size}) must be >= image_size ({self.image_size})")
        if self.export_name is not None and not is_model_name(self.export_name):
            raise ValueError(
                f"export_name must be a plain model name (letters, digits, . _ -), not a path: {self.export_name!r}; "
                "exports go into $ZOO_HOME/<export_name> (use `medssl-export RUN_DIR OUT_DIR` for another folder)"
            )
        self._check_method_options()
        if self.eval_dataset is not None and (
            self.eval_dataset not in list_datasets()
            or get_dataset_spec(self.eval_dataset).kind == "unlabelled"
        ):
            labelled = [n for n in list_datasets() if get_dataset_spec(n).kind != "unlabelled"]
            raise ValueError(
                f"eval_dataset={self.eval_dataset!r} must be a labelled dataset: {', '.join(labelled)}"
            )

    def _check_method_options(self) -> None:
        from zoo.data.batch_augment import VIEWS_PER_SAMPLE
        from zoo.methods import get_method_spec

        spec = get_method_spec(self.method)
        if self.local_crops and not spec.model.multi_crop:
            raise ValueError(f"local_crops: {self.method} takes two views; multi-crop is for: dino")
        if self.local_crops > VIEWS_PER_SAMPLE - 2:
            raise ValueError(f"local_crops must be at most {VIEWS_PER_SAMPLE - 2}, got {self.local_crops}")
        if self.local_crops and not 8 <= self.local_size <= self.image_size:
            raise ValueError(
                f"local_size must be in 8..image_size ({self.image_size}), got {self.local_size}: local crops are "
                f"smaller than the global views (DINO uses 96 px with 224 px views); e.g. --local-size "
                f"{max(8, self.image_size * 3 // 7)} at --image-size {self.image_size}, or a larger --image-size"
            )
        unknown = sorted(set(self.loss_options) - set(spec.loss_parameters()))
        if unknown:
            valid = ", ".join(spec.loss_parameters()) or "none"
            raise ValueError(
                f"loss_options {unknown} are not settings of {spec.loss.__name__}; valid: {valid}"
            )
        if self.ema_momentum is not None and not (
            "momentum" in spec.model_kwargs and 0 <= self.ema_momentum < 1
        ):
            raise ValueError(
                f"ema_momentum must be in [0, 1) and is for teacher-student methods, got {self.ema_momentum}"
            )
        if self.init_weights is not None and self.init != "imagenet":
            raise ValueError("init_weights is the offline copy of --init imagenet: set init: imagenet too")
        for key in ("crop_scale", "local_crop_scale"):
            scale = getattr(self, key)
            if scale is not None and not (
                len(scale) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)
                and 0 < scale[0] <= scale[1] <= 1
            ):
                raise ValueError(
                    f"{key} must be two numbers [low, high] with 0 < low <= high <= 1, got {scale}"
                )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_DEFAULTS = {
    f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
    for f in dataclasses.fields(PretrainConfig)
}


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
    hint = (
        " (YAML reads unquoted no/yes/on/off as booleans: quote the value, e.g. 'no')"
        if isinstance(value, bool)
        else ""
    )
    raise ValueError(f"{key}: expected {names}, got {value!r}{hint}")


MAX_RECIPE_BYTES = 256 * 1024  # the longest recipe here is ~1 KB; a 20 MB one took 11 s to parse
PATH_KEYS = ("data_root", "eval_data_root", "split_manifest", "init_weights", "output_dir")


MAX_EXTENDS = 4  # how deep recipes may extend one another


def _recipe_path(recipe: str | Path, beside: Path | None = None) -> Path:
    """A recipe file: a path, a name beside the recipe that extends it, or the name of a shipped recipe."""
    path = Path(recipe).expanduser()
    for candidate in ([beside / f"{recipe}.yaml"] if beside else []) + [RECIPE_DIR / f"{recipe}.yaml"]:
        if not path.exists() and candidate.is_file():
            path = candidate  # a recipe name such as vicreg-breast
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
        raise ValueError(f"recipe {recipe} not found; give a YAML path or one of: {names}")
    return path


def _read_recipe(recipe: str | Path | None, chain: tuple[Path, ...] = ()) -> tuple[dict, Path]:
    """A recipe's values, with what it ``extends`` (another recipe, e.g. the study's base) underneath."""
    path = _recipe_path(recipe, chain[-1].parent if chain else None) if recipe else DEFAULT_RECIPE
    values = read_yaml(path, MAX_RECIPE_BYTES, "recipe") or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of configuration keys")
    parent = values.pop("extends", None)
    if parent is None:
        return values, path
    if path in chain or len(chain) >= MAX_EXTENDS:
        raise ValueError(f"{path}: 'extends' goes round in a circle or deeper than {MAX_EXTENDS} recipes")
    if not isinstance(parent, str):
        raise ValueError(f"{path}: extends must name one recipe, got {parent!r}")
    base, _ = _read_recipe(parent, (*chain, path))
    return {**base, **values}, path


def uses_default_recipe(recipe: str | Path | None, overrides: dict) -> bool:
    """Whether a run starts from the embedded default recipe: only without ``--recipe`` and for the synthetic
    tiles it was written for. A run that names another dataset starts from the built-in defaults (the study's
    setting), never from the synthetic demo's sizes, options and export name."""
    return recipe is None and overrides.get("dataset", "synthetic") == "synthetic"


def _starting_values(recipe, overrides: dict, base: dict | None) -> tuple[dict, str]:
    """(values before the flags, where they come from) — see :func:`load_config`."""
    if base is not None and recipe is None:
        return dict(base), "the run's config.yaml"
    if recipe is None and not uses_default_recipe(recipe, overrides):
        return {}, "the built-in defaults"
    values, path = _read_recipe(recipe)
    if values.get("export_name") and any(
        k in overrides and overrides[k] != values.get(k, _DEFAULTS[k]) for k in ("method", "dataset")
    ):
        log.info(
            "not exporting as %s (recipe %s): this run trains another method or dataset; pass --export-name NAME "
            "to export it",
            values["export_name"],
            path.name,
        )
        values = {k: v for k, v in values.items() if k != "export_name"}
    return values, path.name


def _absolute_paths(values: dict) -> dict:
    """Paths stored absolute (a run resumed or evaluated from another directory finds them); a local folder given
    as ``init`` too."""
    out = dict(values)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = os.path.abspath(os.path.expanduser(out[key]))
    if isinstance(out.get("init"), str) and Path(out["init"]).expanduser().is_dir():
        out["init"] = os.path.abspath(os.path.expanduser(out["init"]))
    return out


def load_config(
    recipe: str | Path | None = None, overrides: dict | None = None, base: dict | None = None
) -> PretrainConfig:
    """Read a YAML recipe, or start from ``base`` (a run's stored configuration), apply ``overrides``, validate.

    Without a recipe, the embedded default recipe is the start for the synthetic tiles, the built-in defaults for
    any other dataset (:func:`uses_default_recipe`); a recipe's ``export_name`` is dropped when the flags change its
    method or dataset (an export name is never reused by a run it was not written for). Unknown keys are an error
    (never silently ignored); relative paths are stored absolute.
    """
    overrides = dict(overrides or {})
    values, source = _starting_values(recipe, overrides, base)
    values.update(overrides)
    types_ = _field_types()
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ValueError(
            f"unknown configuration keys {unknown} (in {source} or the flags); valid keys: "
            f"{', '.join(sorted(types_))}"
        )
    kwargs = {k: _coerce(k, v, types_[k]) for k, v in values.items()}
    return PretrainConfig(**_absolute_paths(kwargs)).validate()


def _text_value(text: str):
    """A flag's value for a text field: taken as written (``--mixed-precision no`` is the text "no", not YAML's
    False); ``null`` is None."""
    return None if text in ("null", "~") else text


def _yaml_value(text: str):
    """A flag's value, parsed as YAML (numbers, booleans, lists, mappings, null; no aliases)."""
    try:
        return load_yaml(text, f"the value {text[:60]!r}")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


# flag names people type for another tool's key → this project's
SYNONYMS = {
    "learning-rate": "lr",
    "base-lr": "lr",
    "steps": "max-steps",
    "iterations": "max-steps",
    "model": "backbone",
    "arch": "backbone",
    "architecture": "backbone",
    "data": "data-root",
    "data-dir": "data-root",
    "dataset-root": "data-root",
    "output": "output-dir",
    "out-dir": "output-dir",
    "batch": "batch-size",
    "bs": "batch-size",
    "wd": "weight-decay",
    "img-size": "image-size",
    "input-size": "image-size",
    "workers": "loader-workers",
    "threads": "num-threads",
}


DESCRIPTION = "\n\n".join(
    textwrap.fill(paragraph, 100)
    for paragraph in (
        "Self-supervised pre-training. Run it as `medssl-pretrain` (one process), `accelerate launch -m "
        "medssl_zoo.train.pretrain` (several processes or GPUs), or in a checkout `accelerate launch "
        "train/pretrain.py`.",
        "Where values come from: flags override a recipe (--recipe), which overrides the built-in defaults below "
        "(the study's setting). Without --recipe, a run on the synthetic tiles starts from the embedded default "
        "recipe (shown as 'default recipe' below: a 2-minute CPU demo that exports simclr-synthetic); a run on any "
        "other --dataset starts from the built-in defaults.",
        "Values are YAML: --crop-scale [0.2,1], --dataset-options '{num_images: 400}', --max-steps null. "
        "config.yaml's spelling of a key (--max_steps) works too.",
    )
)


class SuggestingParser(argparse.ArgumentParser):
    """argparse that accepts config.yaml's spelling of a key (``--max_steps``) and, for an unknown flag, names the
    closest valid ones (``--learning-rate`` → ``--lr``)."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(args if args is not None else sys.argv[1:])
        known = {o for a in self._actions for o in a.option_strings}
        args = [_dashed(a) if _dashed(a).split("=", 1)[0] in known else a for a in args]
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            known = sorted({o for a in self._actions for o in a.option_strings if o.startswith("--")})
            hints = [_suggest(a, known) for a in message.split(":", 1)[1].split() if a.startswith("-")]
            message += "".join(f"\n  {h}" for h in hints if h)
        super().error(message + f"\n(`{self.prog} --help` lists every option)")


def _dashed(arg: str) -> str:
    """``--max_steps`` → ``--max-steps`` (``--key=value`` forms too); other arguments unchanged."""
    if not arg.startswith("--"):
        return arg
    flag, eq, value = arg.partition("=")
    return flag.replace("_", "-") + eq + value


def _suggest(arg: str, known: list[str]) -> str | None:
    flag = _dashed(arg).split("=", 1)[0]
    synonym = SYNONYMS.get(flag.lstrip("-"))
    close = [f"--{synonym}"] if synonym else difflib.get_close_matches(flag, known, n=3, cutoff=0.6)
    return f"{arg}: did you mean {' or '.join(close)}?" if close else None


def _default_recipe_values() -> dict:
    try:
        return _read_recipe(None)[0]
    except ValueError:
        return {}


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(
        prog="medssl-pretrain",
        usage="%(prog)s [--recipe RECIPE] [--resume [latest|CHECKPOINT]] [--halt-at-step N] [--KEY VALUE ...]",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--recipe",
        "--config",
        dest="recipe",
        help="a YAML recipe file, or the name of a recipe shipped with the package (e.g. vicreg-breast, "
        "simclr-crc-paper; an unknown name lists them all); with --resume and no recipe: the run's own config.yaml",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="latest|CHECKPOINT",
        help="continue the run in --output-dir: from its newest intact checkpoint (latest) or a given "
        "checkpoints/step_* folder; a run without checkpoints starts afresh",
    )
    parser.add_argument(
        "--halt-at-step",
        type=int,
        metavar="N",
        help="stop after step N with a checkpoint (for time-limited job slots); continue with --resume",
    )
    groups = {name: parser.add_argument_group(title) for name, title in GROUPS.items()}
    choices = PretrainConfig.choices()
    types_ = _field_types()
    recipe = _default_recipe_values()
    for f in dataclasses.fields(PretrainConfig):
        is_text = str in (typing.get_args(types_[f.name]) or (types_[f.name],))
        valid = f" One of: {', '.join(choices[f.name])}." if f.name in choices else ""
        default = f"default: {_DEFAULTS[f.name]}"
        if f.name in recipe and recipe[f.name] != _DEFAULTS[f.name]:
            default += f"; default recipe: {recipe[f.name]}"
        groups[f.metadata["group"]].add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=_text_value if is_text else _yaml_value,
            default=argparse.SUPPRESS,
            metavar=f.name.upper(),
            help=f"{f.metadata['help']}.{valid} ({default})",
        )
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[PretrainConfig, argparse.Namespace]:
    """``--recipe RECIPE``, ``--resume [PATH|latest]``, ``--halt-at-step N`` and one ``--<key> VALUE`` flag per
    configuration field."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in _field_types()}
    base = None
    output_dir = overrides.get("output_dir")
    if args.resume is not None and args.recipe is None and output_dir and is_run(output_dir):
        base = read_run(output_dir).config  # continue the run as it was configured
        _check_stored_paths(base, overrides, Path(output_dir))
    return load_config(args.recipe, overrides, base), args


def _check_stored_paths(stored: dict, overrides: dict, run_dir: Path) -> None:
    """A dataset folder recorded in a run's config.yaml that is gone (moved, or relative to another directory):
    say where the path came from and how to override it."""
    for key, flag in (("data_root", "--data-root"), ("eval_data_root", "--eval-data-root")):
        root = stored.get(key)
        if root and key not in overrides and not Path(root).exists():
            raise ValueError(
                f"{key} {root} recorded in {run_dir / 'config.yaml'} does not exist (moved, or relative to another "
                f"directory); pass {flag} DIR to say where it is now"
            )
