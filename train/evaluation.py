"""The evaluation API: an encoder scored the way the study does, with baselines, label fractions and seeds.

    from medssl_zoo.train.evaluation import EvalOptions, evaluate
    result = evaluate("runs/simclr-synthetic-…", EvalOptions(protocols=("knn", "linear"), fractions=(0.1, 1.0)))

``evaluate(target, options)`` takes a run directory, a checkpoint folder inside a run, an exported folder or a zoo
name; it extracts frozen features once per encoder and runs every protocol × label fraction × seed on them
(:mod:`zoo.probe`), writes ``metrics.json``, ``results.md`` and plots, and returns the result. ``train/evaluate.py``
is its command line.

Multi-label data (ChestMNIST, ``multilabel-csv``) is probed label by label — kNN's per-label vote, one-vs-rest
logistic regression, the MLP and fine-tuning with masked BCE — and scored by macro / micro / per-label AUROC, mAP
and F1 at per-label thresholds chosen on val (:func:`zoo.probe.multilabel_metrics`). Each protocol therefore
predicts val as well as test (:data:`Predictions`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import zoo
from medssl_zoo.train.reports import write_plots, write_report
from zoo.data.batch_augment import BatchAugment
from zoo.data.run_data import DataRequest, RunData, load_run_data
from zoo.files import atomic_write_json
from zoo.hub_format import WEIGHTS_FILE
from zoo.messages import first_line
from zoo.probe import (
    choose_thresholds,
    classification_metrics,
    extract_features,
    fine_tune,
    fit_linear_probe,
    fit_mlp_head,
    fit_multilabel_probe,
    knn_multilabel,
    knn_predict,
    label_fraction_indices,
    multilabel_metrics,
    objective_for,
)
from zoo.probe.metrics import MULTILABEL_METRICS
from zoo.run_config import RunConfig, from_stored
from zoo.run_dir import ENCODER_FILE, EVAL_DIR, SPLIT_FILE, is_run, read_run
from zoo.runtime import compute_device

__all__ = [
    "BASELINES",
    "PROTOCOLS",
    "EvalOptions",
    "ProbeTask",
    "Source",
    "evaluate",
    "load_data",
    "resolve_source",
]

log = logging.getLogger("evaluate")
BASELINES = ("random", "imagenet")
STUDY_KNN_K = 200  # the study's Euclidean kNN (sklearn, k = 200)
FRESH_SPLIT = ("none", "")  # --manifest values that mean: draw a new split, not the run's
METRIC_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "f1_weighted",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "auroc",
)
Predictions = dict[
    str, torch.Tensor
]  # "val" and "test" → N x C probabilities (softmax, or sigmoid per label)


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and how; every field checked on creation.

    ``knn_k`` None: the run's ``knn_k``. ``dataset`` None: the source's own labelled data (a run's split when it is
    the run's own folder). ``manifest``: a split.csv to use, or ``"none"`` to draw a fresh seeded split.
    """

    protocols: tuple[str, ...] = ("knn", "knn_euclidean", "linear")
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    baselines: tuple[str, ...] = ("random",)
    weights: Path | None = None
    knn_k: int | None = None
    knn_euclidean_k: int = STUDY_KNN_K
    mlp_epochs: int = 200
    finetune_epochs: int = 30
    dataset: str | None = None
    data_root: str | None = None
    dataset_options: dict = field(default_factory=dict)
    manifest: str | None = None
    output_dir: Path | None = None
    plots: bool = True

    def __post_init__(self):
        for name, values, valid in (
            ("protocol", self.protocols, PROTOCOLS),
            ("baseline", self.baselines, BASELINES),
        ):
            bad = [v for v in values if v not in valid]
            if bad:
                raise ValueError(f"unknown {name} {bad}; valid: {', '.join(valid)}")
        if not self.protocols or not self.fractions or not self.seeds:
            raise ValueError("give at least one protocol, fraction and seed")
        if not all(0 < f <= 1 for f in self.fractions):
            raise ValueError(f"label fractions must be in (0, 1], got {list(self.fractions)}")
        for key in ("knn_k", "knn_euclidean_k", "mlp_epochs", "finetune_epochs"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"{key} must be > 0, got {value}")
        if self.weights is not None and "imagenet" not in self.baselines:
            raise ValueError("--weights are the imagenet baseline's: add --baselines imagenet")


