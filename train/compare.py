"""Which encoder suits my data: several encoders compared on one labelled dataset, in one command.

    medssl-evaluate --compare uni,virchow2,runs/my-simclr,imagenet,random --dataset imagefolder --data-root DIR
    medssl-evaluate --compare runs/simclr-synthetic-…,random --dataset synthetic

Each encoder embeds the data once (:mod:`zoo.embeddings.cache`: the embeddings format in ``$ZOO_CACHE``, keyed by
encoder + revision + weights, files, split and preprocessing; a second comparison computes nothing); the
protocols of :mod:`medssl_zoo.train.compare_protocols` then run on the embeddings, on the dataset's split (its
official test / val folders, else a seeded stratified split, grouped with ``--dataset-options '{grouped: true}'``).
The leaderboard (:mod:`medssl_zoo.train.leaderboard`) is written as Markdown, CSV and JSON with a few-shot plot.
The API is :func:`compare`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medssl_zoo.train.compare_encoders import load_encoders
from medssl_zoo.train.compare_protocols import Split, run_protocols
from medssl_zoo.train.leaderboard import write_leaderboard
from zoo.data import get_dataset_spec
from zoo.data import synthetic as synthetic_tiles
from zoo.data.cache import cache_dir
from zoo.embeddings.cache import CachedEmbeddings, cached_embeddings
from zoo.embeddings.embed import PRECISIONS
from zoo.files import atomic_folder, file_lock
from zoo.probe import shot_counts

__all__ = ["CompareOptions", "compare"]

log = logging.getLogger("evaluate")
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.01, 0.1)


@dataclass(frozen=True)
class CompareOptions:
    """How to compare (checked on creation). ``shots`` None: 1, 2, 4, … up to the smallest class of train;
    ``fractions`` None: 1 % and 10 % where every class keeps an example."""

    dataset: str = "imagefolder"
    data_root: str | None = None
    dataset_options: dict = field(default_factory=dict)
    knn_k: int = 20
    shots: tuple[int, ...] | None = None
    episodes: int = 20
    seed: int = 0
    fractions: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    output_dir: Path | None = None
    plots: bool = True
    batch_size: int = 64
    device: str | None = None
    workers: int | None = None
    precision: str = "auto"

    def __post_init__(self):
        for name in ("knn_k", "episodes", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive whole number, got {getattr(self, name)!r}")
        if self.shots is not None and not all(isinstance(n, int) and n > 0 for n in self.shots):
            raise ValueError(f"shots must be positive whole numbers, got {list(self.shots)}")
        if self.fractions is not None and not all(0 < f <= 1 for f in self.fractions):
            raise ValueError(f"label fractions must be in (0, 1], got {list(self.fractions)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if get_dataset_spec(self.dataset).kind == "unlabelled":
            raise ValueError(
                f"{self.dataset} has no labels to compare on; give a labelled dataset (imagefolder)"
            )
        if self.data_root is None and self.dataset != "synthetic":
            raise ValueError(f"--dataset {self.dataset} needs --data-root DIR")


def synthetic_archive(options: dict) -> Path:
    """The synthetic tiles (``num_images``, ``size``, ``seed``) as PNG class folders in ``$ZOO_CACHE/synthetic``,
    written once (the embeddings cache keys files, so the tiles must be files)."""
    spec = get_dataset_spec("synthetic")
    params = {**spec.options, **{k: v for k, v in options.items() if k in spec.options}}
    name = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "synthetic" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f"{name}.lock"):
        if folder.is_dir():
            return folder
        images, labels = synthetic_tiles.generate(params["num_images"], params["size"], params["seed"])
        with atomic_folder(folder) as tmp:
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                target = tmp / spec.class_names[label]
                target.mkdir(exist_ok=True)
                Image.fromarray(image).save(target / f"tile{i:06d}.png")
    return folder


def _data(options: CompareOptions) -> tuple[Path, str, dict]:
    """(root, dataset, options) the embeddings are computed from."""
    if options.dataset != "synthetic":
        return Path(options.data_root), options.dataset, dict(options.dataset_options)
    spec = get_dataset_spec("synthetic")
    rest = {k: v for k, v in options.dataset_options.items() if k not in spec.options}
    return synthetic_archive(options.dataset_options), "imagefolder", {"split_policy": "random", **rest}


def _aligned(found: list[CachedEmbeddings]) -> tuple[list[str], list[str], list[dict]]:
    """(paths, splits, rows by path per encoder): the files every encoder embedded, in path order."""
    by_path = [{r["path"]: i for i, r in enumerate(c.records)} for c in found]
    common = sorted(set.intersection(*(set(p) for p in by_path)))
    dropped = max(len(p) for p in by_path) - len(common)
    if dropped:
        log.warning(
            "%d files were embedded by some encoders only (unreadable for the others): left out", dropped
        )
    first = {r["path"]: r for r in found[0].records}
    return common, [first[p]["split"] for p in common], by_path


def _splits(found: list[CachedEmbeddings]) -> list[Split]:
    """Each encoder's train / val / test features on the same rows; labels from the class names."""
    paths, splits, by_path = _aligned(found)
    names = found[0].label_names
    first = {r["path"]: r for r in found[0].records}
    labels = torch.tensor([names.index(first[p]["label"]) for p in paths])
    where = {s: [i for i, split in enumerate(splits) if split == s] for s in SPLITS}
    empty = [s for s in SPLITS if not where[s]]
    if empty:
        raise ValueError(
            f"the data has no {', '.join(empty)} images; give a dataset with train/val/test or a random split "
            "(--dataset-options '{split_policy: random}')"
        )
    out = []
    for cached, rows in zip(found, by_path, strict=True):
        x = torch.from_numpy(np.ascontiguousarray(cached.rows[[rows[p] for p in paths]]))
        out.append(Split({s: x[where[s]] for s in SPLITS}, {s: labels[where[s]] for s in SPLITS}, len(names)))
    return out


