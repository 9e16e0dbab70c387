"""timm backbones as SSL encoders: any timm architecture, no classifier, 1 or 3 input channels."""

from __future__ import annotations

import difflib
import functools

import timm
import torch
from torch import nn

__all__ = ["check_architecture", "check_backbone", "create_backbone", "size_kwargs"]


def check_architecture(name: str) -> None:
    """Raise ``ValueError`` with close matches when ``name`` is not a timm architecture."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ValueError(
        f'Unknown timm architecture {name!r}.{hint} Run `python -c "import timm; print(timm.list_models())"` '
        "for the full list."
    )


def check_backbone(name: str) -> None:
    """A pre-training backbone: a timm architecture, or a catalogue encoder (its architecture and kwargs)."""
    from zoo.catalogue import catalogue_entry  # the catalogue builds on the registry, which needs this module

    if catalogue_entry(name) is None:
        check_architecture(name)


@functools.cache
def _takes_img_size(name: str) -> bool:
    """Whether the architecture's layers depend on the input size (ViTs' patch grid and position embedding)."""
    try:
        with torch.device("meta"):  # no memory, no time
            timm.create_model(name, pretrained=False, num_classes=0, img_size=64)
        return True
    except TypeError:
        return False


def size_kwargs(name: str, image_size: int | None) -> dict:
    """``{"img_size": image_size}`` for architectures built for one input size (ViTs), else ``{}``; what
    ``timm.create_model`` needs to rebuild the model (and what an export's ``model_args`` carries)."""
    return {"img_size": image_size} if image_size and _takes_img_size(name) else {}


def create_backbone(
    name: str, in_chans: int = 3, pretrained: bool = False, image_size: int | None = None, **kwargs
) -> nn.Module:
    """Build ``name`` with timm as a feature extractor: ``num_classes=0`` so ``forward`` returns pooled
    features of size ``model.num_features`` (2048 for a ResNet-50, 512 for a ResNet-18, ...).

    ``in_chans=1`` gives a one-channel stem for grayscale X-ray data (timm sums the RGB stem weights when
    pretrained weights are loaded); ``in_chans=3`` with grayscale converted to RGB is the original study's
    choice. ResNets are created with ``zero_init_last=True`` (timm's default), as the study's
    ``zero_init_residual=True``. ``image_size`` builds size-dependent architectures (ViTs) for that input size
    (``vit_small_patch16_224`` at 96 px: a 6 x 6 patch grid); others ignore it.
    """
    from zoo.catalogue_backbone import catalogue_backbone

    if not pretrained and (model := catalogue_backbone(name, in_chans, image_size)) is not None:
        return model  # a catalogue encoder's own architecture (weights: --init NAME)
    check_architecture(name)
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 (grayscale stem) or 3 (RGB), got {in_chans}")
    kwargs = {**size_kwargs(name, image_size), **kwargs}
    return timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs)
