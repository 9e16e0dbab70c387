"""Export a pre-training run as a Hub folder: ``model.safetensors`` + ``config.json`` + ``README.md``.

    medssl-export RUN_DIR [OUT_DIR] [--force]

The folder holds the timm backbone with the run's linear probe as timm's own classifier (feature
standardisation folded in), so ``zoo.load(OUT_DIR)``, ``timm.create_model("local-dir:OUT_DIR", pretrained=True)``
and the demo all work on it. On multi-label data the probe is one-vs-rest (a sigmoid per label) and config.json
records the task and the per-label thresholds chosen on val; every export also carries an out-of-distribution
reference fitted on the training split (``ood.safetensors``, :mod:`zoo.ood`). It is written to a temporary folder and renamed: an export is whole or absent.
An existing ``OUT_DIR`` is only replaced when it is an earlier export (or empty); any other folder is left alone
(``--force`` moves it aside, it never deletes it), and the run directory and its parents are always refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import timm
import torch

import zoo
from medssl_zoo.hub.card import render_card
from medssl_zoo.hub.card_terms import refuse_catalogue_run
from zoo.backbones import size_kwargs
from zoo.data import get_dataset_spec
from zoo.data.run_data import RunData
from zoo.data.splits import file_sha256
from zoo.files import (
    atomic_folder,
    atomic_write_bytes,
    open_regular,
    remove_stale_temporaries,
    save_safetensors,
    temporary_path,
)
from zoo.hub_format import (
    CARD_FILE,
    MODEL_CONFIG_FILE,
    OOD_FILE,
    PLOT_FILE,
    WEIGHTS_FILE,
    is_export,
    make_config,
    zoo_home,
)
from zoo.methods import get_method_spec
from zoo.ood import DEFAULT_PERCENTILE, MAX_FEATURES, fit_reference, reference_bytes
from zoo.probe import (
    LinearProbe,
    MultiLabelProbe,
    choose_thresholds,
    classification_metrics,
    extract_features,
    fit_linear_probe,
    fit_multilabel_probe,
    knn_accuracy,
    knn_multilabel,
    macro_auroc,
    multilabel_metrics,
)
from zoo.run_config import RunConfig
from zoo.run_dir import (
    CURVES_FILE,
    ENCODER_FILE,
    RUN_CONFIG_FILE,
    RUN_RECORD_FILE,
    SPLIT_FILE,
    SUMMARY_FILE,
    Run,
    read_run,
    read_run_record,
)
from zoo.task import MULTICLASS, MULTILABEL

__all__ = [
    "ExportContents",
    "ExportError",
    "export_run",
    "build_classifier",
    "check_destination",
    "write_export",
    "write_folder",
    "zoo_home",
]

log = logging.getLogger(__name__)
# run-configuration keys that are paths on the training machine: not published
MACHINE_PATHS = ("data_root", "output_dir")
# the run files an export reads: never through a symbolic link
RUN_FILES_READ = (RUN_CONFIG_FILE, SUMMARY_FILE, ENCODER_FILE, SPLIT_FILE, RUN_RECORD_FILE)
MAX_EXTRA_BYTES = 64 * 1024 * 1024  # the curves image is a few hundred kB


class ExportError(ValueError):
    """The export cannot be written where it was asked to; the message says why and what to do."""


def build_classifier(
    encoder: torch.nn.Module,
    architecture: str,
    in_chans: int,
    probe: LinearProbe | MultiLabelProbe,
    image_size: int | None = None,
) -> torch.nn.Module:
    """A timm classifier: the encoder's weights plus the folded probe as ``get_classifier()``."""
    num_classes = probe.weight.shape[0]
    model = timm.create_model(
        architecture,
        pretrained=False,
        num_classes=num_classes,
        in_chans=in_chans,
        **size_kwargs(architecture, image_size),
    )
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


def check_destination(out_dir: Path, run_dir: Path | None = None, force: bool = False) -> None:
    """Refuse a destination whose files an export would destroy: the run itself or one of its parents always, any
    existing folder that is neither empty nor an earlier export unless ``force`` (which moves it aside)."""
    given = Path(out_dir)
    out = given.resolve()
    if run_dir is not None:
        run = Path(run_dir).resolve()
        if out == run or run.is_relative_to(out):
            raise ExportError(
                f"{out_dir} is the run directory or one of its parents; export into a folder of its own, "
                f"e.g. $ZOO_HOME/<name>"
            )
    if given.is_symlink():  # (resolve() above followed it: ask the name itself)
        raise ExportError(
            f"{out_dir} is a symbolic link; export into a folder of its own (links are never followed)"
        )
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder; choose another destination")
    if is_export(out) or not any(out.iterdir()) or force:
        return
    names = sorted(p.name for p in out.iterdir())
    raise ExportError(
        f"{out_dir} exists and is not an export of this project (it holds {', '.join(names[:5])}"
        f"{' …' if len(names) > 5 else ''}); nothing was changed. Choose a new folder, or pass --force to move "
        "that folder aside (renamed, not deleted) and export there."
    )


