"""Reproduce the study's table: 4 methods × 3 datasets (+ random-init / ImageNet baselines), one results table.

    medssl-reproduce --data-root breast=~/data/archive --data-root pneumonia=~/data/chest_xray
    medssl-reproduce                      # no datasets here: the same matrix on the synthetic set, small

    medssl-reproduce --data-root crc=~/data/kather --push medssl-zoo   # also publish every cell, pinned in a registry

Each cell pre-trains from its recipe (``train/recipes/<method>-<dataset>[-paper].yaml``), then evaluates with
``train/evaluate.py``; with ``--push ORG`` it is exported, pushed to ``ORG/<cell>``, tagged, and entered into the
registry file (``name: {repo_id, revision: <commit sha>}``, what ``$ZOO_REGISTRY`` reads; kept in its format:
``.json`` stays JSON, ``.yaml``/``.yml`` YAML). Every stage of a cell is recorded when it finishes, with the
settings the cell is made with: finished stages are skipped and interrupted pre-training resumes, so the command can
be re-run until the table is complete (and everything published). A cell made with other settings (another
``--synthetic-steps``, recipe, flag or evaluation protocol) is never reused: the command stops before any work,
naming the cells and settings, and ``--rerun-changed`` redoes them (pre-training only when its settings changed;
the earlier run is renamed aside, never deleted). Writes ``results.csv``, ``results.md`` and ``summary.png`` to
``--out``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from huggingface_hub import HfApi

import zoo
from medssl_zoo.train.config import parse_args as parse_pretrain_args
from medssl_zoo.train.evaluation import EvalOptions, evaluate
from medssl_zoo.train.lifecycle import checkpoint_config
from zoo.files import atomic_savefig, atomic_write_text, read_json
from zoo.optional import available, install_hint
from zoo.registry import STUDY_DATASETS, STUDY_METHODS, ModelEntry, read_registry_file
from zoo.run_dir import EVAL_DIR, is_run, read_run
from zoo.tables import markdown_table

log = logging.getLogger("reproduce")
REGISTRY_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
MAX_STATE_BYTES = 16 * 1024 * 1024  # a cell's record: its settings and a few hundred result rows
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
    cmd = [sys.executable, "-m", "medssl_zoo.train.pretrain", *argv, "--output-dir", str(run_dir), *resume]

    log.info("%s: pre-training (%s)", cell, "resuming" if resume else "new run")
    if subprocess.run(cmd).returncode != 0 or not read_run(run_dir).finished:
        raise RuntimeError(f"{cell}: pre-training did not finish; see the output above (re-run to resume)")


def evaluate_cell(run_dir: Path, args, baselines: str) -> list[dict]:
    """The cell's run evaluated with the study's protocols (the evaluation API, no command line in between)."""
    items = lambda text, kind: tuple(kind(x) for x in text.split(",") if x and x != "none")  # noqa: E731
    options = EvalOptions(
        protocols=items(args.protocols, str),
        fractions=items(args.fractions, float),
        seeds=items(args.seeds, int),
        baselines=items(baselines, str),
        output_dir=run_dir / EVAL_DIR,
        plots=False,
    )
    return evaluate(run_dir, options)["summary"]


def cells(args) -> list[tuple[str, str, str, list[str]]]:
    """(cell name, dataset, method as the table shows it, pre-training argv) for every cell of the matrix; with
    ``--imagenet-init`` each method also starts from timm's ImageNet weights (continued pre-training)."""
    roots = dict(item.split("=", 1) for item in args.data_root)
    unknown = set(roots) - set(STUDY_DATASETS)
    if unknown:
        raise ValueError(
            f"--data-root for unknown datasets {sorted(unknown)}; valid: {', '.join(STUDY_DATASETS)}"
        )
    extra = shlex.split(args.pretrain_args)
    suffix = "-paper" if args.paper_mode else ""
    if roots:
        base = [
            (d, m, ["--recipe", f"{m}-{d}{suffix}", "--data-root", roots[d], "--progress", "false", *extra])
            for d in STUDY_DATASETS
            if d in roots
            for m in args.methods.split(",")
        ]
    else:
        log.warning("no dataset roots given: running the matrix on the synthetic set (small, CPU-friendly)")
        steps = ["--max-steps", str(args.synthetic_steps), "--paper-mode", str(args.paper_mode).lower()]
        base = [
            ("synthetic", m, ["--method", m, *SYNTHETIC, *steps, *extra]) for m in args.methods.split(",")
        ]
    out = []
    for dataset, method, argv in base:
        out.append((f"{method}-{dataset}{suffix}", dataset, method, argv))
        if args.imagenet_init:
            weights = ["--init-weights", str(args.init_weights)] if args.init_weights else []
            init_argv = [*argv, "--init", "imagenet", *weights]
            out.append(
                (f"{method}-{dataset}{suffix}-imagenet-init", dataset, f"{method} (ImageNet init)", init_argv)
            )
    return out


