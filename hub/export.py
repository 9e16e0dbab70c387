"""Export a pre-training run as a Hub folder: ``model.safetensors`` + ``config.json`` + ``README.md``.

    python -m hub.export RUN_DIR OUT_DIR

The folder holds the timm backbone with the run's linear probe as timm's own classifier (feature
standardisation folded in), so ``zoo.load(OUT_DIR)``, ``timm.create_model("local-dir:OUT_DIR", pretrained=True)``
and the demo all work on it. It is written to a temporary folder and renamed: an export is whole or absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

import zoo
from hub.card import render_card
from zoo.data import eval_transform, get_dataset_spec, load_dataset
from zoo.data.dataset import cache_size_of, reload_options
from zoo.data.splits import file_sha256
from zoo.hub_format import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, make_config, zoo_home
from zoo.methods import get_method_spec
from zoo.probe import LinearProbe, classification_metrics, extract_features, fit_linear_probe, knn_accuracy

__all__ = ["export_run", "build_classifier", "write_folder", "zoo_home"]

log = logging.getLogger(__name__)


def build_classifier(
    encoder: torch.nn.Module, architecture: str, in_chans: int, probe: LinearProbe
) -> torch.nn.Module:
    """A timm classifier: the encoder's weights plus the folded probe as ``get_classifier()``."""
    num_classes = probe.weight.shape[0]
    model = timm.create_model(architecture, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    missing, unexpected = model.load_state_dict(encoder.state_dict(), strict=False)
    head = model.get_classifier()
    head_keys = {
        f"{name}" for name, _ in model.named_parameters() if name.startswith(_head_prefix(model, head))
    }
    if unexpected or set(missing) != head_keys:
        raise ValueError(f"encoder and {architecture} disagree: missing {missing}, unexpected {unexpected}")
    weight, bias = probe.folded()
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return model.eval()


def _head_prefix(model: torch.nn.Module, head: torch.nn.Module) -> str:
    return next(name for name, module in model.named_modules() if module is head) + "."


def write_folder(
    out_dir: Path, model: torch.nn.Module, config: dict, card_text: str, extra: dict | None = None
) -> Path:
    """Write the three files into a temporary sibling folder, then swap it in place of ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (tmp / CARD_FILE).write_text(card_text)
    for name, source in (extra or {}).items():
        shutil.copyfile(source, tmp / name)
    old = out_dir.with_name(f".old-{out_dir.name}-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _evaluate(encoder, splits: dict, transform, num_classes: int, knn_k: int) -> tuple[LinearProbe, dict]:
    """Fit the probe on train (C chosen on val) and score kNN + probe on test."""
    feats = {s: extract_features(encoder, images, transform) for s, (images, _) in splits.items()}
    labels = {s: y for s, (_, y) in splits.items()}
    probe = fit_linear_probe(feats["train"], labels["train"], feats["val"], labels["val"])
    probabilities = torch.softmax(probe.logits(feats["test"]), dim=1)
    metrics = classification_metrics(probabilities, labels["test"], num_classes)
    metrics["linear_accuracy"] = metrics["accuracy"]
    metrics["knn_accuracy"] = knn_accuracy(
        feats["train"], labels["train"], feats["test"], labels["test"], num_classes, k=knn_k
    )
    metrics["probe_inverse_l2"] = probe.inverse_l2
    return probe, metrics


def _load_run(run_dir: Path) -> tuple[dict, torch.nn.Module, object]:
    """The run's config, its final encoder and its data (same split, from the manifest) — no train import."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    options = reload_options(cfg["dataset"], cfg["dataset_options"], summary["data_config"])
    ds = load_dataset(
        cfg["dataset"], cfg["data_root"], channels=cfg["channels"], manifest=run_dir / "split.csv", **options
    )
    encoder = zoo.create_backbone(cfg["backbone"], in_chans=ds.channels)
    encoder.load_state_dict(load_file(run_dir / "encoder.safetensors"), strict=True)
    size = cache_size_of(summary["data_config"])
    splits = {s: ds.decode(s, size) for s in ("train", "val", "test")}
    return cfg, encoder, (ds, splits, summary["data_config"])


def _zoo_metadata(cfg: dict, metrics: dict, run_dir: Path) -> dict:
    """The ``zoo`` block of config.json: provenance and measured metrics."""
    length = f"{cfg['max_steps']} steps" if cfg["max_steps"] else f"{cfg['epochs']} epochs"
    return {
        "method": cfg["method"],
        "dataset": cfg["dataset"],
        "seed": cfg["seed"],
        "paper_mode": cfg["paper_mode"],
        "grouped_split": cfg["grouped_split"],
        "recipe": cfg,
        "eval_split": "test",
        "recipe_summary": f"{cfg['optimizer']} lr {cfg['lr']}, batch {cfg['batch_size']}, {length}",
        "metrics": metrics,
        "split_manifest_sha256": file_sha256(run_dir / "split.csv"),
        "code_version": zoo.__version__,
    }


def export_run(run_dir: str | Path, out_dir: str | Path, encoder=None, data=None) -> Path:
    """Export ``run_dir`` (a finished pre-training run) to ``out_dir``.

    ``encoder`` and ``data`` (an object with ``dataset``, ``train``/``val``/``test`` uint8 tensors and labels, and
    ``data_config``) can be passed by the trainer to skip reloading them.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "encoder.safetensors").is_file():
        raise FileNotFoundError(f"{run_dir} has no encoder.safetensors: is it a finished pre-training run?")
    if encoder is None or data is None:
        cfg, encoder, (ds, splits, data_config) = _load_run(run_dir)
    else:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        ds, data_config = data.dataset, data.data_config
        splits = {"train": data.train, "val": data.val, "test": data.test}
    encoder = encoder.float().eval()
    probe, metrics = _evaluate(encoder, splits, eval_transform(data_config), ds.num_classes, cfg["knn_k"])
    model = build_classifier(encoder, cfg["backbone"], ds.channels, probe)
    spec = get_dataset_spec(cfg["dataset"])
    config = make_config(
        cfg["backbone"],
        model.pretrained_cfg,
        num_classes=ds.num_classes,
        num_features=model.num_features,
        in_chans=ds.channels,
        label_names=ds.class_names,
        data_config=data_config,
        license=spec.license,
        zoo_metadata=_zoo_metadata(cfg, metrics, run_dir),
    )
    plot = run_dir / "curves.png"
    card = render_card(
        out_dir.name,
        config,
        metrics,
        spec,
        get_method_spec(cfg["method"]).paper,
        plot="curves.png" if plot.is_file() else None,
    )
    extra = {"curves.png": plot} if plot.is_file() else {}
    path = write_folder(out_dir, model, config, str(card), extra)
    log.info(
        "exported %s → %s (linear %.3f, kNN %.3f on test)",
        run_dir,
        path,
        metrics["linear_accuracy"],
        metrics["knn_accuracy"],
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a pre-training run as a timm / Hub model folder.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path, nargs="?", help="default: $ZOO_HOME/<method>-<dataset>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.out_dir is None:
            cfg = yaml.safe_load((args.run_dir / "config.yaml").read_text())
            args.out_dir = zoo_home() / f"{cfg['method']}-{cfg['dataset']}"
        print(export_run(args.run_dir, args.out_dir))
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
