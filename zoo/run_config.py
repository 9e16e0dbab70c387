"""A pre-training run's configuration, defined once: the typed schema of a run directory's ``config.yaml``.

Written by ``train/pretrain.py`` (from a recipe and flags, see ``train/config.py``); read back as a typed
:class:`RunConfig` by everything that reads a run (resume, evaluation, export). Declared with pydantic: types are
checked strictly (YAML already parsed numbers, booleans, lists and mappings), ranges by field constraints, choices
and cross-field rules by validators; every error is one line naming the key and what to do (:func:`build`). Each
field carries its help text and ``--help`` group, which is what ``medssl-pretrain --help`` prints.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from zoo.backbones import check_backbone
from zoo.data import get_dataset_spec, list_datasets
from zoo.data.augment_policies import AUGMENT_POLICIES
from zoo.data.run_data import DEFAULT_CACHE, DataRequest
from zoo.data.splits import DEFAULT_SPLIT_SEED
from zoo.methods import get_method_spec, list_methods
from zoo.registry import is_model_name

__all__ = ["GROUPS", "RunConfig", "build", "from_stored"]

log = logging.getLogger(__name__)
GROUPS = {
    "method": "what to train",
    "data": "data and augmentation",
    "optimisation": "optimisation",
    "run": "monitoring, checkpoints and outputs",
}
MAX_LOCAL_CROPS = 6  # multi-crop views per sample besides the two global ones (zoo.data.batch_augment)


def _number(value):
    """YAML 1.1 reads ``1e-3`` as text: accept a number written that way."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Float = Annotated[float, BeforeValidator(_number)]
Scale = tuple[Float, Float]


def option(default, group: str, help: str, **constraints) -> Any:
    """A field with its help text and ``--help`` group (``GROUPS``); ``constraints`` as pydantic's (gt, ge, lt)."""
    return Field(default, description=help, json_schema_extra={"group": group}, **constraints)