def _copy_regular(source: Path, dest: Path) -> None:
    """Copy the regular file ``source`` without following a link (a run's ``curves.png -> ~/secret.txt`` would
    otherwise be published with the model)."""
    with (
        open_regular(source, "run file", follow_links=False, limit=MAX_EXTRA_BYTES) as f,
        open(dest, "xb") as out,
    ):
        shutil.copyfileobj(f, out)


def _check_run_files(run_dir: Path) -> bool:
    """Refuse a run whose files the export reads are symbolic links (their targets are not the run's); returns
    whether the run's curves image can be copied (a link there is skipped with a warning naming it)."""
    for name in RUN_FILES_READ:
        if (run_dir / name).is_symlink():
            raise ExportError(
                f"{run_dir / name} is a symbolic link; an export reads only the run's own files, never what a "
                "link points to: replace the link by the file itself"
            )
    plot = run_dir / CURVES_FILE
    if plot.is_symlink():
        log.warning("%s is a symbolic link: not copied into the export (links are never followed)", plot)
        return False
    return plot.is_file()


def _set_aside(out: Path) -> Path:
    aside = out.with_name(f"{out.name}.replaced-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}")
    out.rename(aside)
    log.warning("moved the existing folder %s aside to %s", out, aside)
    return aside


def write_folder(
    out_dir: Path,
    model: torch.nn.Module,
    config: dict,
    card_text: str,
    extra: dict | None = None,
    *,
    run_dir: Path | None = None,
    force: bool = False,
    generated: dict[str, bytes] | None = None,
) -> Path:
    """A full export's folder: the model's weights as ``model.safetensors`` (see :func:`write_export`)."""
    contents = ExportContents(
        WEIGHTS_FILE, model.state_dict(), config, card_text, extra or {}, generated or {}
    )
    return write_export(out_dir, contents, run_dir=run_dir, force=force)


@dataclass
class ExportContents:
    """What an export folder holds: the weights file (its name and tensors: ``model.safetensors`` of a full export,
    ``head.safetensors`` of a head-only one), config.json, the card, files copied from the run (``copied``: name →
    the run's file) and files given as their bytes (``generated``: the OOD reference)."""

    weights_file: str
    weights: dict[str, torch.Tensor]
    config: dict
    card: str
    copied: dict[str, Path] = field(default_factory=dict)
    generated: dict[str, bytes] = field(default_factory=dict)


def write_export(
    out_dir: Path, contents: ExportContents, *, run_dir: Path | None = None, force: bool = False
) -> Path:
    """Write ``contents`` into a temporary sibling folder, then swap it in place of ``out_dir`` (only over an
    earlier export or an empty folder; see :func:`check_destination`): the one writer of both kinds of export, so
    an export is whole or absent."""
    out_dir = Path(out_dir)
    check_destination(out_dir, run_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent, out_dir.name)  # our own, left by a killed export
    with atomic_folder(out_dir) as tmp:  # renamed into place at the end of the block, removed on failure
        save_safetensors(contents.weights, tmp / contents.weights_file, metadata={"format": "pt"})
        (tmp / MODEL_CONFIG_FILE).write_text(json.dumps(contents.config, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD_FILE).write_text(contents.card, encoding="utf-8")
        for name, source in contents.copied.items():
            _copy_regular(source, tmp / name)
        for name, data in contents.generated.items():
            atomic_write_bytes(tmp / name, data)
        check_destination(out_dir, run_dir, force)  # again: the folder may have changed during the export
        replaced = _clear_the_way(out_dir)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)  # an earlier export of this project, or an empty folder
    return out_dir


def _clear_the_way(out_dir: Path) -> Path | None:
    """Move what is at ``out_dir`` out of the way of the new export: an earlier export (or an empty folder) to a
    temporary name, returned for removal once the new one is in place; a foreign folder (``--force``) aside,
    kept."""
    if not out_dir.exists():
        return None
    if is_export(out_dir) or not any(out_dir.iterdir()):
        replaced = temporary_path(out_dir)
        out_dir.rename(replaced)
        return replaced
    _set_aside(out_dir)
    return None


