"""Evaluate an encoder the way the study does, with baselines, label fractions and seeds.

    python train/evaluate.py runs/simclr-synthetic-...                 # a pre-training run directory
    python train/evaluate.py runs/X/checkpoints/step_0000100           # a checkpoint inside a run
    python train/evaluate.py zoo_home/simclr-synthetic                 # an exported folder or a zoo name
    python train/evaluate.py RUN --protocols knn,linear,mlp,finetune --fractions 0.01,0.1,1 --seeds 0,1,2 \
        --baselines random,imagenet [--weights resnet50_imagenet.safetensors]

Writes ``metrics.json``, ``results.md`` and plots (confusion matrix, ROC, t-SNE, label-fraction curve) into
``--output-dir`` (default: ``<run>/eval``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from safetensors.torch import load_file

import zoo
from medssl_zoo.train.reports import markdown_table, write_plots, write_report
from zoo.data.batch_augment import BatchAugment
from zoo.files import atomic_write_text
from zoo.hub_format import WEIGHTS_FILE
from zoo.probe import (
    classification_metrics,
    extract_features,
    fine_tune,
    fit_linear_probe,
    fit_mlp_head,
    knn_predict,
    label_fraction_indices,
)
from zoo.run_dir import ENCODER_FILE, EVAL_DIR, SPLIT_FILE, RunData, is_run, load_run_data, read_run

log = logging.getLogger("evaluate")
BASELINES = ("random", "imagenet")
STUDY_KNN_K = 200  # the study's Euclidean kNN (sklearn, k = 200)
METRIC_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "f1_weighted",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "auroc",
)


@dataclass
class Source:
    """What is evaluated: the encoder, its data config and the run configuration it came from."""

    name: str
    encoder: torch.nn.Module
    architecture: str
    in_chans: int
    config: dict  # the run configuration (dataset, dataset_options, split, knn_k, …)
    data_config: dict | None  # None for an unfinished run: derived from its data
    manifest: Path | None = None

    @property
    def image_size(self) -> int | None:
        return self.data_config["input_size"][-1] if self.data_config else self.config.get("image_size")


@dataclass
class Settings:
    """The protocols' hyper-parameters."""

    knn_k: int
    knn_euclidean_k: int = STUDY_KNN_K
    mlp_epochs: int = 200
    finetune_epochs: int = 30


@dataclass
class ProbeTask:
    """One protocol run: frozen features of every split, the label-fraction subset of train, a seed."""

    encoder: torch.nn.Module
    data: RunData
    features: dict[str, torch.Tensor]  # split → N x F
    labels: dict[str, torch.Tensor]  # split → N
    train_subset: torch.Tensor  # indices into the train split
    seed: int
    settings: Settings

    @property
    def num_classes(self) -> int:
        return self.data.dataset.num_classes

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features["train"][self.train_subset], self.labels["train"][self.train_subset]


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    return scores / scores.sum(dim=1, keepdim=True).clamp(min=1e-12)


def predict_knn(task: ProbeTask) -> torch.Tensor:
    """Cosine-weighted kNN (k = the run's ``knn_k``)."""
    x, y = task.train
    k = task.settings.knn_k
    return _normalised(knn_predict(x, y, task.features["test"], task.num_classes, k=k, metric="cosine"))


def predict_knn_euclidean(task: ProbeTask) -> torch.Tensor:
    """The study's kNN: Euclidean, k = 200, majority vote on raw features."""
    x, y = task.train
    k = task.settings.knn_euclidean_k
    return _normalised(knn_predict(x, y, task.features["test"], task.num_classes, k=k, metric="euclidean"))


def predict_linear(task: ProbeTask) -> torch.Tensor:
    """L-BFGS logistic regression on standardised features, L2 chosen on val."""
    probe = fit_linear_probe(*task.train, task.features["val"], task.labels["val"])
    return torch.softmax(probe.logits(task.features["test"]), dim=1)


def predict_mlp(task: ProbeTask) -> torch.Tensor:
    """The study's MLP head (512-BN-LeakyReLU) on frozen features."""
    head, _ = fit_mlp_head(
        *task.train,
        task.features["val"],
        task.labels["val"],
        task.num_classes,
        epochs=task.settings.mlp_epochs,
        seed=task.seed,
    )
    with torch.no_grad():
        return torch.softmax(head(task.features["test"]), dim=1)


def predict_finetune(task: ProbeTask) -> torch.Tensor:
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
        epochs=task.settings.finetune_epochs,
        seed=task.seed,
    )
    return torch.softmax(extract_features(model, task.data.test[0], task.data.eval_transform), dim=1)