@dataclass
class Source:
    """What is evaluated: the encoder, its data config and the run configuration it came from."""

    name: str
    encoder: torch.nn.Module
    architecture: str
    in_chans: int
    config: RunConfig | None  # the run configuration; None for a model that does not say where it comes from
    data_config: dict | None  # None for an unfinished run: derived from its data
    manifest: Path | None = None

    @property
    def image_size(self) -> int | None:
        if self.data_config:
            return self.data_config["input_size"][-1]
        return self.config.image_size if self.config else None


@dataclass
class ProbeTask:
    """One protocol run: frozen features of every split, the label-fraction subset of train, a seed."""

    encoder: torch.nn.Module
    data: RunData
    features: dict[str, torch.Tensor]  # split → N x F
    labels: dict[str, torch.Tensor]  # split → N
    train_subset: torch.Tensor  # indices into the train split
    seed: int
    options: EvalOptions
    knn_k: int  # the cosine kNN's k (the run's, unless options say otherwise)

    @property
    def num_classes(self) -> int:
        return self.data.dataset.num_classes

    @property
    def multilabel(self) -> bool:
        return self.data.dataset.multilabel

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features["train"][self.train_subset], self.labels["train"][self.train_subset]

    def neighbours(self, k: int) -> int:
        """``k`` capped at the smallest class's labelled examples: with k at least the labelled set, every query
        gets the majority class and kNN reports chance (k = 200 at 1 % labels did). Multi-label: at most half the
        labelled images (with all of them, every query gets each label's prevalence)."""
        if self.multilabel:
            return max(1, min(k, len(self.train_subset) // 2))
        counts = torch.bincount(self.train[1])
        smallest = int(counts[counts > 0].min())
        return min(k, smallest)


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    return scores / scores.sum(dim=1, keepdim=True).clamp(min=1e-12)


def _knn(task: ProbeTask, k: int, metric: str) -> Predictions:
    x, y = task.train
    k = task.neighbours(k)
    if task.multilabel:
        return {s: knn_multilabel(x, y, task.features[s], k=k, metric=metric) for s in ("val", "test")}
    return {
        s: _normalised(knn_predict(x, y, task.features[s], task.num_classes, k=k, metric=metric))
        for s in ("val", "test")
    }


def predict_knn(task: ProbeTask) -> Predictions:
    """Cosine-weighted kNN (k = the run's ``knn_k``)."""
    return _knn(task, task.knn_k, "cosine")


def predict_knn_euclidean(task: ProbeTask) -> Predictions:
    """The study's kNN: Euclidean, k = 200, majority vote on raw features."""
    return _knn(task, task.options.knn_euclidean_k, "euclidean")


def predict_linear(task: ProbeTask) -> Predictions:
    """L-BFGS logistic regression on standardised features, L2 chosen on val (multi-label: one-vs-rest)."""
    if task.multilabel:
        probe = fit_multilabel_probe(*task.train, task.features["val"], task.labels["val"])
        return {s: torch.sigmoid(probe.logits(task.features[s])) for s in ("val", "test")}
    probe = fit_linear_probe(*task.train, task.features["val"], task.labels["val"])
    return {s: torch.softmax(probe.logits(task.features[s]), dim=1) for s in ("val", "test")}


def predict_mlp(task: ProbeTask) -> Predictions:
    """The study's MLP head (512-BN-LeakyReLU) on frozen features."""
    head, _ = fit_mlp_head(
        *task.train,
        task.features["val"],
        task.labels["val"],
        task.num_classes,
        epochs=task.options.mlp_epochs,
        seed=task.seed,
    )
    probabilities = objective_for(task.data.val[1]).probabilities  # by the labels' shape
    with torch.no_grad():
        return {s: probabilities(head(task.features[s])) for s in ("val", "test")}


def predict_finetune(task: ProbeTask) -> Predictions:
    """End-to-end fine-tuning of a copy of the encoder with a linear head, early-stopped on val."""
    images, labels = task.data.train
    subset = task.train_subset
    ds = task.data.dataset
    augment = BatchAugment(
        images.shape[-1], ds.channels, ds.mean, ds.std, crop_scale=(0.5, 1.0), seed=task.seed
    )
    ids = torch.arange(len(subset))
    model, _ = fine_tune(
        task.encoder,
        task.num_classes,
        (images[subset], labels[subset]),
        task.data.val,
        lambda x: augment(x, ids[: len(x)]),
        task.data.eval_transform,
        epochs=task.options.finetune_epochs,
        seed=task.seed,
    )
    probabilities = objective_for(task.data.val[1]).probabilities  # by the labels' shape
    return {
        s: probabilities(extract_features(model, task.data.splits[s][0], task.data.eval_transform))
        for s in ("val", "test")
    }


PROTOCOLS: dict[str, Callable[[ProbeTask], Predictions]] = {
    "knn": predict_knn,
    "knn_euclidean": predict_knn_euclidean,
    "linear": predict_linear,
    "mlp": predict_mlp,
    "finetune": predict_finetune,
}


def _source_from_run(path: Path, weights: Path | None = None) -> Source:
    run = read_run(path)
    encoder = run.load_encoder(weights)
    in_chans = next(p for p in encoder.parameters() if p.ndim == 4).shape[1]
    name = path.name if weights is None else f"{path.name}/{weights.parent.name}"
    data_config = (run.summary or {}).get("data_config")
    return Source(name, encoder, run.config.backbone, in_chans, run.config, data_config, path / SPLIT_FILE)


def _source_from_export(name: str) -> Source:
    model = zoo.load(name, features_only=True)
    meta, cfg = model.zoo_metadata, model.pretrained_cfg
    stored = meta.get("config")
    config = from_stored(stored, f"{name}: config.json's zoo block") if isinstance(stored, dict) else None
    data_config = {k: cfg[k] for k in ("input_size", "crop_pct", "interpolation", "mean", "std")}
    architecture = cfg.get("architecture") or (config.backbone if config else None)
    return Source(Path(str(name)).name, model, architecture, cfg["input_size"][0], config, data_config)


def resolve_source(target: str | Path) -> Source:
    """A run directory, a checkpoint folder inside a run, an exported folder or a zoo name."""
    path = Path(target)
    if is_run(path) and (path / ENCODER_FILE).is_file():
        return _source_from_run(path)
    if is_run(path):
        raise ValueError(
            f"{path} is a run that has not finished (no {ENCODER_FILE}): evaluate one of its "
            f"checkpoints ({path}/checkpoints/step_*) or continue it with --resume"
        )
    if (path / WEIGHTS_FILE).is_file() and is_run(path.parent.parent):  # <run>/checkpoints/step_*
        return _source_from_run(path.parent.parent, path / WEIGHTS_FILE)
    return _source_from_export(str(target))


def _same_folder(a: str | None, b: str | None) -> bool:
    return a is None or (b is not None and os.path.realpath(a) == os.path.realpath(b))


def _labelled_request(source: Source, options: EvalOptions) -> tuple[DataRequest, bool]:
    """(the data to probe on, whether it is the source run's own split)."""
    own = source.config.dataset if source.config else None
    if options.dataset and options.dataset != own:
        request = DataRequest(
            options.dataset, source.image_size or 224, dataset_options=options.dataset_options
        )
        return request, False
    if source.config is None:
        raise ValueError(f"{source.name} does not say which dataset it belongs to; pass --dataset")
    request = source.config.labelled_data()
    if request is None:
        raise ValueError(
            f"{source.name} was pre-trained on an unlabelled folder ({own}) without --eval-dataset: there are no "
            "classes to probe; evaluate it on a labelled dataset: --dataset NAME --data-root DIR"
        )
    if options.dataset_options:
        request = request.replace(dataset_options=options.dataset_options)
    same_split = request.dataset == own and _same_folder(options.data_root, request.data_root)
    return request, same_split and not options.dataset_options


def load_data(source: Source, options: EvalOptions) -> RunData:
    """The source's own labelled data and split (a run's split.csv when the data is the run's own folder), or
    ``options.dataset`` / another folder of the same kind with a fresh seeded split, at the encoder's input size
    and normalisation. Probes are fitted on the classes of the data evaluated, not the source's classifier."""
    request, own_split = _labelled_request(source, options)
    request = request.replace(channels=source.in_chans)
    if options.manifest in FRESH_SPLIT:
        manifest = None
    else:
        manifest = options.manifest or (source.manifest if own_split else None)
    data = load_run_data(
        request, manifest=manifest, data_root=options.data_root, data_config=source.data_config
    )
    ds = data.dataset
    if ds.channels != source.in_chans:
        raise ValueError(
            f"{source.name} takes {source.in_chans} channel(s), {ds.spec.name} has {ds.channels}"
        )
    label_names = getattr(source.encoder, "label_names", None)
    if label_names and list(label_names) != list(ds.class_names):
        log.info(
            "%s's classifier (%s) is not used: the probes are fitted on %s's classes (%s)",
            source.name,
            ", ".join(label_names),
            ds.spec.name,
            ", ".join(ds.class_names),
        )
    return data


def _local_weights(encoder: torch.nn.Module, weights: Path, architecture: str) -> torch.nn.Module:
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"--weights {weights} is not a readable safetensors file ({e})") from e
    try:
        missing, _ = encoder.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"--weights {weights} do not fit {architecture} ({first_line(e, line=1)})") from e
    if missing:
        raise ValueError(f"--weights {weights} lack {missing[:5]} for {architecture}")
    return encoder


