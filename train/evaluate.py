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
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

import zoo
from train.reports import write_plots, write_report
from zoo.data import MedicalDataset, eval_transform, load_dataset
from zoo.data.batch_augment import BatchAugment
from zoo.data.dataset import cache_size_of, reload_options
from zoo.probe import (
    classification_metrics,
    extract_features,
    fine_tune,
    fit_linear_probe,
    fit_mlp_head,
    knn_predict,
    label_fraction_indices,
)

log = logging.getLogger("evaluate")
PROTOCOLS = ("knn", "knn_euclidean", "linear", "mlp", "finetune")
BASELINES = ("random", "imagenet")


@dataclass
class Source:
    """What is evaluated: the encoder, its architecture and the data it belongs to."""

    name: str
    encoder: torch.nn.Module
    architecture: str
    in_chans: int
    data_config: dict
    dataset: str
    data_root: str | None
    dataset_options: dict
    manifest: Path | None
    knn_k: int = 200


def _from_run(run_dir: Path, weights: Path) -> Source:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = (
        json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    )
    state = load_file(weights)
    if any(k.startswith("backbone.") for k in state):  # an Accelerate checkpoint of the whole SSL model
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    in_chans = state[next(k for k in state if state[k].ndim == 4)].shape[1]
    encoder = zoo.create_backbone(cfg["backbone"], in_chans=in_chans)
    encoder.load_state_dict(state, strict=True)
    data_config = summary.get("data_config") or _run_data_config(cfg, in_chans)
    options = reload_options(cfg["dataset"], cfg["dataset_options"], data_config)
    return Source(
        run_dir.name,
        encoder,
        cfg["backbone"],
        in_chans,
        data_config,
        cfg["dataset"],
        cfg["data_root"],
        options,
        run_dir / "split.csv",
        cfg["knn_k"],
    )


def _run_data_config(cfg: dict, in_chans: int) -> dict:
    """The data config of a run that has no summary yet (a checkpoint of an unfinished run)."""
    from train.config import PretrainConfig
    from train.data import cache_size

    pc = PretrainConfig(**cfg)
    spec = zoo.data.get_dataset_spec(pc.dataset)
    mean, std = (
        (spec.mean, spec.std)
        if len(spec.mean) == in_chans
        else ((spec.mean[0],) * in_chans, (spec.std[0],) * in_chans)
    )
    return {
        "input_size": (in_chans, pc.image_size, pc.image_size),
        "crop_pct": pc.image_size / cache_size(pc),
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
    }


def _from_export(name: str) -> Source:
    model = zoo.load(name, features_only=True)
    meta, cfg = model.zoo_metadata, model.pretrained_cfg
    recipe = meta.get("recipe", {})
    data_config = {k: cfg[k] for k in ("input_size", "crop_pct", "interpolation", "mean", "std")}
    options = reload_options(meta.get("dataset", ""), recipe.get("dataset_options", {}), data_config)
    architecture = cfg.get("architecture") or recipe.get("backbone")
    return Source(
        Path(str(name)).name,
        model,
        architecture,
        cfg["input_size"][0],
        data_config,
        meta.get("dataset", ""),
        recipe.get("data_root"),
        options,
        None,
        recipe.get("knn_k", 200),
    )


def resolve_source(target: str) -> Source:
    path = Path(target)
    if (path / "config.yaml").is_file() and (path / "encoder.safetensors").is_file():
        return _from_run(path, path / "encoder.safetensors")
    if (path / "model.safetensors").is_file() and (path.parent.parent / "config.yaml").is_file():
        return _from_run(path.parent.parent, path / "model.safetensors")  # checkpoints/step_*
    return _from_export(target)


def load_data(source: Source, args) -> tuple[MedicalDataset, dict]:
    dataset = args.dataset or source.dataset
    if not dataset:
        raise ValueError(f"{source.name} does not say which dataset it belongs to; pass --dataset")
    same = dataset == source.dataset
    ds = load_dataset(
        dataset,
        args.data_root or (source.data_root if same else None),
        channels=source.in_chans,
        manifest=args.manifest or (source.manifest if same else None),
        **(source.dataset_options if same else {}),
    )
    if ds.channels != source.in_chans:
        raise ValueError(f"{source.name} takes {source.in_chans} channel(s), {dataset} has {ds.channels}")
    label_names = getattr(source.encoder, "label_names", None)
    if same and label_names and len(label_names) != ds.num_classes:
        raise ValueError(
            f"{source.name} was trained for classes {label_names}; {dataset} has {ds.class_names}"
        )
    size = cache_size_of(source.data_config)
    return ds, {s: ds.decode(s, size) for s in ("train", "val", "test")}


def baseline_encoders(source: Source, names: list[str], weights: Path | None) -> dict[str, torch.nn.Module]:
    out = {}
    if "random" in names:
        torch.manual_seed(0)
        out["random-init"] = zoo.create_backbone(source.architecture, in_chans=source.in_chans)
    if "imagenet" in names:
        try:
            encoder = zoo.create_backbone(
                source.architecture, in_chans=source.in_chans, pretrained=weights is None
            )
            if weights is not None:
                state = load_file(weights)
                missing, unexpected = encoder.load_state_dict(state, strict=False)
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