PROTOCOLS: dict[str, Callable[[ProbeTask], torch.Tensor]] = {
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
    data_config = (run.summary or {}).get("data_config")
    name = path.name if weights is None else f"{path.name}/{weights.parent.name}"
    return Source(
        name=name,
        encoder=encoder,
        architecture=run.config["backbone"],
        in_chans=in_chans,
        config=run.config,
        data_config=data_config,
        manifest=path / SPLIT_FILE,
    )


def _source_from_export(name: str) -> Source:
    model = zoo.load(name, features_only=True)
    meta, cfg = model.zoo_metadata, model.pretrained_cfg
    config = dict(meta.get("config") or {})
    config.setdefault("dataset", meta.get("dataset", ""))
    data_config = {k: cfg[k] for k in ("input_size", "crop_pct", "interpolation", "mean", "std")}
    architecture = cfg.get("architecture") or config.get("backbone")
    return Source(
        name=Path(str(name)).name,
        encoder=model,
        architecture=architecture,
        in_chans=cfg["input_size"][0],
        config=config,
        data_config=data_config,
    )


def resolve_source(target: str) -> Source:
    """A run directory, a checkpoint folder inside a run, an exported folder or a zoo name."""
    path = Path(target)
    if is_run(path) and (path / ENCODER_FILE).is_file():
        return _source_from_run(path)
    if (path / WEIGHTS_FILE).is_file() and is_run(path.parent.parent):  # <run>/checkpoints/step_*
        return _source_from_run(path.parent.parent, path / WEIGHTS_FILE)
    return _source_from_export(target)


def load_data(source: Source, args) -> RunData:
    """The source's own data and split, or ``--dataset`` (with the encoder's input size and normalisation)."""
    same = not args.dataset or args.dataset == source.config.get("dataset")
    if not same:
        config = {
            "dataset": args.dataset,
            "image_size": (source.data_config or {}).get("input_size", [0, 224])[1],
        }
    elif source.config.get("dataset"):
        config = dict(source.config)
    else:
        raise ValueError(f"{source.name} does not say which dataset it belongs to; pass --dataset")
    config["channels"] = source.in_chans
    data = load_run_data(
        config,
        manifest=args.manifest or (source.manifest if same else None),
        data_root=args.data_root,
        data_config=source.data_config,
    )
    ds = data.dataset
    if ds.channels != source.in_chans:
        raise ValueError(
            f"{source.name} takes {source.in_chans} channel(s), {ds.spec.name} has {ds.channels}"
        )
    label_names = getattr(source.encoder, "label_names", None)
    if same and label_names and len(label_names) != ds.num_classes:
        raise ValueError(
            f"{source.name} was trained for classes {label_names}; {ds.spec.name} has {ds.class_names}"
        )
    return data


def baseline_encoders(source: Source, names: list[str], weights: Path | None) -> dict[str, torch.nn.Module]:
    out = {}
    if "random" in names:
        torch.manual_seed(0)
        out["random-init"] = zoo.create_backbone(
            source.architecture, in_chans=source.in_chans, image_size=source.image_size
        )
    if "imagenet" in names:
        try:
            encoder = zoo.create_backbone(
                source.architecture,
                in_chans=source.in_chans,
                pretrained=weights is None,
                image_size=source.image_size,
            )
            if weights is not None:
                missing, _ = encoder.load_state_dict(load_file(weights), strict=False)
                if missing:
                    raise ValueError(f"--weights {weights} lacks {missing[:5]} for {source.architecture}")
            out["imagenet-supervised"] = encoder
        except (OSError, RuntimeError, ValueError) as e:  # no network: huggingface_hub / urllib errors
            log.error(
                "ImageNet weights for %s could not be loaded (%s: %s). Download them on a connected machine "
                "(they are cached under HF_HOME) or pass --weights FILE.safetensors; the baseline is left out.",
                source.architecture,
                type(e).__name__,
                str(e).splitlines()[0][:200],
            )
    return out


def evaluate_encoder(encoder, data: RunData, args, settings: Settings) -> tuple[list[dict], torch.Tensor]:
    """Every protocol × fraction × seed on features extracted once; returns (rows, test features)."""
    transform = data.eval_transform
    features = {s: extract_features(encoder, x, transform) for s, (x, _) in data.splits.items()}
    labels = {s: y for s, (_, y) in data.splits.items()}
    rows = []
    for fraction in args.fractions:
        for seed in args.seeds if fraction < 1 else args.seeds[:1]:
            subset = label_fraction_indices(labels["train"], fraction, seed, data.dataset.class_names)
            task = ProbeTask(encoder, data, features, labels, subset, seed, settings)
            for protocol in args.protocols:
                probabilities = PROTOCOLS[protocol](task)
                metrics = classification_metrics(probabilities, labels["test"], data.dataset.num_classes)
                rows.append({"protocol": protocol, "fraction": fraction, "seed": seed, **metrics})
                if protocol == "linear" and fraction == 1.0:
                    rows[-1]["roc"] = roc_points(probabilities, labels["test"], data.dataset.num_classes)
                log.info(
                    "%-13s %5.0f%% seed %d: accuracy %.3f",
                    protocol,
                    100 * fraction,
                    seed,
                    metrics["accuracy"],
                )
    return rows, features["test"]


def roc_points(probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple | None:
    """(fpr, tpr, auc) — binary, or micro-averaged one-vs-rest for several classes."""
    from sklearn.metrics import auc, roc_curve

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
        for key in METRIC_KEYS:
            values = [r[key] for r in items if r[key] is not None]
            summary[key] = float(np.mean(values)) if values else None
            summary[f"{key}_std"] = float(np.std(values)) if values else None
        out.append(summary)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("target", help="run directory, checkpoint folder, exported folder or zoo name")
    what = p.add_argument_group("protocols")
    what.add_argument(
        "--protocols",
        default="knn,knn_euclidean,linear",
        help=f"comma-separated, from: {', '.join(PROTOCOLS)} (default: %(default)s)",
    )
    what.add_argument(
        "--fractions", default="0.01,0.1,1.0", help="labelled fractions of train (default: %(default)s)"
    )
    what.add_argument(
        "--seeds", default="0,1,2", help="seeds of each fraction below 1 (default: %(default)s)"
    )
    what.add_argument("--knn-k", type=int, help="neighbours of the cosine kNN (default: the run's knn_k)")
    what.add_argument(
        "--knn-euclidean-k",
        type=int,
        default=STUDY_KNN_K,
        help="neighbours of the study's kNN (default: %(default)s)",
    )
    what.add_argument(
        "--mlp-epochs", type=int, default=200, help="epochs of the MLP head (default: %(default)s)"
    )
    what.add_argument(
        "--finetune-epochs", type=int, default=30, help="fine-tuning epochs (default: %(default)s)"
    )
    base = p.add_argument_group("baselines")
    base.add_argument(
        "--baselines",
        default="random",
        help=f"comma-separated from {', '.join(BASELINES)}, or none (default: random)",
    )
    base.add_argument(
        "--weights", type=Path, help="local ImageNet weights (safetensors) for the imagenet baseline"
    )
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="evaluate on another registered dataset")
    data.add_argument("--data-root", help="the dataset folder (default: the run's)")
    data.add_argument(
        "--manifest", type=Path, help="split manifest CSV to use (default: the run's split.csv)"
    )
    out = p.add_argument_group("output")
    out.add_argument("--output-dir", type=Path, help="default: <run>/eval, or eval/<name> for an export")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    args.protocols = [x for x in args.protocols.split(",") if x]
    args.fractions = [float(x) for x in args.fractions.split(",")]
    args.seeds = [int(x) for x in args.seeds.split(",")]
    args.baselines = [x for x in args.baselines.split(",") if x and x != "none"]
    for name, values, valid in (
        ("protocol", args.protocols, PROTOCOLS),
        ("baseline", args.baselines, BASELINES),
    ):
        bad = [v for v in values if v not in valid]
        if bad:
            p.error(f"unknown {name} {bad}; valid: {', '.join(valid)}")
    return args


def run(args) -> dict:
    source = resolve_source(args.target)
    data = load_data(source, args)
    settings = Settings(
        knn_k=args.knn_k or source.config.get("knn_k", STUDY_KNN_K),
        knn_euclidean_k=args.knn_euclidean_k,
        mlp_epochs=args.mlp_epochs,
        finetune_epochs=args.finetune_epochs,
    )
    encoders = {"ssl": source.encoder, **baseline_encoders(source, args.baselines, args.weights)}
    rows, test_features = [], {}
    for name, encoder in encoders.items():
        log.info("evaluating %s (%s)", name, source.architecture)
        encoder_rows, test_features[name] = evaluate_encoder(encoder.eval(), data, args, settings)
        rows += [{"encoder": name, **r} for r in encoder_rows]
    target = Path(args.target)
    out_dir = args.output_dir or (target / EVAL_DIR if is_run(target) else Path(EVAL_DIR) / source.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    roc = {r["encoder"]: r.pop("roc") for r in rows if r.get("roc")}
    result = {
        "source": source.name,
        "dataset": data.dataset.spec.name,
        "classes": data.dataset.class_names,
        "counts": data.dataset.counts(),
        "architecture": source.architecture,
        "protocols": args.protocols,
        "fractions": args.fractions,
        "seeds": args.seeds,
        "summary": aggregate(rows),
        "runs": rows,
        "roc": roc,
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=2))
    write_report(result, out_dir / "results.md")
    if not args.no_plots:
        write_plots(result, test_features, data.test[1], out_dir)
    log.info("wrote %s", out_dir)
    return result


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    args = parse_args(argv)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError, zoo.ModelNotAvailableError) as e:
        log.error("%s", e)
        return 2
    print(markdown_table(result["summary"]))
    return 0 if result["summary"] else 1


if __name__ == "__main__":
    sys.exit(main())
