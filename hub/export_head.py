"""Export a linear probe on a frozen catalogue encoder as a head plus a pinned reference to the encoder.

    medssl-export --base uni --dataset imagefolder --data-root DIR OUT_DIR

The encoder's weights are never written: the folder holds ``head.safetensors`` (the probe, standardisation folded
in), ``config.json`` (``zoo.head_only``, ``zoo.base_model``: the catalogue entry, its repository, the commit the
head was fitted on, its licence and gate) and a model card carrying the base model's licence, gate and citation.
``zoo.load(OUT_DIR)`` composes the two (:mod:`zoo.composed`), downloading the encoder from its own repository under
its own terms. This is how a classifier on an encoder whose licence forbids redistribution (CC-BY-NC-ND: UNI,
UNI2-h, Virchow2) is shared; it is used for every catalogue encoder, since their constructor kwargs are trusted code
that a ``config.json`` cannot carry.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch

import zoo
from medssl_zoo.hub.card_terms import render_head_card
from medssl_zoo.hub.export import _clear_the_way, _fit_probe, check_destination
from zoo.catalogue import catalogue_entry
from zoo.data.run_data import DataRequest, load_run_data
from zoo.files import atomic_folder, remove_stale_temporaries, save_safetensors
from zoo.hub_format import CARD_FILE, HEAD_FILE, MODEL_CONFIG_FILE
from zoo.probe import classification_metrics, knn_accuracy

__all__ = ["export_head", "main"]

log = logging.getLogger(__name__)


def _data_config(encoder: torch.nn.Module) -> dict:
    cfg = encoder.pretrained_cfg
    return {k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k] for k in ("input_size", "mean", "std",
            "crop_pct", "interpolation")}  # fmt: skip


def _config(entry, encoder, data, weight: torch.Tensor, metrics: dict) -> dict:
    ds, classes = data.dataset, weight.shape[0]
    pretrained_cfg = {**_data_config(encoder), "num_classes": classes, "license": entry.license}
    return {
        "architecture": entry.architecture,
        "num_classes": classes,
        "num_features": entry.width,
        "label_names": list(ds.class_names),
        "pretrained_cfg": pretrained_cfg,
        "zoo": {
            "head_only": True,
            "base_model": encoder.zoo_metadata["base_model"],
            "pooling": entry.pooling,
            "probe_dataset": ds.spec.name,
            "eval_split": "test",
            "metrics": metrics,
            "code_version": zoo.__version__,
        },
    }


def export_head(
    base: str,
    dataset: str,
    data_root: str | Path | None,
    out_dir: str | Path,
    *,
    dataset_options: dict | None = None,
    grouped: bool = False,
    force: bool = False,
) -> Path:
    """Fit the linear probe on ``base``'s frozen features of ``dataset`` (its split; L2 chosen on val) and write
    the head-only export to ``out_dir`` (whole or absent; only an earlier export is replaced)."""
    entry = catalogue_entry(base)
    if entry is None:
        raise ValueError(f"--base {base!r} is not a catalogue encoder (`medssl-zoo list` shows them)")
    out_dir = Path(out_dir)
    check_destination(out_dir, None, force)  # before the download and the work
    encoder = zoo.load(base, features_only=True)
    request = DataRequest(
        dataset, entry.input_size, dataset_options=dataset_options or {}, grouped_split=grouped
    )
    data = load_run_data(request, data_root=data_root, data_config=_data_config(encoder))
    probe, feats = _fit_probe(encoder, data)
    weight, bias = probe.folded()
    logits = feats["test"] @ weight.T + bias
    metrics = classification_metrics(torch.softmax(logits, 1), data.test[1], data.dataset.num_classes)
    metrics["linear_accuracy"] = metrics.pop("accuracy")
    metrics["knn_accuracy"] = knn_accuracy(
        feats["train"], data.train[1], feats["test"], data.test[1], data.dataset.num_classes, k=20
    )
    config = _config(entry, encoder, data, weight, metrics)
    card = render_head_card(out_dir.name, config, entry, data.dataset.spec)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent, out_dir.name)  # our own, left by a killed export
    with atomic_folder(out_dir) as tmp:
        save_safetensors({"weight": weight, "bias": bias}, tmp / HEAD_FILE, metadata={"format": "pt"})
        (tmp / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD_FILE).write_text(str(card), encoding="utf-8")
        check_destination(out_dir, None, force)
        replaced = _clear_the_way(out_dir)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)  # an earlier export of this project, or an empty folder
    log.info("exported a head on %s → %s (linear %.3f on test)", base, out_dir, metrics["linear_accuracy"])
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="medssl-export --base", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("out_dir", type=Path, help="destination folder")
    p.add_argument("--base", required=True, help="the catalogue encoder (medssl-zoo list)")
    p.add_argument("--dataset", default="imagefolder", help="a labelled dataset (default: %(default)s)")
    p.add_argument("--data-root", help="the dataset's folder")
    p.add_argument(
        "--grouped", action="store_true", help="keep each patient / slide on one side of the split"
    )
    p.add_argument("--force", action="store_true", help="move a foreign OUT_DIR aside (never deleted) first")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        path = export_head(args.base, args.dataset, args.data_root, args.out_dir, grouped=args.grouped,
                           force=args.force)  # fmt: skip
    except (FileNotFoundError, ValueError, zoo.ModelNotAvailableError) as e:
        log.error("%s", e)
        return 2
    print(path)
    return 0
