"""Evaluate an encoder the way the study does, with baselines, label fractions and seeds.

    medssl-evaluate runs/simclr-synthetic-...                 # a pre-training run directory
    medssl-evaluate runs/X/checkpoints/step_0000100           # a checkpoint inside a run
    medssl-evaluate zoo_home/simclr-synthetic                 # an exported folder or a zoo name
    medssl-evaluate RUN --protocols knn,linear,mlp,finetune --fractions 0.01,0.1,1 --seeds 0,1,2
    medssl-evaluate RUN --baselines random,imagenet --weights resnet50_imagenet.safetensors
    medssl-evaluate RUN --dataset imagefolder --data-root DIR  # another dataset: probes on its classes
    medssl-evaluate --compare uni,runs/my-simclr,imagenet,random --dataset imagefolder --data-root DIR
                                                              # which encoder suits my data (train/compare.py)

(In a checkout, `python train/evaluate.py` is the same program.) The API is
medssl_zoo.train.evaluation.evaluate(target, EvalOptions(...)).

Writes ``metrics.json``, ``results.md`` and plots (confusion matrix, ROC, t-SNE, label-fraction curve) into
``--output-dir`` (default: ``<run>/eval``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo
from medssl_zoo.train.evaluation import BASELINES, PROTOCOLS, STUDY_KNN_K, EvalOptions, evaluate
from medssl_zoo.train.reports import markdown_table
from zoo.files import load_yaml
from zoo.host_memory import keep_freed_host_memory

log = logging.getLogger("evaluate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medssl-evaluate",
        usage="%(prog)s TARGET [--protocols P,...] [--fractions F,...] [--seeds S,...] [--baselines B,...] [...]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    data.add_argument(
        "--dataset", help="evaluate on another registered dataset (probes fitted on its classes)"
    )
    data.add_argument(
        "--data-root", help="the dataset folder (default: the run's; another folder draws a fresh split)"
    )
    data.add_argument(
        "--dataset-options",
        type=_mapping,
        default={},
        help="the dataset's options as YAML, e.g. '{flag: pathmnist}'",
    )
    data.add_argument(
        "--manifest",
        help="split manifest CSV to use (default: the run's split.csv when the data is the run's own folder; "
        "'none': draw a fresh seeded split)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--output-dir", type=Path, help="default: <run>/eval, or eval/<name> for an export")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def _mapping(text: str) -> dict:
    value = load_yaml(text, "--dataset-options")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a mapping such as '{{flag: pathmnist}}'")
    return value


def _items(text: str, kind, what: str) -> tuple:
    try:
        return tuple(kind(x) for x in text.split(",") if x and x != "none")
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: {e}") from e


def _comparing(argv) -> bool:
    args = sys.argv[1:] if argv is None else list(argv)
    return any(a == "--compare" or a.startswith("--compare=") for a in args)


def parse_args(argv=None) -> tuple[str, EvalOptions]:
    """(target, options) from the command line — with ``--compare``: (encoders, CompareOptions) from
    :mod:`medssl_zoo.train.compare`'s parser; a bad value is argparse's usage error."""
    if _comparing(argv):
        from medssl_zoo.train.compare import parse_args as parse_compare

        return parse_compare(argv)
    p = build_parser()
    args = p.parse_args(argv)
    try:
        options = EvalOptions(
            protocols=_items(args.protocols, str, "--protocols"),
            fractions=_items(args.fractions, float, "--fractions"),
            seeds=_items(args.seeds, int, "--seeds"),
            baselines=_items(args.baselines, str, "--baselines"),
            weights=args.weights,
            knn_k=args.knn_k,
            knn_euclidean_k=args.knn_euclidean_k,
            mlp_epochs=args.mlp_epochs,
            finetune_epochs=args.finetune_epochs,
            dataset=args.dataset,
            data_root=args.data_root,
            dataset_options=args.dataset_options,
            manifest=args.manifest,
            output_dir=args.output_dir,
            plots=not args.no_plots,
        )
    except (ValueError, argparse.ArgumentTypeError) as e:
        p.error(str(e))
    return args.target, options


def run(parsed: tuple[str, EvalOptions]) -> dict:
    """``evaluate(*parse_args(argv))``."""
    return evaluate(*parsed)


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    if _comparing(argv):
        from medssl_zoo.train.compare import main as compare_main

        return compare_main(argv)
    target, options = parse_args(argv)
    log.info("host memory a step frees (zoo.host_memory): %s", keep_freed_host_memory())
    try:
        result = evaluate(target, options)
    except (ValueError, FileNotFoundError, zoo.ModelNotAvailableError) as e:
        log.error("%s", e)
        return 2
    print(markdown_table(result["summary"]))
    return 0 if result["summary"] else 1


if __name__ == "__main__":
    sys.exit(main())