def fit_probe(encoder, data: RunData) -> tuple[LinearProbe | MultiLabelProbe, dict[str, torch.Tensor]]:
    """The linear probe on fp32 features of train (L2 chosen on val; one-vs-rest on multi-label data): fp32, so
    that an export is the same on every machine (bf16 autocast is used only where it is fast); also returns the
    features."""
    feats = {
        s: extract_features(encoder, images, data.eval_transform, autocast=False)
        for s, (images, _) in data.splits.items()
    }
    fit = fit_multilabel_probe if data.dataset.multilabel else fit_linear_probe
    probe = fit(feats["train"], data.train[1], feats["val"], data.val[1])
    return probe, feats


def classifier_logits(model: torch.nn.Module, data: RunData) -> Callable[[str], torch.Tensor]:
    """A split's logits (N x classes) by the exported classifier itself: what zoo.load or timm will compute."""
    return lambda split: extract_features(model, data.splits[split][0], data.eval_transform, autocast=False)


def score_classifier(
    logits_of: Callable[[str], torch.Tensor], feats: dict, data: RunData, knn_k: int, probe
) -> dict:
    """Test metrics of the exported classifier (``logits_of(split)``: its logits of a split) and of kNN on the
    encoder's features; on multi-label data the multi-label ones, with the per-label thresholds (``thresholds``)."""
    if data.dataset.multilabel:
        return _score_multilabel(logits_of, feats, data, knn_k, probe)
    num_classes = data.dataset.num_classes
    metrics = classification_metrics(torch.softmax(logits_of("test"), dim=1), data.test[1], num_classes)
    metrics["linear_accuracy"] = metrics["accuracy"]
    metrics["knn_accuracy"] = knn_accuracy(
        feats["train"], data.train[1], feats["test"], data.test[1], num_classes, k=knn_k
    )
    metrics["probe_inverse_l2"] = probe.inverse_l2
    return metrics


def _score_multilabel(logits_of, feats: dict, data: RunData, knn_k: int, probe) -> dict:
    """The multi-label metrics of the exported classifier on test, at per-label thresholds chosen on val (its
    own sigmoid outputs), and kNN's macro AUROC."""
    thresholds = choose_thresholds(torch.sigmoid(logits_of("val")), data.val[1])
    test = torch.sigmoid(logits_of("test"))
    metrics = multilabel_metrics(test, data.test[1], thresholds, data.dataset.class_names)
    metrics["linear_auroc_macro"] = metrics["auroc_macro"]
    votes = knn_multilabel(feats["train"], data.train[1], feats["test"], k=knn_k)
    metrics["knn_auroc_macro"] = macro_auroc(votes, data.test[1])
    metrics["probe_inverse_l2"] = probe.inverse_l2
    metrics["thresholds"] = thresholds
    return metrics


def ood_reference(feats: dict, percentile: float) -> tuple[dict, bytes | None]:
    """The zoo.ood block and ood.safetensors: the reference fitted on train, its threshold, and how many val and
    test images pass it (none for a model wider than :data:`zoo.ood.MAX_FEATURES`)."""
    if feats["train"].shape[1] > MAX_FEATURES:
        log.warning("no OOD reference: %d features, more than %d", feats["train"].shape[1], MAX_FEATURES)
        return {}, None
    reference, about = fit_reference(feats["train"], feats["val"], percentile)
    data, sha256 = reference_bytes(reference)
    test_flagged = float(reference.flags(feats["test"]).float().mean())
    return {"file": OOD_FILE, "sha256": sha256, **about, "test_flagged": test_flagged}, data


def published_config(cfg: RunConfig) -> dict:
    """The run configuration as published: paths of the training machine left out (they stay in the run), files
    (a split manifest, initial weights) named by their name only."""
    public = {k: v for k, v in cfg.to_dict().items() if k not in MACHINE_PATHS}
    for key in ("split_manifest", "init_weights"):
        if public.get(key):
            public[key] = Path(public[key]).name
    return public


def _zoo_metadata(
    cfg: RunConfig, metrics: dict, run_dir: Path, probe_dataset: str, task: str = MULTICLASS
) -> dict:
    """The ``zoo`` block of config.json: provenance, the task type (and a multi-label model's thresholds) and
    measured metrics (``probe_dataset``: where the classifier and the metrics come from; an unlabelled run's
    --eval-dataset)."""
    return {
        "probe_dataset": probe_dataset,
        "task": task,
        **({"thresholds": metrics["thresholds"]} if task == MULTILABEL else {}),
        "method": cfg.method,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "paper_mode": cfg.paper_mode,
        "grouped_split": cfg.grouped_split,
        "init": cfg.init,
        **_init_weights(run_dir),
        "encoder": get_method_spec(cfg.method).exported_encoder,
        "config": published_config(cfg),
        "eval_split": "test",
        "training": f"{cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}, {cfg.length}",
        "metrics": {k: v for k, v in metrics.items() if k != "thresholds"},
        "split_manifest_sha256": file_sha256(run_dir / SPLIT_FILE),
        "code_version": zoo.__version__,
    }


