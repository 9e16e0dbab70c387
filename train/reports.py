"""Evaluation reports: a markdown table and the plots (confusion matrix, ROC, t-SNE, label-fraction curve; for a
multi-label task the table of its metrics, the label-fraction curve of macro AUROC and the ROC)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from zoo.files import atomic_savefig, atomic_write_text
from zoo.optional import available, install_hint
from zoo.tables import markdown_table as table

log = logging.getLogger("evaluate")
COLUMNS = (
    "encoder",
    "protocol",
    "labels",
    "accuracy",
    "balanced acc.",
    "F1 (weighted)",
    "F1 (macro)",
    "AUROC",
    "seeds",
)
MULTILABEL_COLUMNS = (
    "encoder",
    "protocol",
    "labels",
    "AUROC (macro)",
    "AUROC (micro)",
    "mAP",
    "F1 (macro)",
    "F1 (micro)",
    "seeds",
)

__all__ = ["write_report", "write_plots", "markdown_table"]


def _fmt(value, std=None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" ± {std:.3f}" if std else "")


def _multilabel_table(summary: list[dict]) -> str:
    keys = ("auroc_macro", "auroc_micro", "map", "f1_macro", "f1_micro")
    rows = [
        (
            r["encoder"],
            r["protocol"],
            f"{r['fraction']:.0%}",
            *(_fmt(r[k], r[f"{k}_std"]) for k in keys),
            r["seeds"],
        )
        for r in sorted(summary, key=lambda r: (r["encoder"], r["protocol"], r["fraction"]))
    ]
    return table(MULTILABEL_COLUMNS, rows)


def markdown_table(summary: list[dict]) -> str:
    """The evaluation summary (mean ± std over seeds) as a Markdown table."""
    if summary and "accuracy" not in summary[0]:
        return _multilabel_table(summary)
    rows = [
        (
            r["encoder"],
            r["protocol"],
            f"{r['fraction']:.0%}",
            _fmt(r["accuracy"], r["accuracy_std"]),
            _fmt(r["balanced_accuracy"]),
            _fmt(r["f1_weighted"]),
            _fmt(r["f1_macro"]),
            _fmt(r["auroc"]),
            r["seeds"],
        )
        for r in sorted(summary, key=lambda r: (r["encoder"], r["protocol"], r["fraction"]))
    ]
    return table(COLUMNS, rows)


def write_report(result: dict, path: Path) -> None:
    text = (
        f"# Evaluation of {result['source']} on {result['dataset']} (test split)\n\n"
        + (
            f"Labels (multi-label): {', '.join(result['classes'])}; images showing each label per split: "
            if result.get("task") == "multilabel"
            else f"Classes: {', '.join(result['classes'])}; images per split and class: "
        )
        + f"{result['counts']}.\n\n"
        + markdown_table(result["summary"])
        + "\n"
    )
    atomic_write_text(path, text)


def _savefig(fig, path: Path) -> None:
    atomic_savefig(fig, path, dpi=100, bbox_inches="tight")


def write_plots(
    result: dict, test_features: dict[str, torch.Tensor], test_labels: torch.Tensor, out: Path
) -> None:
    """Confusion matrix, label-fraction curve, t-SNE and ROC as PNGs (skipped, with a line, without matplotlib)."""
    if not available("matplotlib"):
        log.warning("no plots: matplotlib is not installed (%s)", install_hint("matplotlib"))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE
    from sklearn.metrics import ConfusionMatrixDisplay

    if result.get("task") == "multilabel":
        _fraction_curve(result, out, plt, "auroc_macro", "test macro AUROC")
        _roc(result, out, plt)
        return
    classes, runs = result["classes"], result["runs"]
    best = max((r for r in runs if r["encoder"] == "ssl"), key=lambda r: (r["fraction"], r["accuracy"]))
    fig, ax = plt.subplots(figsize=(4 + 0.4 * len(classes), 3.5 + 0.4 * len(classes)))
    ConfusionMatrixDisplay(np.array(best["confusion_matrix"]), display_labels=classes).plot(
        ax=ax, colorbar=False
    )
    ax.set_title(f"SSL, {best['protocol']}, {best['fraction']:.0%} labels")
    _savefig(fig, out / "confusion_matrix.png")
    plt.close(fig)

    _fraction_curve(result, out, plt, "accuracy", "test accuracy")

    fig, axes = plt.subplots(1, len(test_features), figsize=(4 * len(test_features), 3.6), squeeze=False)
    for ax, (name, feats) in zip(axes[0], test_features.items(), strict=True):
        perplexity = max(2, min(30, len(feats) // 4))
        emb = TSNE(perplexity=perplexity, init="pca", random_state=0).fit_transform(feats.numpy())
        for c, cname in enumerate(classes):
            mask = test_labels.numpy() == c
            ax.scatter(emb[mask, 0], emb[mask, 1], s=6, label=cname)
        ax.set_title(f"t-SNE, {name}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7, markerscale=2)
    _savefig(fig, out / "tsne.png")
    plt.close(fig)
    _roc(result, out, plt)


def _fraction_curve(result: dict, out: Path, plt, key: str, name: str) -> None:
    """The metric ``key`` against the fraction of training labels, one line per (encoder, protocol)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for encoder, protocol in sorted({(r["encoder"], r["protocol"]) for r in result["summary"]}):
        points = sorted(
            (r["fraction"], r[key] if r[key] is not None else float("nan"))
            for r in result["summary"]
            if r["encoder"] == encoder and r["protocol"] == protocol
        )
        ax.plot(*zip(*points, strict=True), marker="o", label=f"{encoder} / {protocol}")
    ax.set(xscale="log", xlabel="fraction of training labels", ylabel=name, ylim=(0, 1))
    ax.legend(fontsize=7)
    _savefig(fig, out / "label_fraction.png")
    plt.close(fig)


def _roc(result: dict, out: Path, plt) -> None:
    """ROC curves of the 100 %-label linear probe of every encoder (micro-averaged one-vs-rest for >2 classes)."""
    curves = result.get("roc", {})
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(4, 4))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(fontsize=7)
    _savefig(fig, out / "roc.png")
    plt.close(fig)
