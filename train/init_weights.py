"""Where a pre-training run's backbone starts: random, timm's ImageNet weights, or a zoo encoder (continued
pre-training, e.g. ImageNet → in-domain SSL)."""

from __future__ import annotations

import logging
import sys

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import adapt_input_conv

import zoo
from medssl_zoo.train.config import PretrainConfig

__all__ = ["InitError", "initial_backbone_state", "describe_init"]

log = logging.getLogger("train")


class InitError(ValueError):
    """The initial weights cannot be had; the message says how to get them."""


def describe_init(cfg: PretrainConfig) -> str:
    """The initialisation as model cards state it."""
    if cfg.init == "random":
        return "random"
    if cfg.init == "imagenet":
        return f"timm's ImageNet weights of {cfg.backbone}" + (
            " (from a local file)" if cfg.init_weights else ""
        )
    return f"the zoo encoder {cfg.init} (continued pre-training)"


def _adapt(state: dict[str, torch.Tensor], cfg: PretrainConfig, in_chans: int) -> dict[str, torch.Tensor]:
    """Weights saved for 3 channels and 224 px made to fit this run: timm's stem adaptation (RGB kernels summed)
    and the architecture's own checkpoint filter (ViTs: the position embedding resampled to the patch grid)."""
    model = zoo.create_backbone(cfg.backbone, in_chans=in_chans, image_size=cfg.image_size)
    first_conv = model.pretrained_cfg.get("first_conv")
    key = f"{first_conv}.weight"
    if first_conv and key in state and state[key].shape[1] != in_chans:
        state = {**state, key: adapt_input_conv(in_chans, state[key])}
    checkpoint_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return checkpoint_filter(state, model) if checkpoint_filter else state


def _imagenet(cfg: PretrainConfig, in_chans: int) -> dict[str, torch.Tensor]:
    save_hint = (
        f'on a connected machine save them with `python -c "import timm, safetensors.torch as s; '
        f"s.save_file(timm.create_model('{cfg.backbone}', pretrained=True, num_classes=0).state_dict(), "
        f"'{cfg.backbone}.safetensors')\"` and pass --init-weights {cfg.backbone}.safetensors"
    )
    if cfg.init_weights:
        try:
            state = load_file(cfg.init_weights)
        except (SafetensorError, OSError) as e:
            raise InitError(
                f"--init-weights {cfg.init_weights} is not a readable safetensors file ({e})"
            ) from e
        return _adapt(state, cfg, in_chans)
    try:
        model = zoo.create_backbone(
            cfg.backbone, in_chans=in_chans, pretrained=True, image_size=cfg.image_size
        )
    except (OSError, RuntimeError, ValueError) as e:  # offline: huggingface_hub / urllib errors
        reason = str(e).splitlines()[0][:160]
        raise InitError(
            f"ImageNet weights of {cfg.backbone} cannot be downloaded here ({reason}); {save_hint}"
        ) from e
    return model.state_dict()


def _zoo_encoder(cfg: PretrainConfig, in_chans: int) -> dict[str, torch.Tensor]:
    try:
        encoder = zoo.load(cfg.init, features_only=True)
    except (zoo.ModelNotAvailableError, ValueError) as e:
        raise InitError(f"--init {cfg.init}: {e}") from e
    architecture = encoder.pretrained_cfg.get("architecture") or (
        encoder.zoo_metadata.get("config") or {}
    ).get("backbone")
    channels = encoder.pretrained_cfg["input_size"][0]
    if architecture not in (None, cfg.backbone) or channels != in_chans:
        raise InitError(
            f"--init {cfg.init} is a {architecture} with {channels} channel(s); this run trains a {cfg.backbone} "
            f"with {in_chans}: pass --backbone {architecture} (and --channels {channels})"
        )
    return encoder.state_dict()


def initial_backbone_state(cfg: PretrainConfig, in_chans: int) -> dict[str, torch.Tensor] | None:
    """The backbone weights a run starts from (None: the random initialisation)."""
    if cfg.init == "random":
        return None
    state = _imagenet(cfg, in_chans) if cfg.init == "imagenet" else _zoo_encoder(cfg, in_chans)
    log.info("initialising the backbone from %s", describe_init(cfg))
    return state
