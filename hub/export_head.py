"""Export a linear probe on a frozen catalogue encoder as a head plus a pinned reference to the encoder.

    medssl-export --base uni --dataset imagefolder --data-root DIR OUT_DIR

The encoder's weights are never written: the folder holds ``head.safetensors`` (the probe, standardisation folded
in), ``config.json`` (``zoo.head_only``, ``zoo.base_model``: the catalogue entry, its repository, the commit the
head was fitted on, its licence and gate; the task, a multi-label head's per-label thresholds chosen on val, the
metrics) and a model card carrying the base model's licence, gate and citation. Like a full export
(:mod:`medssl_zoo.hub.export`, whose probe, metrics, reference and folder writer it uses), it carries the
out-of-distribution reference fitted on the encoder's train features (``ood.safetensors``, :mod:`zoo.ood`).
``zoo.load(OUT_DIR)`` composes the two (:mod:`zoo.composed`), downloading the encoder from its own repository under
its own terms. This is how a classifier on an encoder whose licence forbids redistribution (CC-BY-NC-ND: UNI,
UNI2-h, Virchow2) is shared; it is used for every catalogue encoder, since their constructor kwargs are trusted code
that a ``config.json`` cannot carry.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

import zoo
from medssl_zoo.hub.card_terms import render_head_card
from medssl_zoo.hub.export import (
    ExportContents,
    check_destination,
    fit_probe,
    ood_reference,
    score_classifier,
    write_export,
)
from zoo.catalogue import catalogue_entry
from zoo.data.run_data import DataRequest, RunData, load_run_data
from zoo.files import load_yaml
from zoo.hub_format import HEAD_FILE, OOD_FILE
from zoo.ood import DEFAULT_PERCENTILE
from zoo.task import MULTILABEL

__all__ = ["export_head", "main"]

log = logging.getLogger(__name__)
KNN_K = 20  # the kNN metric's neighbours (a catalogue encoder has no run configuration that names them)


def _data_config(encoder: torch.nn.Module) -> dict:
    cfg = encoder.pretrained_cfg
    return {k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k] for k in ("input_size", "mean", "std",
            "crop_pct", "interpolation")}  # fmt: skip


def _config(entry, encoder, data: RunData, weight: torch.Tensor, metrics: dict, ood: dict) -> dict:
    """config.json: the catalogue entry's architecture and preprocessing, and the zoo block of a full export's
    kind (task, a multi-label head's thresholds, metrics, the OOD reference) with the pinned base model."""
    ds, classes = data.dataset, weight.shape[0]
    pretrained_cfg = {**_data_config(encoder), "num_classes": classes, "license": entry.license}
    block = {
        "head_only": True,
        "base_model": encoder.zoo_metadata["base_model"],
        "pooling": entry.pooling,
        "probe_dataset": ds.spec.name,
        "task": ds.task,
        **({"thresholds": metrics["thresholds"]} if ds.task == MULTILABEL else {}),
        "eval_split": "test",
        "metrics": {k: v for k, v in metrics.items() if k != "thresholds"},
        "code_version": zoo.__version__,
    }
    if ood:
        block["ood"] = ood
    return {
        "architecture": entry.architecture,
        "num_classes": classes,
        "num_features": entry.width,
        "label_names": list(ds.class_names),
        "pretrained_cfg": pretrained_cfg,
        "zoo": block,
    }


def _load_data(
    entry, encoder, dataset: str, data_root, dataset_options: dict | None, grouped: bool
) -> RunData:
    """The dataset decoded as the encoder expects it: its input size, normalisation and channels (a grayscale
    dataset, chest X-rays say, is shown to an RGB encoder as RGB)."""
    config = _data_config(encoder)
    request = DataRequest(
        dataset,
        entry.input_size,
        dataset_options=dataset_options or {},
        channels=config["input_size"][0],
        grouped_split=grouped,
    )
    return load_run_data(request, data_root=data_root, data_config=config)


def export_head(
    base: str,
    dataset: str,
    data_root: str | Path | None,
    out_dir: str | Path,
    *,
    dataset_options: dict | None = None,
    grouped: bool = False,
    force: bool = False,
    ood_percentile: float = DEFAULT_PERCENTILE,
) -> Path:
    """Fit the linear probe on ``base``'s frozen features of ``dataset`` (its split; L2 chosen on val; one-vs-rest
    on multi-label data, thresholds chosen on val) and the out-of-distribution reference on the same train
    features (threshold at ``ood_percentile``), and write the head-only export to ``out_dir`` (whole or absent;
    only an earlier export is replaced)."""
    entry = catalogue_entry(base)
    if entry is None:
        raise ValueError(f"--base {base!r} is not a catalogue encoder (`medssl-zoo list` shows them)")
    out_dir = Path(out_dir)
    check_destination(out_dir, None, force)  # before the download and the work
    if not 0 < ood_percentile < 100:  # before the work too
        raise ValueError(f"--ood-percentile must be in (0, 100), got {ood_percentile}")
    encoder = zoo.load(base, features_only=True)
    data = _load_data(entry, encoder, dataset, data_root, dataset_options, grouped)
    probe, feats = fit_probe(encoder, data)
    weight, bias = probe.folded()
    # the head's logits: what zoo.load's composed model computes, head(encoder(x)), on the same features
    metrics = score_classifier(lambda split: feats[split] @ weight.T + bias, feats, data, KNN_K, probe)
    ood, ood_data = ood_reference(feats, ood_percentile)  # the train features the probe was fitted on
    config = _config(entry, encoder, data, weight, metrics, ood)
    card = render_head_card(out_dir.name, config, entry, data.dataset.spec)
    generated = {OOD_FILE: ood_data} if ood_data is not None else {}
    tensors = {"weight": weight, "bias": bias}
    write_export(
        out_dir, ExportContents(HEAD_FILE, tensors, config, str(card), generated=generated), force=force
    )
    key = "linear_auroc_macro" if data.dataset.multilabel else "linear_accuracy"
    log.info("exported a head on %s → %s (%s %.3f on test)", base, out_dir, key, metrics[key])
    return out_dir


def _mapping(text: str) -> dict:
    value = load_yaml(text, "--dataset-options")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a mapping such as '{{csv: labels.csv}}'")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="medssl-export --base", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("out_dir", type=Path, help="destination folder")
    p.add_argument("--base", required=True, help="the catalogue encoder (medssl-zoo list)")
    p.add_argument("--dataset", default="imagefolder", help="a labelled dataset (default: %(default)s)")
    p.add_argument("--data-root", help="the dataset's folder")
    p.add_argument(
        "--dataset-options",
        type=_mapping,
        default={},
        help="YAML, e.g. '{csv: labels.csv, uncertain: ignore}' for multilabel-csv (default: none)",
    )
    p.add_argument(
        "--grouped", action="store_true", help="keep each patient / slide on one side of the split"
    )
    p.add_argument(
        "--ood-percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        help="the out-of-distribution threshold: this percentile of held-out in-distribution scores "
        "(default: %(default)s, about 1 %% of such images flagged)",
    )
    p.add_argument("--force", action="store_true", help="move a foreign OUT_DIR aside (never deleted) first")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        path = export_head(args.base, args.dataset, args.data_root, args.out_dir, grouped=args.grouped,
                           dataset_options=args.dataset_options, force=args.force,
                           ood_percentile=args.ood_percentile)  # fmt: skip
    except (FileNotFoundError, ValueError, zoo.ModelNotAvailableError) as e:
        log.error("%s", e)
        return 2
    print(path)
    return 0