def baseline_encoders(source: Source, options: EvalOptions) -> dict[str, torch.nn.Module]:
    """The requested baselines, each one built or a ``ValueError`` saying how to get it (never a silent drop)."""
    out, size = {}, source.image_size
    if "random" in options.baselines:
        torch.manual_seed(0)
        out["random-init"] = zoo.create_backbone(
            source.architecture, in_chans=source.in_chans, image_size=size
        )
    if "imagenet" in options.baselines:
        if options.weights is not None:
            encoder = zoo.create_backbone(source.architecture, in_chans=source.in_chans, image_size=size)
            out["imagenet-supervised"] = _local_weights(encoder, options.weights, source.architecture)
            return out
        try:
            out["imagenet-supervised"] = zoo.create_backbone(
                source.architecture, in_chans=source.in_chans, pretrained=True, image_size=size
            )
        except (OSError, RuntimeError, ValueError) as e:  # no network: huggingface_hub / urllib errors
            raise ValueError(
                f"the imagenet baseline needs timm's ImageNet weights of {source.architecture}, which cannot be "
                f"downloaded here ({type(e).__name__}: {first_line(e)}). Download them on a "
                "connected machine (they are cached under HF_HOME) or pass --weights FILE.safetensors, or leave "
                "the baseline out (--baselines random)"
            ) from e
    return out


