"""Embed a whole archive with any zoo encoder, resumably; the output is read by numpy, pandas and ``datasets``.

    medssl-embed vicreg-breast ~/data/archive --out archive-emb              # a folder at any depth
    medssl-embed zoo_home/simclr-synthetic DATA --out OUT --dataset crc      # a dataset root: labels, splits kept
    medssl-embed my-org/encoder pathmnist.npz --out OUT --dtype float16      # a Hub model, a MedMNIST .npz
    accelerate launch --num_processes 4 -m medssl_zoo.embed MODEL DATA --out OUT   # several processes / GPUs

(also ``python -m medssl_zoo.embed``.) Interrupted (Ctrl-C, kill -9, a lost job slot)? Run the same command
again: it continues from the complete shards and ends with what an uninterrupted run writes. The Python API is
``zoo.embed(MODEL, DATA, OUT, **options)``; ``zoo.search(OUT, queries, k)`` finds similar cases.
"""

from __future__ import annotations

import argparse
import logging
import sys

import zoo
from zoo.embeddings import EmbedOptions, embed
from zoo.embeddings.embed import default_threads
from zoo.files import load_yaml
from zoo.host_memory import keep_freed_host_memory

log = logging.getLogger("medssl-embed")


def _mapping(text: str) -> dict:
    value = load_yaml(text, "--dataset-options")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a mapping such as '{{flag: pathmnist}}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medssl-embed",
        usage="%(prog)s MODEL DATA --out DIR [options]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="a zoo name, an exported folder, a Hub repo id (org/name) or a finished run")
    p.add_argument(
        "data", help="a folder of images (any depth, DICOMs too), a dataset root, or a MedMNIST .npz"
    )
    p.add_argument(
        "--out", required=True, help="the output folder (new, empty, or an earlier output to continue)"
    )
    p.add_argument("--dataset", help="the registered dataset DATA is the root of (labels and splits kept)")
    p.add_argument(
        "--dataset-options", type=_mapping, default={}, help="its options as YAML: '{flag: pathmnist}'"
    )
    p.add_argument("--revision", help="the model's Hub branch, tag or commit")
    p.add_argument(
        "--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)"
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=2048,
        help="files per shard, the unit of resuming (default: %(default)s)",
    )
    p.add_argument("--dtype", default="float32", help="float32 or float16 storage (default: %(default)s)")
    p.add_argument(
        "--precision",
        default="auto",
        help="auto (bf16 where it is fast), fp32 or bf16 (default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=int, help="decoding processes per process (default: the cores left, at most 8)"
    )
    p.add_argument(
        "--threads", type=int, help="CPU threads per process (default: the cores divided among the processes)"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: this process's GPU if there is one)")
    p.add_argument(
        "--max-bad",
        type=float,
        default=0.05,
        help="stop when more than this fraction of files cannot be read (default: %(default)s)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an output of another plan (only ever one of ours)"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar with images/s and ETA (default: on a terminal)",
    )
    return p


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    p = build_parser()
    args = p.parse_args(argv)
    options = {
        k: getattr(args, k)
        for k in (
            "dataset",
            "dataset_options",
            "revision",
            "batch_size",
            "shard_size",
            "dtype",
            "precision",
            "workers",
            "threads",
            "device",
            "max_bad",
            "overwrite",
            "progress",
        )
    }
    try:
        options["threads"] = options["threads"] or default_threads()
        EmbedOptions(**options)
    except ValueError as e:
        p.error(str(e).replace("_", "-"))
    log.info("host memory a batch frees (zoo.host_memory): %s", keep_freed_host_memory())
    try:
        embed(args.model, args.data, args.out, **options)
    except (ValueError, OSError, zoo.ModelNotAvailableError) as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; the complete shards are kept: run the same command to continue")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
