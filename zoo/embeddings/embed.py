"""``zoo.embed``: embed a whole archive with any zoo encoder, resumably, in one or several processes.

The sorted file list is cut into shards of ``shard_size`` files; process ``r`` of ``W`` (``RANK`` and
``WORLD_SIZE``, as ``accelerate launch`` and ``torchrun`` set them) embeds the shards ``k`` with ``k % W == r``
that are not complete yet, each written whole; whoever then finds every shard complete writes the index, the
report of skipped files and the final ``meta.json``. No process waits for another or talks to it, so ``kill -9``
at any moment and the same command continues from the complete shards, and W processes write exactly what one
writes (same shards, same batches in each). Peak memory is set by the batch, the prefetch and one shard, not by
the archive.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoo.embeddings.encoder import Encoder, load_encoder
from zoo.embeddings.loop import LoopSettings, embed_shards, shards_of
from zoo.embeddings.output import claim, complete_shards, finish, output_folder, report_skipped
from zoo.embeddings.plan import Plan, scan
from zoo.embeddings.store import Embeddings
from zoo.runtime import bf16_is_fast

__all__ = ["EmbedOptions", "default_threads", "embed", "process_rank"]

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float16": torch.float16}
PRECISIONS = ("auto", "fp32", "bf16")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed (each checked on creation; the flags of ``medssl-embed`` have the same names).

    Attributes:
        dataset: a registered dataset whose root ``data`` is (labels and splits kept); default: ``folder`` for a
            folder, ``medmnist`` for a ``.npz``.
        dataset_options: the dataset's options (e.g. ``{"flag": "pathmnist"}``).
        revision: the model's Hub revision (branch, tag or commit).
        batch_size, shard_size: images per forward pass, files per shard (part of the output's plan).
        dtype: ``float32`` or ``float16`` storage. precision: ``auto`` (bf16 autocast where it is fast), ``fp32``
            or ``bf16``.
        workers: decoding processes per embedding process (default: the cores left, at most 8).
        threads: CPU threads of the forward pass (``torch.set_num_threads``; default: left as they are).
        device: ``cpu``, ``cuda``, ``cuda:1``…; default: this process's GPU if there is one.
        max_bad: the fraction of unreadable files above which the run stops.
        overwrite: replace an output of another plan (only ever an output this project wrote).
        progress: a progress bar (None: only on a terminal).
    """

    dataset: str | None = None
    dataset_options: dict = field(default_factory=dict)
    revision: str | None = None
    batch_size: int = 64
    shard_size: int = 2048
    dtype: str = "float32"
    precision: str = "auto"
    workers: int | None = None
    threads: int | None = None
    device: str | None = None
    max_bad: float = 0.05
    overwrite: bool = False
    progress: bool | None = None

    def __post_init__(self):
        _check(
            isinstance(self.batch_size, int) and 1 <= self.batch_size <= 65536,
            f"batch_size must be 1..65536, got {self.batch_size!r}",
        )
        _check(
            isinstance(self.shard_size, int) and 1 <= self.shard_size <= 10**7,
            f"shard_size must be 1..10^7 files, got {self.shard_size!r}",
        )
        _check(self.dtype in DTYPES, f"dtype must be float32 or float16, got {self.dtype!r}")
        _check(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        _check(
            self.workers is None or (isinstance(self.workers, int) and 0 <= self.workers <= 64),
            f"workers must be 0..64, got {self.workers!r}",
        )
        _check(
            self.threads is None or (isinstance(self.threads, int) and 1 <= self.threads <= 1024),
            f"threads must be 1..1024, got {self.threads!r}",
        )
        _check(
            isinstance(self.max_bad, int | float) and math.isfinite(self.max_bad) and 0 <= self.max_bad <= 1,
            f"max_bad must be a fraction in [0, 1], got {self.max_bad!r}",
        )
        _check(isinstance(self.dataset_options, dict), "dataset_options must be a mapping")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    try:
        return int(text) if text else default
    except ValueError as e:
        raise ValueError(
            f"{name}={text!r} is not a whole number; unset it or launch with accelerate / torchrun"
        ) from e


def process_rank() -> tuple[int, int]:
    """(rank, world size) from ``RANK`` / ``WORLD_SIZE`` (set by ``accelerate launch`` and ``torchrun``)."""
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world}); check the launcher")
    return rank, world


def _device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if torch.cuda.is_available() and not use_cpu:
        return torch.device("cuda", _env_int("LOCAL_RANK", 0) % torch.cuda.device_count())
    return torch.device("cpu")


