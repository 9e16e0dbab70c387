"""The method registry: a method is a spec (projector [+ predictor] + loss), built on any timm backbone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from zoo.backbones import create_backbone
from zoo.methods.model import SSLModel

__all__ = ["MethodSpec", "register_method", "list_methods", "get_method_spec", "create_method"]

REFERENCE_FEATURES = 2048  # the study's ResNet-50: head widths below are quoted for this and scaled


def scaled(width: int, num_features: int, minimum: int = 32) -> int:
    """A head width quoted for a 2048-d ResNet-50, scaled to a backbone with ``num_features`` features."""
    return max(minimum, width * num_features // REFERENCE_FEATURES)


@dataclass(frozen=True)
class MethodSpec:
    """How to build one SSL method.

    Attributes:
        name: registry name (``simclr``, ``vicreg``, ...).
        paper: the method paper, for model cards.
        make_projector: ``num_features -> nn.Module`` (N x F → N x D).
        make_loss: ``paper_mode -> nn.Module``.
        make_predictor: ``(projector_dim, paper_mode) -> nn.Module | None``; None for methods without one.
    """

    name: str
    paper: str
    make_projector: Callable[[int], nn.Module]
    make_loss: Callable[[bool], nn.Module]
    make_predictor: Callable[[int, bool], nn.Module | None] | None = None


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    _METHODS[spec.name] = spec
    return spec


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def get_method_spec(name: str) -> MethodSpec:
    """The spec of ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return _METHODS[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown SSL method {name!r}; valid methods: {', '.join(list_methods())}."
        ) from None


def create_method(
    name: str,
    backbone: str = "resnet50",
    in_chans: int = 3,
    paper_mode: bool = False,
    backbone_kwargs: dict | None = None,
) -> SSLModel:
    """Build method ``name`` on the timm ``backbone``.

    ``paper_mode=True`` reproduces the original study's code exactly (one-sided DCLW with a non-detached
    weight, VICReg's variance term summed, SimSiam without predictor); the default is the standard, published
    formulation of each method.

    Example:
        >>> model = create_method("simclr", backbone="resnet18", in_chans=1)
        >>> out = model(x1, x2)  # {"loss": ..., "z1": ..., "z2": ...}
    """
    spec = get_method_spec(name)
    encoder = create_backbone(backbone, in_chans=in_chans, **(backbone_kwargs or {}))
    projector = spec.make_projector(encoder.num_features)
    projector_dim = projector.dims[-1] if hasattr(projector, "dims") else None
    predictor = spec.make_predictor(projector_dim, paper_mode) if spec.make_predictor else None
    return SSLModel(encoder, projector, spec.make_loss(paper_mode), predictor=predictor, method=spec.name)
