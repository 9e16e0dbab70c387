"""The method registry: a method is a spec (projector [+ predictor] + loss), built on any timm backbone."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from zoo._registry import Registry
from zoo.backbones import create_backbone
from zoo.heads import ProjectionHead
from zoo.methods.model import SSLModel

__all__ = ["METHODS", "MethodSpec", "register_method", "list_methods", "get_method_spec", "create_method"]

REFERENCE_FEATURES = 2048  # the study's ResNet-50: head widths below are quoted for this and scaled


def scaled(width: int, num_features: int, minimum: int = 32) -> int:
    """A head width quoted for a 2048-d ResNet-50, scaled to a backbone with ``num_features`` features."""
    return max(minimum, width * num_features // REFERENCE_FEATURES)


@dataclass(frozen=True)
class MethodSpec:
    """How to build one SSL method.

    Attributes:
        name: registry name (``simclr``, ``vicreg``, ...).
        citation: the method's paper, for docstrings and model cards.
        make_projector: ``num_features -> ProjectionHead`` (N x F → N x ``out_dim``).
        loss: the loss class; ``loss_kwargs`` its hyper-parameters (the paper's / the study's literals) and
            ``paper_loss_kwargs`` what changes in paper mode (the original study's code).
        make_predictor: ``(projector out_dim, paper_mode) -> nn.Module | None``; None for methods without one.
        loss_takes_predictions: the loss is called ``loss(p1, p2, z1, z2)`` (SimSiam) instead of ``loss(z1, z2)``;
            without a predictor (paper mode) p = z.
        model: the model class (how the views, heads and loss meet); ``model_kwargs`` its settings (e.g. the EMA
            teacher's base momentum).
        exported_encoder: which encoder the method's paper evaluates, and the zoo exports (for model cards).
        run_options: ``epoch_fraction -> model options`` that depend on the run's length (one epoch / the run);
            DINO freezes its last layer during the first epoch (the official ``freeze_last_layer=1``).
    """

    name: str
    citation: str
    make_projector: Callable[[int], ProjectionHead]
    loss: type[nn.Module]
    loss_kwargs: dict = field(default_factory=dict)
    paper_loss_kwargs: dict = field(default_factory=dict)
    make_predictor: Callable[[int, bool], nn.Module | None] | None = None
    loss_takes_predictions: bool = False
    model: type[SSLModel] = SSLModel
    model_kwargs: dict = field(default_factory=dict)
    exported_encoder: str = "the backbone"
    run_options: Callable[[float], dict] | None = None

    def options_for_run(self, epoch_fraction: float) -> dict:
        """The model options a training run of this length sets (``{}`` for most methods)."""
        return dict(self.run_options(epoch_fraction)) if self.run_options else {}

    def loss_parameters(self) -> list[str]:
        """The loss's settable hyper-parameters (what ``loss_options`` may override)."""
        names = inspect.signature(self.loss).parameters
        return [n for n in names if n not in ("self", "out_dim")]

    def check_loss_options(self, options: dict | None) -> None:
        """``ValueError`` naming the ``loss_options`` that are not settings of this method's loss."""
        unknown = sorted(set(options or {}) - set(self.loss_parameters()))
        if unknown:
            valid = ", ".join(self.loss_parameters()) or "none"
            raise ValueError(
                f"loss_options {unknown} are not settings of {self.loss.__name__}; valid: {valid}"
            )

    def make_loss(
        self, paper_mode: bool = False, out_dim: int | None = None, options: dict | None = None
    ) -> nn.Module:
        """The loss with the method's hyper-parameters (and the study's deviations when ``paper_mode``); ``options``
        override them (``ValueError`` naming unknown ones); ``out_dim`` reaches losses that need the head's width."""
        self.check_loss_options(options)
        kwargs = {**self.loss_kwargs, **(self.paper_loss_kwargs if paper_mode else {}), **(options or {})}
        if "out_dim" in inspect.signature(self.loss).parameters:
            kwargs["out_dim"] = out_dim
        return self.loss(**kwargs)


METHODS: Registry[MethodSpec] = Registry("SSL method")


def register_method(spec: MethodSpec, *, overwrite: bool = False) -> MethodSpec:
    """Add ``spec`` to the method registry (a taken name is an error unless ``overwrite``)."""
    return METHODS.register(spec, overwrite=overwrite)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


def get_method_spec(name: str) -> MethodSpec:
    """The spec of ``name``; ``ValueError`` listing the valid names otherwise."""
    return METHODS.get(name)


def create_method(
    name: str,
    backbone: str = "resnet50",
    in_chans: int = 3,
    paper_mode: bool = False,
    backbone_kwargs: dict | None = None,
    loss_options: dict | None = None,
    model_options: dict | None = None,
    image_size: int | None = None,
) -> SSLModel:
    """Build method ``name`` on the timm ``backbone``.

    ``paper_mode=True`` reproduces the original study's code exactly (one-sided DCLW with a non-detached
    weight, VICReg's variance term summed, SimSiam without predictor); the default is the standard, published
    formulation of each method.

    ``loss_options`` override the loss's hyper-parameters (e.g. ``{"temperature": 1.0}``), ``model_options`` the
    model's (e.g. ``{"momentum": 0.996}`` for an EMA teacher); ``image_size`` builds ViTs for that input size.

    Example:
        >>> model = create_method("simclr", backbone="resnet18", in_chans=1)
        >>> out = model(x1, x2)  # {"loss": ..., "z1": ..., "z2": ...}
    """
    spec = get_method_spec(name)
    encoder = create_backbone(backbone, in_chans=in_chans, image_size=image_size, **(backbone_kwargs or {}))

    projector = spec.make_projector(encoder.num_features)
    predictor = spec.make_predictor(projector.out_dim, paper_mode) if spec.make_predictor else None
    unknown = sorted(set(model_options or {}) - set(spec.model_kwargs))
    if unknown:
        raise ValueError(
            f"{name} has no model options {unknown}; valid: {', '.join(spec.model_kwargs) or 'none'}"
        )
    return spec.model(
        encoder,
        projector,
        spec.make_loss(paper_mode, projector.out_dim, loss_options),
        predictor=predictor,
        method=spec.name,
        loss_takes_predictions=spec.loss_takes_predictions,
        **{**spec.model_kwargs, **(model_options or {})},
    )