def default_threads() -> int:
    """CPU threads per process as pre-training uses them: the cores divided among this machine's processes."""
    return max(1, (os.cpu_count() or 1) // max(1, _env_int("LOCAL_WORLD_SIZE", 1)))


def _workers(requested: int | None) -> int:
    if requested is not None:
        return requested
    cores = (os.cpu_count() or 1) // max(1, _env_int("LOCAL_WORLD_SIZE", 1))
    return max(1, min(8, cores - 1))


def _key(encoder: Encoder, plan: Plan, precision: str, options: EmbedOptions) -> dict:
    """What the output's bytes depend on: a run with another key writes other embeddings."""
    preprocessing = {
        **encoder.data_config,
        "reader": "zoo.data.read_image",
        "transform": "zoo.data.eval_transform",
    }
    return {
        "model": encoder.identity,
        "preprocessing": preprocessing,
        "precision": precision,
        "dtype": options.dtype,
        "shard_size": options.shard_size,
        "files": {"count": plan.count, "sha256": hashlib.sha256(plan.files_text.encode()).hexdigest()},
    }


def _about(encoder: Encoder, plan: Plan, options: EmbedOptions) -> dict:
    """What the output records beside its key (for people and for tools that read it)."""
    ds = plan.dataset
    return {
        "model_name": encoder.name,
        "data": {
            "root": str(plan.root),
            "dataset": ds.spec.name,
            "options": dict(options.dataset_options),
            "label_names": list(ds.class_names) if plan.labelled else [],
        },
    }


def _embed_own(encoder: Encoder, plan: Plan, out: Path, meta: dict, settings: LoopSettings, options) -> None:
    """Embed this process's missing shards; stop once more files were unreadable than ``max_bad`` allows."""
    rank, world = process_rank()
    done = complete_shards(out, meta)
    every = shards_of(plan.count, options.shard_size)
    mine = [s for s in every if s.index % world == rank and s.index not in done]
    log.info("%d of %d shards complete; this process embeds %d", len(done), len(every), len(mine))
    bad = sum(len(h.skipped) for k, h in done.items() if k % world == rank)
    model = encoder.module.to(settings.device).to(memory_format=torch.channels_last).eval()
    for header in embed_shards(model, plan, encoder.data_config, mine, out, settings):
        bad += len(header.skipped)
        if bad > options.max_bad * plan.count:  # already more than the whole archive may have: stop now
            report_skipped(
                out, meta, complete_shards(out, meta), options.max_bad
            )  # raises, naming the report


def embed(model: str | Path | Encoder, data: str | Path, out: str | Path, **options) -> Embeddings | None:
    """Embed every image of ``data`` with ``model`` into the output folder ``out`` (see :mod:`zoo.embeddings`).

    ``model``: anything :func:`zoo.load` takes, a finished run, or an :class:`Encoder` already loaded; ``data``: a folder (any depth), a dataset root
    (``dataset=NAME``) or a MedMNIST ``.npz``; ``options``: :class:`EmbedOptions`. Returns the output, opened,
    once complete — or None in a process that finished its shards while others still embed theirs.

    Example:
        >>> emb = zoo.embed("simclr-synthetic", "archive/", "archive-embeddings/")
        >>> emb.search(query, k=5)
    """
    opts = EmbedOptions(**options)
    rank, world = process_rank()
    folder = output_folder(out)
    encoder = model if isinstance(model, Encoder) else load_encoder(model, opts.revision)
    plan = scan(data, opts.dataset, opts.dataset_options, channels=encoder.data_config["input_size"][0])
    device = _device(opts.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # pinned batches and the shard buffer on this process's GPU
    elif opts.threads:
        torch.set_num_threads(opts.threads)
    bf16 = opts.precision == "bf16" or (opts.precision == "auto" and bf16_is_fast(device.type))
    key = _key(encoder, plan, "bf16" if bf16 else "fp32", opts)
    meta = claim(folder, key, plan, _about(encoder, plan, opts), opts.overwrite)
    if not meta["complete"]:
        label = f" (process {rank + 1} of {world})" if world > 1 else ""
        settings = LoopSettings(
            meta["plan"],
            device,
            bf16,
            opts.batch_size,
            _workers(opts.workers),
            DTYPES[opts.dtype],
            opts.progress,
            label,
        )
        _embed_own(encoder, plan, folder, meta, settings, opts)
    final = finish(folder, meta["plan"], opts.max_bad)
    if final is None:
        log.info("this process's shards are written; the output is complete once the other processes finish")
        return None
    log.info(
        "%s: %d embeddings of %d files (%d skipped)", folder, final["rows"], plan.count, final["skipped"]
    )
    return Embeddings(folder)