def evaluate_encoder(encoder, ds, splits, transform, args, knn_k: int) -> tuple[list[dict], torch.Tensor]:
    """Every protocol × fraction × seed on features extracted once; returns (rows, test features)."""
    feats = {s: extract_features(encoder, x, transform) for s, (x, _) in splits.items()}
    labels = {s: y for s, (_, y) in splits.items()}
    rows = []
    for fraction in args.fractions:
        for seed in args.seeds if fraction < 1 else args.seeds[:1]:
            idx = label_fraction_indices(labels["train"], fraction, seed, ds.class_names)
            train_f, train_y = feats["train"][idx], labels["train"][idx]
            for protocol in args.protocols:
                probs = _predict(
                    protocol,
                    encoder,
                    ds,
                    splits,
                    idx,
                    train_f,
                    train_y,
                    feats,
                    labels,
                    transform,
                    args,
                    knn_k,
                    seed,
                )
                metrics = classification_metrics(probs, labels["test"], ds.num_classes)
                rows.append({"protocol": protocol, "fraction": fraction, "seed": seed, **metrics})
                if protocol == "linear" and fraction == 1.0:
                    rows[-1]["roc"] = roc_points(probs, labels["test"], ds.num_classes)
                log.info(
                    "%-13s %5.0f%% seed %d: accuracy %.3f",
                    protocol,
                    100 * fraction,
                    seed,
                    metrics["accuracy"],
                )
    return rows, feats["test"]


def _predict(
    protocol, encoder, ds, splits, idx, train_f, train_y, feats, labels, transform, args, knn_k, seed
):
    c = ds.num_classes
    if protocol in ("knn", "knn_euclidean"):
        metric = "cosine" if protocol == "knn" else "euclidean"
        scores = knn_predict(
            train_f, train_y, feats["test"], c, k=knn_k if metric == "cosine" else 200, metric=metric
        )
        return scores / scores.sum(dim=1, keepdim=True).clamp(min=1e-12)
    if protocol == "linear":
        probe = fit_linear_probe(train_f, train_y, feats["val"], labels["val"])
        return torch.softmax(probe.logits(feats["test"]), dim=1)
    if protocol == "mlp":
        head, _ = fit_mlp_head(
            train_f, train_y, feats["val"], labels["val"], c, epochs=args.mlp_epochs, seed=seed
        )
        with torch.no_grad():
            return torch.softmax(head(feats["test"]), dim=1)
    augment = BatchAugment(
        splits["train"][0].shape[-1], ds.channels, ds.mean, ds.std, crop_scale=(0.5, 1.0), seed=seed
    )
    ids = torch.arange(len(idx))
    model, _ = fine_tune(
        encoder,
        c,
        (splits["train"][0][idx], splits["train"][1][idx]),
        splits["val"],
        lambda x: augment(x, ids[: len(x)]),
        transform,
        epochs=args.finetune_epochs,
        seed=seed,
    )
    return torch.softmax(extract_features(model, splits["test"][0], transform), dim=1)


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
        for key in (
            "accuracy",
            "balanced_accuracy",
            "f1_weighted",
            "f1_macro",
            "precision_weighted",
            "recall_weighted",
            "auroc",
        ):
            values = [r[key] for r in items if r[key] is not None]
            summary[key] = float(np.mean(values)) if values else None
            summary[f"{key}_std"] = float(np.std(values)) if values else None
        out.append(summary)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="run directory, checkpoint folder, exported folder or zoo name")
    p.add_argument(
        "--protocols", default="knn,knn_euclidean,linear", help=f"comma-separated from {PROTOCOLS}"
    )
    p.add_argument("--fractions", default="0.01,0.1,1.0")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--baselines", default="random", help=f"comma-separated from {BASELINES}, or none")
    p.add_argument(
        "--weights", type=Path, help="local ImageNet weights (safetensors) for the imagenet baseline"
    )
    p.add_argument("--dataset", help="evaluate on another registered dataset")
    p.add_argument("--data-root")
    p.add_argument("--manifest", type=Path, help="split manifest CSV to use")
    p.add_argument("--mlp-epochs", type=int, default=200)
    p.add_argument("--finetune-epochs", type=int, default=30)
    p.add_argument("--output-dir", type=Path)
    p.add_argument("--no-plots", action="store_true")
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
    ds, splits = load_data(source, args)
    transform = eval_transform(source.data_config)
    encoders = {"ssl": source.encoder, **baseline_encoders(source, args.baselines, args.weights)}
    rows, test_features = [], {}
    for name, encoder in encoders.items():
        log.info("evaluating %s (%s)", name, source.architecture)
        encoder_rows, test_features[name] = evaluate_encoder(
            encoder.eval(), ds, splits, transform, args, source.knn_k
        )
        rows += [{"encoder": name, **r} for r in encoder_rows]
    out_dir = args.output_dir or (
        Path(args.target) / "eval"
        if (Path(args.target) / "config.yaml").is_file()
        else Path("eval") / source.name
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    roc = {r["encoder"]: r.pop("roc") for r in rows if r.get("roc")}
    result = {
        "source": source.name,
        "dataset": ds.spec.name,
        "classes": ds.class_names,
        "counts": ds.counts(),
        "architecture": source.architecture,
        "protocols": args.protocols,
        "fractions": args.fractions,
        "seeds": args.seeds,
        "summary": aggregate(rows),
        "runs": rows,
        "roc": roc,
    }
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out_dir / "metrics.json")
    write_report(result, out_dir / "results.md")
    if not args.no_plots:
        write_plots(result, test_features, splits["test"][1], out_dir)
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
    from train.reports import markdown_table

    print(markdown_table(result["summary"]))
    return 0 if result["summary"] else 1


if __name__ == "__main__":
    sys.exit(main())