def evaluate_encoder(
    encoder, data: RunData, options: EvalOptions, knn_k: int
) -> tuple[list[dict], torch.Tensor]:
    """Every protocol × fraction × seed on features extracted once; returns (rows, test features). The encoder
    computes on :func:`zoo.runtime.compute_device` (a GPU when there is one): features and fine-tuning."""
    encoder = encoder.to(compute_device())
    transform = data.eval_transform
    features = {s: extract_features(encoder, x, transform) for s, (x, _) in data.splits.items()}
    labels = {s: y for s, (_, y) in data.splits.items()}
    rows = []
    for fraction in options.fractions:
        for seed in options.seeds if fraction < 1 else options.seeds[:1]:
            subset = label_fraction_indices(labels["train"], fraction, seed, data.dataset.class_names)
            task = ProbeTask(encoder, data, features, labels, subset, seed, options, knn_k)
            for protocol in options.protocols:
                rows.append(_run_protocol(task, protocol, fraction))
    return rows, features["test"]


def _scores(task: ProbeTask, predictions: Predictions) -> dict:
    """The test metrics of one protocol's predictions (multi-label: F1 at per-label thresholds chosen on val)."""
    labels = task.labels["test"]
    if not task.multilabel:
        return classification_metrics(predictions["test"], labels, task.num_classes)
    thresholds = choose_thresholds(predictions["val"], task.labels["val"])
    return multilabel_metrics(predictions["test"], labels, thresholds, task.data.dataset.class_names)