def _init_weights(run_dir: Path) -> dict:
    """The file the backbone started from (``--init-weights``, or timm's Hub file): its name and sha256, from the
    run's record; the path on the training machine is not published."""
    record = read_run_record(run_dir).get("init_weights")
    return (
        {"init_weights": {k: record[k] for k in ("file", "sha256", "repo_id") if k in record}}
        if record
        else {}
    )


def _export_config(run: Run, model: torch.nn.Module, data: RunData, metrics: dict, ood: dict) -> dict:
    cfg, ds = run.config, data.dataset
    zoo_block = _zoo_metadata(cfg, metrics, run.path, ds.spec.name, ds.task)
    if ood:
        zoo_block["ood"] = ood
    return make_config(
        cfg.backbone,
        model.pretrained_cfg,
        num_classes=ds.num_classes,
        num_features=model.num_features,
        in_chans=ds.channels,
        label_names=ds.class_names,
        data_config=data.data_config,
        license=ds.spec.license,
        zoo_metadata=zoo_block,
    )


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    encoder: torch.nn.Module | None = None,
    data: RunData | None = None,
    *,
    force: bool = False,
    repo_id: str | None = None,
    ood_percentile: float = DEFAULT_PERCENTILE,
) -> Path:
    """Export ``run_dir`` (a finished pre-training run) to ``out_dir``.

    The trainer passes its ``encoder`` and ``data`` to skip reloading them; ``repo_id`` (the Hub repository it will
    be pushed to) goes into the model card's usage lines; ``ood_percentile`` places the OOD threshold.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    has_plot = _check_run_files(run_dir)
    run = read_run(run_dir)
    refuse_catalogue_run(run_dir, run.config.backbone)  # its terms decide, before any work
    if not (run_dir / ENCODER_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} has no {ENCODER_FILE}: is it a finished pre-training run?")
    check_destination(out_dir, run_dir, force)  # fail before the work, not after
    encoder = (encoder if encoder is not None else run.load_encoder()).float().eval()
    data = data if data is not None else run.load_data()
    probe, feats = fit_probe(encoder, data)
    size = data.data_config["input_size"][-1]
    model = build_classifier(encoder, run.config.backbone, data.dataset.channels, probe, size)
    metrics = score_classifier(classifier_logits(model, data), feats, data, run.config.knn_k, probe)
    ood, ood_data = ood_reference(feats, ood_percentile)

    config = _export_config(run, model, data, metrics, ood)
    card = render_card(
        out_dir.name,
        config,
        metrics,
        get_dataset_spec(run.config.dataset),
        get_method_spec(run.config.method).citation,
        plot=PLOT_FILE if has_plot else None,
        repo_id=repo_id,
    )

    extra = {PLOT_FILE: run_dir / CURVES_FILE} if has_plot else {}
    generated = {OOD_FILE: ood_data} if ood_data is not None else {}
    path = write_folder(
        out_dir, model, config, str(card), extra, run_dir=run_dir, force=force, generated=generated
    )
    what = "macro AUROC" if data.dataset.multilabel else "accuracy"
    key = "auroc_macro" if data.dataset.multilabel else "accuracy"
    log.info(
        "exported %s → %s (linear %s %s, kNN %s %s on test)",
        run_dir,
        path,
        what,
        _shown(metrics[f"linear_{key}"]),
        what,
        _shown(metrics[f"knn_{key}"]),
    )
    return path


def _shown(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--base" or a.startswith("--base=") for a in args):  # a head on a catalogue encoder
        from medssl_zoo.hub.export_head import main as export_head_main

        return export_head_main(args)
    parser = argparse.ArgumentParser(
        prog="medssl-export",
        description="Export a finished pre-training run as a timm / Hub model folder (model.safetensors, "
        "config.json, README.md model card) with its linear probe as the classifier.",
    )
    parser.add_argument("run_dir", type=Path, help="the run directory (runs/<method>-<dataset>-<time>)")
    parser.add_argument(
        "out_dir", type=Path, nargs="?", help="destination folder (default: $ZOO_HOME/<method>-<dataset>)"
    )
    parser.add_argument(
        "--ood-percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        help="the out-of-distribution threshold: this percentile of held-out in-distribution scores "
        "(default: %(default)s, about 1 %% of such images flagged)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="if OUT_DIR exists and is not an earlier export, move it aside (renamed, never deleted) first",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.out_dir is None:
            cfg = read_run(args.run_dir).config
            args.out_dir = zoo_home() / f"{cfg.method}-{cfg.dataset}"
        print(export_run(args.run_dir, args.out_dir, force=args.force, ood_percentile=args.ood_percentile))
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
