"""A catalogue encoder as a pre-training backbone (``--backbone uni --init uni``: continued pre-training).

The backbone is the entry's own architecture and trusted constructor kwargs (SwiGLU, registers, LayerScale…),
built for the run's input size, with the card's pooling (:mod:`zoo.pooling`) so that ``backbone(x)`` is the
embedding the SSL method trains, and the entry's preprocessing as its ``pretrained_cfg``.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from zoo.catalogue import build_encoder, catalogue_entry
from zoo.pooling import set_pooling

__all__ = ["catalogue_backbone"]


def catalogue_backbone(name: str, in_chans: int = 3, image_size: int | None = None) -> nn.Module | None:
    """The backbone of catalogue entry ``name`` without weights (None: not a catalogue name)."""
    entry = catalogue_entry(name)
    if entry is None:
        return None
    if in_chans != 3:
        raise ValueError(f"{name} takes RGB input; grayscale data is converted with --channels 3")
    kwargs = dict(entry.kwargs)
    if image_size and "img_size" in kwargs:
        kwargs["img_size"] = (
            image_size  # the patch grid of the run's views (weights resampled by timm's filter)
        )
    model = build_encoder(replace(entry, kwargs=kwargs))
    set_pooling(model, entry.pooling)
    model.pretrained_cfg = model.default_cfg = entry.pretrained_cfg
    return model