def publish(cell: str, run_dir: Path, args) -> dict:
    """Export the cell's run with its repository in the model card, push it to ``<org>/<cell>``, tag the commit;
    returns the registry entry ``{repo_id, revision}`` (the pushed commit)."""
    from medssl_zoo.hub.export import export_run
    from medssl_zoo.hub.push import push

    repo_id = f"{args.push}/{cell}"
    folder = export_run(run_dir, Path(args.out) / "exports" / cell, repo_id=repo_id)
    api = HfApi(endpoint=args.push_endpoint) if args.push_endpoint else None
    sha = push(folder, repo_id, tag=args.tag, api=api, message=f"{cell}: MedSSL Zoo {zoo.__version__}")
    log.info("%s: published %s@%s", cell, repo_id, sha)
    return {"repo_id": repo_id, "revision": sha}


def registry_format(path: Path) -> str:
    """``json`` or ``yaml``, by the registry file's suffix (how ``zoo.load`` reads it: ``.json`` as JSON, else
    YAML); a suffix this code would not write back in the same format is refused."""
    fmt = REGISTRY_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"--registry {path}: cannot tell its format from the suffix {path.suffix or '(none)'!r}; name it "
            "*.yaml, *.yml or *.json (it is written back in the format its suffix says)"
        )
    return fmt


def read_registry(path: Path) -> dict[str, dict]:
    """The registry file's entries as ``{name: {repo_id, revision[, description]}}``, read as ``zoo.load`` reads
    it (bounded, every entry validated); an absent file is empty."""
    if not (path.exists() or path.is_symlink()):
        return {}
    entries = read_registry_file(path, "--registry file")
    return {name: _entry_fields(entry) for name, entry in entries.items()}


def _entry_fields(entry: ModelEntry) -> dict:
    fields = {"repo_id": entry.repo_id, "revision": entry.revision}
    return {**fields, "description": entry.description} if entry.description else fields


def update_registry(path: Path, name: str, entry: dict) -> None:
    """Add ``name: {repo_id, revision}`` to the registry file ``zoo.load`` reads ($ZOO_REGISTRY), atomically and
    in the file's own format (a JSON registry stays JSON)."""
    fmt = registry_format(path)
    new = _entry_fields(ModelEntry(name, entry["repo_id"], entry.get("revision")))  # validated as read back
    registry = dict(sorted({**read_registry(path), name: new}.items()))
    if fmt == "json":
        text = json.dumps(registry, indent=2) + "\n"
    else:
        text = yaml.safe_dump(registry, sort_keys=False)
    atomic_write_text(path, text)


def registry_path(args) -> Path:
    return Path(args.registry or Path(args.out) / "registry.yaml")


def cell_settings(argv: list[str], run_dir: Path, args, baselines: str) -> dict:
    """What a cell's results depend on: the resolved pre-training configuration (what ``pretrain`` runs, minus the
    keys a resumed run may change: paths, logging, checkpoint cadence) and the evaluation settings."""
    try:
        cfg, _ = parse_pretrain_args([*argv, "--output-dir", str(run_dir)])
    except SystemExit as e:  # argparse has printed the problem
        raise ValueError(f"{run_dir.name}: invalid pre-training flags (--pretrain-args?), see above") from e
    pretraining = checkpoint_config(cfg)  # what a resumed run must share with its checkpoint
    evaluation = {"protocols": args.protocols, "fractions": args.fractions, "seeds": args.seeds}
    return {"pretraining": pretraining, "evaluation": {**evaluation, "baselines": baselines}}