class RunConfig(BaseModel):
    """Everything a pre-training run depends on. ``batch_size`` is the global batch (all processes)."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True)

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
    loss_options: dict = option({}, "method", "override the loss's hyper-parameters, e.g. {temperature: 1.0}")
    ema_momentum: Float | None = option(
        None,
        "method",
        "teacher-student methods: the EMA's base momentum, cosine to 1 (null: the method's)",
        ge=0,
        lt=1,
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
        {}, "data", "dataset-specific options, e.g. {num_images: 400} or {flag: pathmnist}"
    )
    channels: Literal[1, 3] | None = option(
        None, "data", "1 or 3 to override the dataset's own channels (null: its own)"
    )
    grouped_split: bool = option(
        False, "data", "keep each slide / source image / patient on one side of every split"
    )
    split_seed: int = option(
        DEFAULT_SPLIT_SEED, "data", "seed of the train/val/test split (16 as in the study)"
    )
    split_manifest: str | None = option(None, "data", "a split.csv to reuse instead of drawing a split")
    image_size: int = option(224, "data", "input size of the encoder (px)", gt=0)
    cache_size: int | None = option(
        None, "data", "size images are decoded at, once (null: image_size x 8/7, 256 for 224)", gt=0
    )
    cache: Literal["auto", "memory", "disk"] = option(
        DEFAULT_CACHE,
        "data",
        "where decoded images live: memory, disk (a memory-mapped file in $ZOO_CACHE, reused by later runs and "
        "every process), auto (disk for folder datasets over 2 GiB decoded)",
    )
    eval_dataset: str | None = option(
        None, "data", "a labelled dataset to monitor (kNN) and probe an unlabelled 'folder' run on"
    )
    eval_data_root: str | None = option(None, "data", "the eval dataset's folder")
    eval_dataset_options: dict = option({}, "data", "the eval dataset's options")
    augment: str = option("simclr", "data", "augmentation policy")
    local_crops: int = option(
        0,
        "data",
        f"multi-crop (DINO): local crops per image besides the two global ones (at most {MAX_LOCAL_CROPS})",
        ge=0,
        le=MAX_LOCAL_CROPS,
    )
    local_size: int = option(96, "data", "multi-crop: the local crops' size (px)")
    local_crop_scale: Scale = option(
        (0.05, 0.4), "data", "multi-crop: the local crops' area range [low, high]", strict=False
    )
    crop_scale: Scale | None = option(
        None, "data", "RandomResizedCrop area range [low, high] (null: the policy's)", strict=False
    )
    batch_size: int = option(64, "optimisation", "global batch size (all processes together)", ge=2)
    epochs: int = option(200, "optimisation", "passes over the train split", gt=0)
    max_steps: int | None = option(None, "optimisation", "optimizer steps; overrides epochs", gt=0)
    optimizer: Literal["sgd", "adam", "adamw", "lars"] = option(
        "sgd", "optimisation", "timm optimizer; norms and biases get no weight decay"
    )
    lr: Float = option(0.01, "optimisation", "peak learning rate", gt=0, allow_inf_nan=False)
    momentum: Float = option(0.9, "optimisation", "SGD / LARS momentum, in [0, 1)", ge=0, lt=1)
    weight_decay: Float = option(
        0.0,
        "optimisation",
        "weight decay (not applied to norms and biases)",
        ge=0,
        allow_inf_nan=False,
    )
    schedule: Literal["cosine", "constant"] = option(
        "cosine", "optimisation", "learning-rate schedule after the warmup"
    )
    warmup_steps: int = option(0, "optimisation", "linear warmup from lr/100, in optimizer steps", ge=0)
    clip_grad: Float | None = option(
        None, "optimisation", "clip the gradients' global norm (null: no clipping)", gt=0
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
        ge=0,
    )
    input_overlap: Literal["auto", "thread", "none"] = option(
        "auto",
        "optimisation",
        "CPU runs: make the next batch's views in a producer thread while the step runs (thread), in order "
        "(none), or whichever the run's first batches time faster (auto); GPUs always use a side CUDA stream",
    )
    min_lr: Float = option(
        0.0, "optimisation", "final learning rate of the cosine schedule", ge=0, allow_inf_nan=False
    )
    grad_accum_steps: int = option(1, "optimisation", "batches accumulated per optimizer step", gt=0)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = option(
        "auto", "optimisation", "auto: bf16 where this machine runs it fast (measured), else fp32"
    )
    seed: int = option(0, "optimisation", "seed of the initialisation, batch order and augmentations")
    num_threads: int | None = option(
        None, "optimisation", "CPU threads per process (null: the cores divided among the processes)", gt=0
    )
    knn_k: int = option(200, "run", "neighbours of the kNN monitor and the final kNN", gt=0)
    knn_metric: Literal["cosine", "euclidean"] = option(
        "cosine", "run", "kNN distance (euclidean: the study's)"
    )
    eval_every: int = option(0, "run", "kNN on val every N steps (0: at the end of every epoch)", ge=0)
    checkpoint_every: int = option(0, "run", "checkpoint every N steps (0: at the end of every epoch)", ge=0)
    keep_checkpoints: int = option(2, "run", "newest checkpoints kept", gt=0)
    log_with: str = option(
        "none",
        "run",
        "experiment trackers, comma-separated, through Accelerate (each needs its package); none: no tracker",
    )
    log_every: int = option(
        10, "run", "steps between loss-health checks and metric writes (every step is still recorded)", gt=0
    )
    output_dir: str | None = option(None, "run", "run directory (null: runs/<method>-<dataset>-<time>)")
    export_name: str | None = option(None, "run", "also export the encoder into $ZOO_HOME under this name")
    progress: bool = option(True, "run", "show a progress bar")

    DYNAMIC_CHOICES: ClassVar[dict] = {
        "method": list_methods,
        "dataset": list_datasets,
        "augment": lambda: list(AUGMENT_POLICIES),
    }

    @classmethod
    def choices(cls) -> dict[str, tuple]:
        """Every field with a fixed set of valid values, and those values (for messages and ``--help``)."""
        fixed = {name: _literal_values(field.annotation) for name, field in cls.model_fields.items()}
        dynamic = {name: tuple(values()) for name, values in cls.DYNAMIC_CHOICES.items()}
        return {**{k: v for k, v in fixed.items() if v}, **dynamic}

    @classmethod
    def defaults(cls) -> dict:
        return {
            name: field.get_default(call_default_factory=True) for name, field in cls.model_fields.items()
        }

    def to_dict(self) -> dict:
        """The configuration as ``config.yaml`` stores it (lists, not tuples)."""
        return self.model_dump(mode="json")

    @property
    def length(self) -> str:
        """How long the run trains, as a card says it: "150 steps" or "200 epochs"."""
        return f"{self.max_steps} steps" if self.max_steps else f"{self.epochs} epochs"

    def data(self) -> DataRequest:
        """The data the run pre-trains on."""
        return DataRequest(
            dataset=self.dataset,
            image_size=self.image_size,
            data_root=self.data_root,
            dataset_options=self.dataset_options,
            channels=self.channels,
            grouped_split=self.grouped_split,
            split_seed=self.split_seed,
            split_manifest=self.split_manifest,
            cache_size=self.cache_size,
            cache=self.cache,
        )

    def labelled_data(self) -> DataRequest | None:
        """The labelled data the run is monitored and probed on: ``eval_dataset`` when given (at the run's sizes),
        else the run's own data when it has labels, else None (an unlabelled archive: embedding health only)."""
        if self.eval_dataset:
            return DataRequest(
                dataset=self.eval_dataset,
                image_size=self.image_size,
                data_root=self.eval_data_root,
                dataset_options=self.eval_dataset_options,
                channels=self.channels,
                cache_size=self.cache_size,
                cache=self.cache,
            )
        return None if get_dataset_spec(self.dataset).kind == "unlabelled" else self.data()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        for key, values in self.DYNAMIC_CHOICES.items():
            if getattr(self, key) not in values():
                raise ValueError(
                    f"{key}={getattr(self, key)!r} is not valid; choose one of: {', '.join(values())}"
                )
        check_backbone(self.backbone)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.cache_size is not None and self.cache_size < self.image_size:
            raise ValueError(f"cache_size ({self.cache_size}) must be >= image_size ({self.image_size})")
        if self.export_name is not None and not is_model_name(self.export_name):
            raise ValueError(
                f"export_name must be a plain model name (letters, digits, . _ -), not a path: {self.export_name!r}; "
                "exports go into $ZOO_HOME/<export_name> (use `medssl-export RUN_DIR OUT_DIR` for another folder)"
            )
        for key in ("crop_scale", "local_crop_scale"):
            scale = getattr(self, key)
            if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
                raise ValueError(
                    f"{key} must be two numbers [low, high] with 0 < low <= high <= 1, got {list(scale)}"
                )
        self._check_method_options()
        self._check_eval_dataset()
        return self

    def _check_method_options(self) -> None:
        spec = get_method_spec(self.method)
        if self.local_crops and not spec.model.multi_crop:
            raise ValueError(f"local_crops: {self.method} takes two views; multi-crop is for: dino")
        if self.local_crops and not 8 <= self.local_size <= self.image_size:
            raise ValueError(
                f"local_size must be in 8..image_size ({self.image_size}), got {self.local_size}: local crops are "
                f"smaller than the global views (DINO uses 96 px with 224 px views); e.g. --local-size "
                f"{max(8, self.image_size * 3 // 7)} at --image-size {self.image_size}, or a larger --image-size"
            )
        spec.check_loss_options(self.loss_options)
        if self.ema_momentum is not None and "momentum" not in spec.model_kwargs:
            raise ValueError(
                f"ema_momentum is for teacher-student methods (byol, mocov3, dino), not {self.method}"
            )
        if self.init_weights is not None and self.init != "imagenet":
            raise ValueError("init_weights is the offline copy of --init imagenet: set init: imagenet too")

    def _check_eval_dataset(self) -> None:
        if self.eval_dataset is None:
            return
        labelled = [n for n in list_datasets() if get_dataset_spec(n).kind != "unlabelled"]
        if self.eval_dataset not in labelled:
            raise ValueError(
                f"eval_dataset={self.eval_dataset!r} must be a labelled dataset: {', '.join(labelled)}"
            )


def _literal_values(annotation) -> tuple:
    """The values of a ``Literal[...]`` annotation, also inside ``Literal[...] | None``; () for other types."""
    if getattr(annotation, "__origin__", None) is Literal:
        return get_args(annotation)
    return next((get_args(a) for a in get_args(annotation) if getattr(a, "__origin__", None) is Literal), ())


WHY = {"batch_size": "SSL losses need several samples per batch"}


def _kind(annotation) -> str:
    """A field's type as a message says it: ``float or null``, ``two numbers [low, high]``."""
    names = []
    for a in get_args(annotation) if getattr(annotation, "__origin__", None) is not tuple else (annotation,):
        origin = getattr(a, "__origin__", None)
        if a is type(None):
            names.append("null")
        elif origin is tuple or a is tuple:
            names.append("two numbers [low, high]")
        else:
            names.append(getattr(origin or a, "__name__", str(a)))
    return " or ".join(names) or getattr(annotation, "__name__", str(annotation))


def _number_text(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _message(error: dict, values: dict) -> str:
    """One line for pydantic's first error: the key, what was wrong, what is valid."""
    key = str(error["loc"][0]) if error["loc"] else "configuration"
    field = RunConfig.model_fields.get(key)
    value, kind, ctx = values.get(key, error.get("input")), error["type"], error.get("ctx") or {}
    hint = (
        " (YAML reads unquoted no/yes/on/off as booleans: quote the value, e.g. 'no')"
        if isinstance(error.get("input"), bool)
        else ""
    )
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        valid = ", ".join(map(str, RunConfig.choices()[key]))
        return f"{key}={value!r} is not valid; choose one of: {valid}{hint}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = _number_text(next(iter(ctx.values())))
        optional = field is not None and field.default is None
        why = f" ({WHY[key]})" if key in WHY else ""
        return f"{key} must be {bounds[kind]} {limit}{' or null' if optional else ''}, got {_number_text(value)}{why}"
    if kind == "extra_forbidden":
        return f"unknown configuration key {key!r}; valid keys: {', '.join(RunConfig.model_fields)}"
    expected = _kind(field.annotation) if field is not None else error["msg"]
    return f"{key}: expected {expected}, got {value!r}{hint}"


def build(values: dict) -> RunConfig:
    """A :class:`RunConfig` from plain values (a recipe merged with flags); ``ValueError`` naming the first bad
    key and what to do."""
    try:
        return RunConfig(**values)
    except ValidationError as e:
        raise ValueError(_message(e.errors(include_url=False)[0], values)) from None


def from_stored(values: dict, source: str) -> RunConfig:
    """A run's stored configuration: keys this version does not know (an older or newer run) are set aside with a
    warning, missing ones take their defaults; anything else invalid is an error naming ``source``."""
    unknown = sorted(set(values) - set(RunConfig.model_fields))
    if unknown:
        log.warning("%s: keys %s are not known to this version and are ignored", source, unknown)
    try:
        return build({k: v for k, v in values.items() if k in RunConfig.model_fields})
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
