"""The encoders a comparison names, each loaded as a :class:`zoo.embeddings.Encoder` with an identity that keys its
cached embeddings.

A name is anything :func:`zoo.embeddings.load_encoder` takes — a catalogue entry (``uni``, ``virchow2``), a zoo
name, an exported folder, a Hub id, a finished run directory — or a baseline: ``random`` (timm's initialisation,
seed 0) or ``imagenet`` (timm's ImageNet weights), optionally ``random:ARCH`` / ``imagenet:ARCH``; without an
architecture a baseline takes the first named encoder's, and the random baseline its preprocessing (so it differs
from that encoder only by its weights, as in the study's comparison).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import timm
import torch
from timm.data import resolve_data_config

import zoo
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


def _baseline(spec: str, reference: Encoder | None) -> Encoder:
    kind, architecture = _parse(spec)
    architecture = architecture or (reference.identity["architecture"] if reference else None)
    if not architecture:
        raise ValueError(
            f"{spec}: no encoder to take the architecture from; name one, e.g. {kind}:vit_small_patch16_224"
        )
    config = dict(reference.data_config) if reference and kind == "random" else dict(IMAGENET_CONFIG)
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