def _run_protocol(task: ProbeTask, protocol: str, fraction: float) -> dict:
    predictions = PROTOCOLS[protocol](task)
    probabilities, labels, num_classes = predictions["test"], task.labels["test"], task.num_classes
    row = {"protocol": protocol, "fraction": fraction, "seed": task.seed}
    row.update(_scores(task, predictions))
    if protocol in ("knn", "knn_euclidean"):
        requested = task.knn_k if protocol == "knn" else task.options.knn_euclidean_k
        row["k"] = task.neighbours(requested)
        if row["k"] < requested:
            log.warning(
                "%s at %g%% labels: k = %d is more than the smallest class's %d labelled examples; used k = %d "
                "(a larger k votes the majority class for every query)",
                protocol,
                100 * fraction,
                requested,
                row["k"],
                row["k"],
            )
    if protocol == "linear" and fraction == 1.0:
        row["roc"] = roc_points(probabilities, labels, num_classes)
    headline = "auroc_macro" if task.multilabel else "accuracy"
    log.info(
        "%-13s %5.0f%% seed %d: %s %s", protocol, 100 * fraction, task.seed, headline, _shown(row[headline])
    )
    return row


def _shown(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def roc_points(probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple | None:
    """(fpr, tpr, auc) — binary, or micro-averaged one-vs-rest for several classes (multi-label: over the known
    entries of every label)."""
    from sklearn.metrics import auc, roc_curve

    if labels.ndim == 2:
        known = ~torch.isnan(labels)
        y, p = labels[known].numpy(), probabilities[known].numpy()
        if len(np.unique(y)) < 2:
            return None
        fpr, tpr, _ = roc_curve(y, p)
        return fpr.tolist(), tpr.tolist(), float(auc(fpr, tpr))
    y = labels.numpy()
    if len(np.unique(y)) < 2:
        return None
    if num_classes == 2:
        fpr, tpr, _ = roc_curve(y, probabilities[:, 1].numpy())
    else:
        onehot = np.eye(num_classes)[y]
        fpr, tpr, _ = roc_curve(onehot.ravel(), probabilities.numpy().ravel())
    return fpr.tolist(), tpr.tolist(), float(auc(fpr, tpr))


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (encoder, protocol, fraction)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["encoder"], r["protocol"], r["fraction"]), []).append(r)
    out = []
    for (encoder, protocol, fraction), items in groups.items():
        summary = {"encoder": encoder, "protocol": protocol, "fraction": fraction, "seeds": len(items)}
        for key in METRIC_KEYS if "accuracy" in items[0] else MULTILABEL_METRICS:
            values = [r[key] for r in items if r[key] is not None]
            summary[key] = float(np.mean(values)) if values else None
            summary[f"{key}_std"] = float(np.std(values)) if values else None
        out.append(summary)
    return out


def _output_dir(target: str | Path, source: Source, options: EvalOptions) -> Path:
    if options.output_dir:
        return Path(options.output_dir)
    return Path(target) / EVAL_DIR if is_run(target) else Path(EVAL_DIR) / source.name


def evaluate(target: str | Path, options: EvalOptions | None = None) -> dict:
    """Evaluate ``target`` (see the module docstring); the result is also written to the output folder."""
    options = options or EvalOptions()
    source = resolve_source(target)
    data = load_data(source, options)
    knn_k = options.knn_k or (source.config.knn_k if source.config else STUDY_KNN_K)
    encoders = {"ssl": source.encoder, **baseline_encoders(source, options)}  # before the work: fail early
    rows, test_features = [], {}
    for name, encoder in encoders.items():
        log.info("evaluating %s (%s)", name, source.architecture)
        encoder_rows, test_features[name] = evaluate_encoder(encoder.eval(), data, options, knn_k)
        rows += [{"encoder": name, **r} for r in encoder_rows]
    out_dir = _output_dir(target, source, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    roc = {r["encoder"]: r.pop("roc") for r in rows if r.get("roc")}
    for r in rows:
        r.pop("roc", None)
    result = {
        "source": source.name,
        "dataset": data.dataset.spec.name,
        "task": data.dataset.task,
        "classes": data.dataset.class_names,
        "counts": data.dataset.counts(),
        "architecture": source.architecture,
        "protocols": list(options.protocols),
        "fractions": list(options.fractions),
        "seeds": list(options.seeds),
        "summary": aggregate(rows),
        "runs": rows,
        "roc": roc,
    }
    atomic_write_json(out_dir / "metrics.json", result)
    write_report(result, out_dir / "results.md")
    if options.plots:
        write_plots(result, test_features, data.test[1], out_dir)
    log.info("wrote %s", out_dir)
    return result