@dataclass(frozen=True)
class _Settings:
    knn_k: int
    shots: tuple[int, ...]
    episodes: int
    seed: int
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]


def _settings(options: CompareOptions, train_labels: torch.Tensor) -> _Settings:
    counts = torch.bincount(train_labels)
    smallest = int(counts[counts > 0].min())
    fractions = options.fractions
    if fractions is None:  # the defaults that leave every class at least one example
        fractions = tuple(f for f in DEFAULT_FRACTIONS if round(f * smallest) >= 1)
    shots = options.shots if options.shots is not None else tuple(shot_counts(train_labels))
    return _Settings(options.knn_k, shots, options.episodes, options.seed, fractions, options.seeds)


def compare(encoders: list[str], options: CompareOptions) -> dict:
    """Compare ``encoders`` (see :mod:`medssl_zoo.train.compare_encoders`) on ``options``' data; the result is also
    written to the output folder (default ``compare/<dataset>``)."""
    loaded = load_encoders(list(encoders))  # every name checked before any work
    root, dataset, dataset_options = _data(options)
    embed_options = {
        "batch_size": options.batch_size,
        "device": options.device,
        "workers": options.workers,
        "precision": options.precision,
    }
    found = [cached_embeddings(e, root, dataset, dataset_options, **embed_options) for e in loaded]
    splits = _splits(found)
    settings = _settings(options, splits[0].y["train"])
    entries = []
    for encoder, cached, data in zip(loaded, found, splits, strict=True):
        log.info("%s: %d-d embeddings, running the protocols", encoder.name, encoder.width)
        entries.append(
            {
                "encoder": encoder.name,
                "identity": encoder.identity,
                "width": encoder.width,
                "images_per_s": cached.images_per_s,
                "computed": cached.computed,
                "embeddings": str(cached.folder),
                "results": run_protocols(data, settings),
            }
        )
    result = {
        "data": str(root),
        "dataset": dataset,
        "dataset_options": dataset_options,
        "classes": found[0].label_names,
        "counts": {s: len(splits[0].y[s]) for s in SPLITS},
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(settings).items()},
        "encoders": entries,
    }
    out = Path(options.output_dir or Path("compare") / options.dataset)
    write_leaderboard(result, out, options.plots)
    return result


def _items(text: str | None, kind) -> tuple | None:
    return None if text is None else tuple(kind(x) for x in text.split(",") if x)


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="medssl-evaluate --compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--compare", required=True, help="comma-separated encoders (catalogue / zoo names, folders, "
                   "runs, random[:ARCH], imagenet[:ARCH])")  # fmt: skip
    p.add_argument("--dataset", default="imagefolder", help="a labelled dataset (default: %(default)s)")
    p.add_argument("--data-root", help="the dataset's folder (not needed for synthetic)")
    p.add_argument(
        "--dataset-options", default="{}", help="YAML, e.g. '{grouped: true}' (patient / slide split)"
    )
    p.add_argument(
        "--knn-k", type=int, default=20, help="neighbours of the cosine kNN (default: %(default)s)"
    )
    p.add_argument("--shots", help="few-shot sizes per class, e.g. 1,2,4,8 (default: 1, 2, 4, … up to the "
                   "smallest class)")  # fmt: skip
    p.add_argument("--episodes", type=int, default=20, help="episodes per shot count (default: %(default)s)")
    p.add_argument(
        "--fractions", help="label fractions of train (default: 0.01,0.1 where every class keeps one)"
    )
    p.add_argument("--seeds", default="0,1,2", help="seeds of each label fraction (default: %(default)s)")
    p.add_argument(
        "--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1… (default: a GPU if there is one)")
    p.add_argument(
        "--precision", default="auto", help="auto (bf16 where it is fast), fp32 or bf16 (default: auto)"
    )
    p.add_argument("--output-dir", type=Path, help="default: compare/<dataset>")
    p.add_argument("--no-plots", action="store_true", help="skip fewshot.png")
    return p


def parse_args(argv=None) -> tuple[list[str], CompareOptions]:
    """(encoders, options) from the command line; a bad value is argparse's usage error."""
    from zoo.files import load_yaml

    p = build_parser()
    args = p.parse_args(argv)
    try:
        dataset_options = load_yaml(args.dataset_options, "--dataset-options")
        if not isinstance(dataset_options, dict):
            raise ValueError(
                f"--dataset-options {args.dataset_options!r} is not a mapping such as '{{grouped: true}}'"
            )
        options = CompareOptions(
            dataset=args.dataset,
            data_root=args.data_root,
            dataset_options=dataset_options,
            knn_k=args.knn_k,
            shots=_items(args.shots, int),
            episodes=args.episodes,
            fractions=_items(args.fractions, float),
            seeds=_items(args.seeds, int),
            output_dir=args.output_dir,
            plots=not args.no_plots,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
        )
    except ValueError as e:
        p.error(str(e))
    return [s.strip() for s in args.compare.split(",") if s.strip()], options


def main(argv=None) -> int:
    """``medssl-evaluate --compare …``: the leaderboard printed, 2 with one line on a bad input."""
    import zoo

    encoders, options = parse_args(argv)
    try:
        result = compare(encoders, options)
    except (ValueError, FileNotFoundError, zoo.ModelNotAvailableError) as e:
        log.error("%s", e)
        return 2
    out = Path(options.output_dir or Path("compare") / options.dataset)
    print((out / "leaderboard.md").read_text())
    return 0 if result["encoders"] else 1
