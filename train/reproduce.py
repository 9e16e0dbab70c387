"""Reproduce the study's table: 4 methods × 3 datasets (+ random-init / ImageNet baselines), one results table.

    python train/reproduce.py --data-root breast=~/data/archive --data-root pneumonia=~/data/chest_xray
    python train/reproduce.py                      # no datasets here: the same matrix on the synthetic set, small

Each cell pre-trains from its recipe (``train/recipes/<method>-<dataset>[-paper].yaml``), then evaluates with
``train/evaluate.py``. Finished cells are skipped and interrupted pre-training resumes, so the command can be
re-run until the table is complete. Writes ``results.csv``, ``results.md`` and ``summary.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train import evaluate
from zoo.registry import STUDY_DATASETS, STUDY_METHODS
from zoo.run_dir import EVAL_DIR, is_run, read_run

log = logging.getLogger("reproduce")
PRETRAIN = Path(__file__).resolve().parent / "pretrain.py"
SYNTHETIC = [
    "--backbone",
    "test_resnet",
    "--dataset",
    "synthetic",
    "--dataset-options",
    "{num_images: 400}",
    "--image-size",
    "64",
    "--crop-scale",
    "[0.25, 1.0]",
    "--batch-size",
    "64",
    "--optimizer",
    "adamw",
    "--lr",
    "2e-3",
    "--weight-decay",
    "1e-4",
    "--warmup-steps",
    "10",
    "--knn-k",
    "20",
    "--export-name",
    "null",
    "--progress",
    "false",
]
FIELDS = [
    "dataset",
    "method",
    "encoder",
    "protocol",
    "fraction",
    "accuracy",
    "accuracy_std",
    "balanced_accuracy",
    "f1_weighted",
    "f1_macro",
    "auroc",
    "seeds",
]


def pretrain(cell: str, argv: list[str], run_dir: Path) -> None:
    if is_run(run_dir) and read_run(run_dir).finished:
        return
    resume = ["--resume"] if is_run(run_dir) else []
    cmd = [sys.executable, str(PRETRAIN), *argv, "--output-dir", str(run_dir), *resume]
    log.info("%s: pre-training (%s)", cell, "resuming" if resume else "new run")
    if subprocess.run(cmd).returncode != 0 or not read_run(run_dir).finished:
        raise RuntimeError(f"{cell}: pre-training did not finish; see the output above (re-run to resume)")


def evaluate_cell(run_dir: Path, args, baselines: str) -> list[dict]:
    argv = [
        str(run_dir),
        "--protocols",
        args.protocols,
        "--fractions",
        args.fractions,
        "--seeds",
        args.seeds,
        "--baselines",
        baselines,
        "--output-dir",
        str(run_dir / EVAL_DIR),
        "--no-plots",
    ]
    return evaluate.run(evaluate.parse_args(argv))["summary"]


def cells(args) -> list[tuple[str, str, list[str]]]:
    """(dataset, method, pre-training argv) for every cell of the matrix."""
    roots = dict(item.split("=", 1) for item in args.data_root)
    unknown = set(roots) - set(STUDY_DATASETS)
    if unknown:
        raise ValueError(
            f"--data-root for unknown datasets {sorted(unknown)}; valid: {', '.join(STUDY_DATASETS)}"
        )
    methods = args.methods.split(",")
    extra = shlex.split(args.pretrain_args)
    suffix = "-paper" if args.paper_mode else ""
    if not roots:
        log.warning("no dataset roots given: running the matrix on the synthetic set (small, CPU-friendly)")
        steps = ["--max-steps", str(args.synthetic_steps)]
        return [
            (
                "synthetic",
                m,
                ["--method", m, *SYNTHETIC, *steps, "--paper-mode", str(args.paper_mode).lower(), *extra],
            )
            for m in methods
        ]
    return [
        (d, m, ["--recipe", f"{m}-{d}{suffix}", "--data-root", roots[d], "--progress", "false", *extra])
        for d in STUDY_DATASETS
        if d in roots
        for m in methods
    ]


def run(args) -> list[dict]:
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    rows, seen_datasets = [], set()
    for dataset, method, argv in cells(args):
        cell = f"{method}-{dataset}{'-paper' if args.paper_mode else ''}"
        done = out / "cells" / f"{cell}.json"
        first_of_dataset = dataset not in seen_datasets
        seen_datasets.add(dataset)
        if done.is_file():
            log.info("%s: finished earlier, skipped", cell)
        else:
            pretrain(cell, argv, out / "runs" / cell)
            summary = evaluate_cell(out / "runs" / cell, args, args.baselines if first_of_dataset else "none")
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(summary))
            tmp.replace(done)
        for r in json.loads(done.read_text()):
            rows.append({"dataset": dataset, "method": method if r["encoder"] == "ssl" else "—", **r})
    write_table(rows, out)
    return rows


def write_table(rows: list[dict], out: Path) -> None:
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| dataset | method | encoder | protocol | labels | accuracy | F1 (weighted) | AUROC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        std = f" ± {r['accuracy_std']:.3f}" if r.get("accuracy_std") else ""
        auroc = f"{r['auroc']:.3f}" if r.get("auroc") is not None else "–"
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['encoder']} | {r['protocol']} | {r['fraction']:.0%} | "
            f"{r['accuracy']:.3f}{std} | {r['f1_weighted']:.3f} | {auroc} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "summary.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in rows if r["protocol"] == "linear" and r["fraction"] == 1.0] or rows
    labels = [f"{r['dataset']}\n{r['method'] if r['encoder'] == 'ssl' else r['encoder']}" for r in full]
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(full)), 3.5))
    ax.bar(
        range(len(full)),
        [r["accuracy"] for r in full],
        yerr=[r.get("accuracy_std") or 0 for r in full],
        color=["tab:blue" if r["encoder"] == "ssl" else "tab:gray" for r in full],
    )
    ax.set_xticks(range(len(full)), labels, fontsize=7)
    ax.set(ylabel="test accuracy", ylim=(0, 1), title="linear probe, 100 % labels")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-root", action="append", default=[], metavar="DATASET=DIR", help="repeat per dataset"
    )
    p.add_argument("--methods", default=",".join(STUDY_METHODS))
    p.add_argument("--paper-mode", action="store_true", help="the *-paper recipes")
    p.add_argument("--protocols", default="knn,linear")
    p.add_argument("--fractions", default="0.1,1.0")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--baselines", default="random", help="random,imagenet or none")
    p.add_argument("--synthetic-steps", type=int, default=100)
    p.add_argument("--pretrain-args", default="", help="extra flags for every pre-training run")
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    try:
        rows = run(args)
    except (ValueError, RuntimeError) as e:
        log.error("%s", e)
        return 2
    print((Path(args.out) / "results.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