def changed_settings(recorded, settings: dict) -> list[str]:
    """``key: old → new`` for each setting that differs from what a cell recorded (empty when none)."""
    if not isinstance(recorded, dict):
        return ["its settings were not recorded (an older version made it)"]
    changes = []
    for part in ("pretraining", "evaluation"):
        old, new = recorded.get(part) or {}, settings[part]
        for key in sorted(set(old) | set(new)):
            if old.get(key, "(unset)") != new.get(key, "(unset)"):
                changes.append(f"{key}: {old.get(key, '(unset)')} → {new.get(key, '(unset)')}")
    return changes


def read_state(out: Path, cell: str) -> dict:
    """A cell's record (``cells/<cell>.json``): its settings and each finished stage; empty for a new cell."""
    path = out / "cells" / f"{cell}.json"
    if not path.is_file():
        return {}
    state = read_json(path, MAX_STATE_BYTES, "cell record")
    if not isinstance(state, dict):
        raise ValueError(f"cell record {path} is not a JSON object; move it away to redo the cell")
    return state


def _restart(cell: str, out: Path, state: dict, settings: dict) -> dict:
    """The record of a cell whose settings changed (--rerun-changed): a pre-training change sets the earlier run
    aside (renamed, never deleted) and starts over; an evaluation change only re-evaluates."""
    old = state.get("settings")
    if isinstance(old, dict) and old.get("pretraining") == settings["pretraining"]:
        return {k: v for k, v in state.items() if k != "summary"}
    run_dir = out / "runs" / cell
    if run_dir.exists() or run_dir.is_symlink():
        aside = run_dir.with_name(f"{cell}.replaced-{datetime.now():%Y%m%d-%H%M%S}")
        run_dir.rename(aside)
        log.warning("%s: its settings changed; the earlier run is kept as %s", cell, aside)
    return {}


def run_cell(cell: str, argv: list[str], args, baselines: str) -> dict:
    """One cell, resumable: its record holds the settings it runs with (written before any work) and each
    finished stage (evaluation, publication); a cell recorded with other settings is redone (:func:`_restart`)."""
    out = Path(args.out)
    state_file, run_dir = out / "cells" / f"{cell}.json", out / "runs" / cell
    state, settings = read_state(out, cell), cell_settings(argv, run_dir, args, baselines)
    if (state or run_dir.exists()) and changed_settings(state.get("settings"), settings):
        state = _restart(cell, out, state, settings)
    if state.get("settings") != settings:
        state["settings"] = settings
        atomic_write_text(state_file, json.dumps(state))
    if "summary" in state:
        log.info("%s: finished earlier, skipped", cell)
    else:
        pretrain(cell, argv, run_dir)
        state["summary"] = evaluate_cell(run_dir, args, baselines)
        atomic_write_text(state_file, json.dumps(state))
    if args.push and state.get("published", {}).get("repo_id", "").split("/")[0] != args.push:
        state["published"] = publish(cell, run_dir, args)
        atomic_write_text(state_file, json.dumps(state))
    if args.push:
        update_registry(registry_path(args), cell, state["published"])
    return state


def plan(args) -> list[tuple[str, str, str, list[str], str]]:
    """(cell, dataset, method, pre-training argv, baselines) of every cell; the baselines are evaluated with the
    first cell of each dataset."""
    rows, seen = [], set()
    for cell, dataset, method, argv in cells(args):
        rows.append((cell, dataset, method, argv, "none" if dataset in seen else args.baselines))
        seen.add(dataset)
    return rows


def check_cells(matrix: list, args) -> None:
    """Before any work: each cell made earlier must have been made with this command's settings, else one error
    naming the cells and settings (``--rerun-changed`` redoes them); the registry file must be one this code
    can read and write back in its format."""
    out = Path(args.out)
    if args.push:
        registry_format(registry_path(args))
        read_registry(registry_path(args))
    changed = []
    for cell, _, _, argv, baselines in matrix:
        state, run_dir = read_state(out, cell), out / "runs" / cell
        if not state and not run_dir.exists():
            continue  # a new cell
        changes = changed_settings(state.get("settings"), cell_settings(argv, run_dir, args, baselines))
        if changes:
            changed.append(f"{cell} ({'; '.join(changes[:4])}{' …' if len(changes) > 4 else ''})")
    if changed and not args.rerun_changed:
        raise ValueError(
            f"{len(changed)} cell(s) in {out} were made with other settings: {', '.join(changed[:3])}"
            f"{' …' if len(changed) > 3 else ''}. Nothing was run: pass --rerun-changed to redo them (earlier "
            "runs are renamed aside, never deleted), or choose another --out"
        )


