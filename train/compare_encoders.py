"""The encoders a comparison names, each loaded as a :class:`zoo.embeddings.Encoder` with an identity that keys its
cached embeddings.

A name is anything :func:`zoo.embeddings.load_encoder` takes — a catalogue entry (``uni``, ``virchow2``), a zoo
name, an exported folder, a Hub id, a finished run directory — or a baseline: ``random`` (timm's initialisation,
seed 0) or ``imagenet`` (timm's ImageNet weights), optionally ``random:ARCH`` / ``imagenet:ARCH`` (``random:ENTRY``
for a catalogue entry: its own constructor); without an architecture a baseline takes the first named encoder's —
for the random baseline of a catalogue encoder its entry's constructor (kwargs, pooling), built without downloading
anything — and the random baseline its preprocessing (so it differs from that encoder only by its weights, as in
the study's comparison).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import timm
import torch
from timm.data import resolve_data_config

import zoo
from zoo.catalogue import catalogue_entry
from zoo.embeddings.encoder import Encoder, load_encoder, pooling_of
from zoo.messages import first_line

__all__ = ["BASELINES", "load_encoders"]

BASELINES = ("random", "imagenet")
IMAGENET_CONFIG = {
    "input_size": [3, 224, 224],
    "crop_pct": 0.875,
    "interpolation": "bicubic",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def _weights_digest(module: torch.nn.Module) -> str:
    """sha256 of the state dict's names and bytes: what identifies weights that no file holds."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _parse(spec: str) -> tuple[str, str | None]:
    kind, _, architecture = spec.partition(":")
    return kind, architecture or None


def _catalogue_name(reference: Encoder) -> str | None:
    """The catalogue entry ``reference`` was built from (a catalogue encoder, or a head-only export's), if any:
    its trusted constructor (kwargs, pooling) is what the random baseline must rebuild, since the bare timm
    architecture name alone gives a different model (another width, pooling, no registers or SwiGLU)."""
    base = (getattr(reference.module, "zoo_metadata", None) or {}).get("base_model") or {}
    entry = catalogue_entry(base["name"]) if isinstance(base.get("name"), str) else None
    return entry.name if entry and entry.architecture == reference.identity["architecture"] else None


def _random_config(architecture: str, reference: Encoder | None) -> dict:
    """The random baseline's preprocessing: a catalogue entry's own (the input size its constructor is built
    for), else the reference encoder's, else ImageNet's."""
    entry = catalogue_entry(architecture)
    if entry is not None:
        cfg = entry.pretrained_cfg
        keys = ("crop_pct", "interpolation", "mean", "std")
        return {
            "input_size": list(cfg["input_size"]),
            **{k: list(cfg[k]) if k in ("mean", "std") else cfg[k] for k in keys},
        }
    return dict(reference.data_config) if reference else dict(IMAGENET_CONFIG)


def _baseline(spec: str, reference: Encoder | None) -> Encoder:
    kind, architecture = _parse(spec)
    if not architecture and reference and kind == "random":
        architecture = _catalogue_name(reference)  # random:ENTRY: the entry's own constructor, random weights
    architecture = architecture or (reference.identity["architecture"] if reference else None)
    if not architecture:
        raise ValueError(
            f"{spec}: no encoder to take the architecture from; name one, e.g. {kind}:vit_small_patch16_224"
        )
    config = _random_config(architecture, reference) if kind == "random" else dict(IMAGENET_CONFIG)
    size = config["input_size"][-1]
    try:
        torch.manual_seed(0)
        module = zoo.create_backbone(architecture, pretrained=kind == "imagenet", image_size=size)
    except (OSError, RuntimeError) as e:  # no network: huggingface_hub / urllib errors
        raise ValueError(
            f"{spec} needs timm's ImageNet weights of {architecture}, which cannot be downloaded here "
            f"({type(e).__name__}: {first_line(e)}); download them on a connected machine (they "
            "are cached under HF_HOME) or leave the baseline out"
        ) from e
    if kind == "imagenet":
        resolved = resolve_data_config(model=module)
        config = {**IMAGENET_CONFIG, **{k: resolved[k] for k in IMAGENET_CONFIG if k in resolved}}
        config["input_size"] = list(config["input_size"])
    identity = {
        "architecture": architecture,
        "revision": f"{kind} (timm {timm.__version__})",
        "weights_sha256": _weights_digest(module),
        "pooling": pooling_of(module),
        "width": int(module.num_features),
    }
    return Encoder(module.eval(), spec, config, identity)


def load_encoders(specs: list[str]) -> list[Encoder]:
    """Every encoder ``specs`` name, in order (each name once); a bad one is a ``ValueError`` before any work."""
    duplicates = sorted({s for s in specs if specs.count(s) > 1})
    if duplicates:
        raise ValueError(f"--compare names {duplicates} twice; name each encoder once")
    if len(specs) < 2:
        raise ValueError("--compare needs at least two encoders, e.g. --compare my-run,random")
    named = {s: replace(load_encoder(s), name=s) for s in specs if _parse(s)[0] not in BASELINES}
    reference = next(iter(named.values()), None)
    return [named[s] if s in named else _baseline(s, reference) for s in specs]
