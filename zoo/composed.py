"""A classifier published as its head plus a pinned reference to a catalogue encoder, composed by :func:`zoo.load`.

An encoder whose licence forbids redistributing its weights or anything derived from them (UNI, UNI2-h,
Virchow2: CC-BY-NC-ND-4.0) is never re-published. A probe fitted on it is published as ``head.safetensors``
(``weight``: classes x width, ``bias``: classes; the linear probe with its standardisation folded in) and a
``config.json`` whose ``zoo.base_model`` names the catalogue entry, its repository and the commit the head was
fitted on. Loading it downloads the encoder from its own repository, under its own terms and gate (the user's own
access request and token), builds it from the catalogue's trusted code, and puts the head on top. The reference
must name an entry of this catalogue with the same repository; a config cannot bring kwargs, code or another
repository with it. Like a full export, it may carry an out-of-distribution reference (``ood.safetensors``, named
with its sha256 in ``zoo.ood``) and a task with per-label thresholds (:mod:`zoo.task`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from zoo.catalogue import CatalogueEntry, catalogue_entry
from zoo.hub_format import HEAD_FILE
from zoo.revision import check_commit
from zoo.safetensors_header import read_header
from zoo.task import attach, read_ood

__all__ = ["HeadOnEncoder", "base_reference", "is_head_only", "load_composed"]


class HeadOnEncoder(nn.Module):
    """``head(encoder(x))``: a catalogue encoder (its own pooling and preprocessing) and a linear head."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.num_features = int(encoder.num_features)
        self.num_classes = int(getattr(head, "out_features", 0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # N x num_features: the encoder pools its own tokens

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """timm's split (``forward_head(forward_features(x), pre_logits=True)`` = the pooled features the head
        reads, which :mod:`zoo.task`'s out-of-distribution score uses)."""
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int = 0, *_, **__) -> None:
        if num_classes:
            raise ValueError("a published head cannot be replaced by another; fit a new probe on the encoder")
        self.head, self.num_classes = nn.Identity(), 0


def is_head_only(config: dict) -> bool:
    return bool((config.get("zoo") or {}).get("head_only"))


def base_reference(config: dict, folder: Path) -> tuple[CatalogueEntry, str]:
    """(the catalogue entry, the pinned commit) a head-only export refers to; ``ValueError`` naming what is wrong."""
    base = (config.get("zoo") or {}).get("base_model")
    where = folder / "config.json"
    if not isinstance(base, dict) or not isinstance(base.get("name"), str):
        raise ValueError(f"{where}: a head-only export must name its base model (zoo.base_model.name)")
    entry = catalogue_entry(base["name"])
    if entry is None:
        raise ValueError(
            f"{where}: its base model {base['name'][:100]!r} is not in this catalogue (`medssl-zoo list`); upgrade "
            "medssl-zoo, or re-export the head on a catalogue encoder"
        )
    if base.get("repo_id") != entry.repo_id:
        raise ValueError(
            f"{where}: base model {entry.name} is {entry.repo_id}, not {str(base.get('repo_id'))[:100]!r}; "
            "re-export the head"
        )
    commit = check_commit(str(base.get("revision")), f"{where}: the base model's pinned revision")
    return entry, commit


def _head(folder: Path, classes: int, width: int) -> nn.Linear:
    """The linear head, its header checked against (classes, width) before any tensor is read."""
    path = folder / HEAD_FILE
    if not path.is_file() or path.is_symlink():
        raise ValueError(
            f"{folder}: no {HEAD_FILE} (a head-only export holds its linear head there); re-export"
        )
    expected = {"weight": (classes, width), "bias": (classes,)}
    declared = {k: tuple(shape) for k, (_, shape) in read_header(path).items()}
    if declared != expected:
        raise ValueError(
            f"{path}: holds {declared}, expected {expected} for the base model; re-export the head"
        )
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is corrupt or truncated ({e}); download or export it again") from e
    head = nn.Linear(width, classes)
    head.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return head


def load_composed(
    folder: Path, config: dict, load_encoder: Callable[[str, str], nn.Module], features_only: bool
) -> nn.Module:
    """The classifier of a head-only export (``features_only``: its encoder), the encoder loaded by
    ``load_encoder(name, commit)`` from the catalogue entry the config refers to; with the task, thresholds and
    out-of-distribution reference of a full export (:func:`zoo.task.attach`: the reference scores the pooled
    features the head reads)."""
    entry, commit = base_reference(config, folder)
    classes = config["num_classes"]
    if config.get("num_features") != entry.width:
        raise ValueError(
            f"{folder / 'config.json'}: num_features {config.get('num_features')!r} is not {entry.name}'s width "
            f"{entry.width}; re-export the head"
        )
    # the head and the reference checked before the big download (header, size, sha256, values)
    head = None if features_only else _head(folder, classes, entry.width)
    ood = read_ood(folder, config, entry.width)
    encoder = load_encoder(entry.name, commit)
    model = encoder if features_only else HeadOnEncoder(encoder, head)
    model.pretrained_cfg = {**encoder.pretrained_cfg, "num_classes": 0 if features_only else classes}
    model.label_names = [] if features_only else list(config.get("label_names") or [])
    model.zoo_metadata = {**dict(config.get("zoo") or {}), "base_model": encoder.zoo_metadata["base_model"]}
    if not features_only:
        model.source = str(folder)
    attach(model, folder, config, ood)
    return model