def run(args) -> list[dict]:
    out = Path(args.out)
    matrix = plan(args)
    check_cells(matrix, args)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    rows = []
    for cell, dataset, method, argv, baselines in matrix:
        state = run_cell(cell, argv, args, baselines)
        for r in state["summary"]:
            rows.append({"dataset": dataset, "method": method if r["encoder"] == "ssl" else "—", **r})
    write_table(rows, out)
    return rows


def write_table(rows: list[dict], out: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", text.getvalue())
    header = ("dataset", "method", "encoder", "protocol", "labels", "accuracy", "F1 (weighted)", "AUROC")
    table = [
        (
            r["dataset"],
            r["method"],
            r["encoder"],
            r["protocol"],
            f"{r['fraction']:.0%}",
            f"{r['accuracy']:.3f}" + (f" ± {r['accuracy_std']:.3f}" if r.get("accuracy_std") else ""),
            f"{r['f1_weighted']:.3f}",
            f"{r['auroc']:.3f}" if r.get("auroc") is not None else None,
        )
        for r in rows
    ]
    atomic_write_text(out / "results.md", markdown_table(header, table) + "\n")
    _plot(rows, out / "summary.png")


def _plot(rows: list[dict], path: Path) -> None:
    if not available("matplotlib"):
        log.warning("no summary.png: matplotlib is not installed (%s)", install_hint("matplotlib"))
        return
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
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    p = argparse.ArgumentParser(
        prog="medssl-reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = p.add_argument_group("the matrix")
    data.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DATASET=DIR",
        help=f"a dataset's folder, repeated per dataset ({', '.join(STUDY_DATASETS)}); none: the synthetic set",
    )
    data.add_argument(
        "--methods", default=",".join(STUDY_METHODS), help="comma-separated (default: %(default)s)"
    )
    data.add_argument(
        "--paper-mode", action="store_true", help="the *-paper recipes (the original code exactly)"
    )
    data.add_argument(
        "--synthetic-steps",
        type=int,
        default=100,
        help="pre-training steps per synthetic cell (default: 100)",
    )
    data.add_argument("--pretrain-args", default="", help="extra flags for every pre-training run")
    data.add_argument(
        "--imagenet-init",
        action="store_true",
        help="also an 'ImageNet init + SSL' cell per method (continued pre-training from timm's weights)",
    )
    data.add_argument(
        "--init-weights", type=Path, help="ImageNet weights (safetensors) for --imagenet-init offline"
    )
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--protocols", default="knn,linear", help="see evaluate --help (default: %(default)s)")
    ev.add_argument("--fractions", default="0.1,1.0", help="labelled fractions (default: %(default)s)")
    ev.add_argument("--seeds", default="0,1,2", help="seeds per fraction (default: %(default)s)")
    ev.add_argument("--baselines", default="random", help="random,imagenet or none (default: random)")
    pub = p.add_argument_group(
        "publishing (each finished cell exported and pushed as ORG/<method>-<dataset>)"
    )
    pub.add_argument(
        "--push", metavar="ORG", help="push every cell to this Hub organisation (token: HF_TOKEN)"
    )
    pub.add_argument(
        "--tag", default=f"v{zoo.__version__}", help="tag of the pushed commits (default: %(default)s)"
    )
    pub.add_argument(
        "--registry",
        type=Path,
        help="registry file to update, name: {repo_id, revision}, kept in its format by its suffix (.yaml, .yml "
        "or .json; default: OUT/registry.yaml; use as $ZOO_REGISTRY)",
    )
    pub.add_argument(
        "--push-endpoint", help="upload to this Hub-compatible server (default: HF_ENDPOINT / the Hub)"
    )
    p.add_argument("--out", default="results", help="output folder (default: %(default)s)")
    p.add_argument(
        "--rerun-changed",
        action="store_true",
        help="redo the cells made earlier with other settings (pre-training only when its settings changed; the "
        "earlier run is renamed aside, never deleted); without it such cells are an error naming the settings",
    )
    args = p.parse_args(argv)
    try:
        rows = run(args)
    except (ValueError, RuntimeError) as e:  # PushError is a RuntimeError: one line, then re-run to resume
        log.error("%s", e)
        return 2
    print((Path(args.out) / "results.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
