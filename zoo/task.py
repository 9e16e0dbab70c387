"""What an exported classifier's outputs mean, and how unlike its training data an input is: the task type, the
per-label thresholds and the out-of-distribution reference, recorded in config.json's ``zoo`` block and attached
by :func:`zoo.load` to the model it returns.

- ``model.task``: ``multiclass`` (one class per image: ``softmax``) or ``multilabel`` (each label present or not:
  ``sigmoid`` of its own logit). Exports made before the task was recorded are multi-class.
- ``model.thresholds``: a multi-label model's per-label probability thresholds (chosen on val for the best F1);
  None for a multi-class model.
- ``model.ood``: the :class:`zoo.ood.OODReference` (None for an export made before references existed, which
  ``model.ood_note`` says), and ``model.ood_score(x)``: each image's score (N), to compare with
  ``model.ood.threshold``.
- :func:`predict`: the logits and the score from one forward of the encoder (the demo's per-upload call).
"""

from __future__ import annotations

import math
import weakref
from pathlib import Path

import torch

__all__ = [
    "MULTICLASS",
    "MULTILABEL",
    "NO_REFERENCE",
    "TASKS",
    "attach",
    "check_block",
    "pooled_features",
    "predict",
    "probabilities",
    "read_ood",
    "scored_head",
]

MULTICLASS, MULTILABEL = "multiclass", "multilabel"
TASKS = (MULTICLASS, MULTILABEL)
NO_REFERENCE = (
    "this export has no out-of-distribution reference (it was made before MedSSL Zoo fitted one); re-export its run "
    "to get one"
)


def check_block(zoo_block: dict, num_classes: int) -> None:
    """config.json's ``zoo.task``, ``zoo.thresholds`` and ``zoo.ood``, if present: a known task, one threshold in
    [0, 1] per label of a multi-label model (none otherwise), a valid reference block."""
    from zoo.ood import check_block as check_ood

    task = zoo_block.get("task", MULTICLASS)
    if task not in TASKS:
        raise ValueError(f"zoo.task must be one of {', '.join(TASKS)}, got {str(task)[:40]!r}")
    thresholds = zoo_block.get("thresholds")
    if task == MULTILABEL:
        if not (
            isinstance(thresholds, list)
            and len(thresholds) == num_classes
            and all(_is_number(t) and 0 <= t <= 1 for t in thresholds)
        ):
            raise ValueError(f"zoo.thresholds must be {num_classes} numbers in [0, 1], one per label")
    elif thresholds is not None:
        raise ValueError("zoo.thresholds belong to multi-label models only")
    if "ood" in zoo_block:
        check_ood(zoo_block["ood"])


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def probabilities(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, or an independent sigmoid per label."""
    return torch.sigmoid(logits) if task == MULTILABEL else logits.softmax(dim=-1)


def pooled_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled features timm's classifier reads (``forward_head(..., pre_logits=True)``): N x num_features,
    with or without a classifier."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def scored_head(model: torch.nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits N x classes, out-of-distribution score N or None without a reference) of ``forward_features``'s
    output: timm's head run twice on it (to the logits, and to the pooled features with ``pre_logits=True``), the
    encoder not at all. Both calls are timm's own split, so no model's head is reimplemented here; the head is a
    pool and a linear layer, negligible next to the encoder."""
    logits = model.forward_head(features)
    if getattr(model, "ood", None) is None:
        return logits, None
    with torch.no_grad():
        return logits, model.ood.score(model.forward_head(features, pre_logits=True))


def predict(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, score) as ``model(x)`` and ``model.ood_score(x)`` give them, from one forward of the encoder
    instead of two (:func:`scored_head`)."""
    with torch.no_grad():
        return scored_head(model, model.forward_features(x))


class _OODScore:
    """``model.ood_score(x)``: the reference's score of each image (N), without a reference cycle to the model."""

    def __init__(self, model: torch.nn.Module):
        self._model = weakref.ref(model)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        model = self._model()
        if model.ood is None:
            raise ValueError(NO_REFERENCE)
        with torch.no_grad():
            return model.ood.score(pooled_features(model, x))


def read_ood(folder: Path, config: dict, features: int):
    """The :class:`zoo.ood.OODReference` config.json's ``zoo.ood`` block names (checked against ``features``
    before anything is allocated), or None for an export made before references existed."""
    from zoo.ood import read_reference

    block = config.get("zoo") or {}
    return read_reference(folder, block["ood"], features) if "ood" in block else None


def attach(model: torch.nn.Module, folder: Path, config: dict, ood=None) -> None:
    """Set ``task``, ``thresholds``, ``ood``, ``ood_note`` and ``ood_score`` on a model loaded from ``folder``
    (its config.json already validated). ``ood``: the reference :func:`read_ood` already gave (a head-only
    export's is read before its encoder is downloaded); read here otherwise."""
    block = config.get("zoo") or {}
    model.task = block.get("task", MULTICLASS)
    model.thresholds = list(block["thresholds"]) if model.task == MULTILABEL else None
    model.ood = ood if ood is not None else read_ood(folder, config, model.num_features)
    model.ood_note = None if model.ood is not None else NO_REFERENCE
    model.ood_score = _OODScore(model)
