"""Where a pre-training run's backbone starts: random, timm's ImageNet weights, or a zoo encoder (continued
pre-training, e.g. ImageNet → in-domain SSL).

The weights are fetched before the data is loaded, so a run that cannot have them fails at once (offline: one line
with the ``--init-weights`` recipe, no retries), and checked before the model is built: every tensor the backbone
needs, of its shape (a file of another architecture is named as such), and finite. Only safetensors are read,
their header first (timm's Hub repositories publish them; pickles are never loaded). A run resumed from a
checkpoint does not fetch them again: the checkpoint holds every weight.
"""

from __future__ import annotations

import difflib
import logging
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import adapt_input_conv

import zoo
from medssl_zoo.train.config import PretrainConfig
from medssl_zoo.train.network import unreachable
from zoo.catalogue import catalogue_entry
from zoo.files import sha256_file
from zoo.messages import first_line
from zoo.safetensors_header import read_header

__all__ = ["InitError", "InitialWeights", "fit_initial_weights", "load_initial_weights"]

log = logging.getLogger("train")
HUB_PROBE_TIMEOUT = 10.0  # seconds the Hub (or HF_ENDPOINT) has to answer before --init imagenet gives up
GUESS_BUDGET = 3.0  # seconds spent naming the architecture a misfitting weights file belongs to


class InitError(ValueError):
    """The initial weights cannot be had or do not fit; the message says how to get ones that do."""


@dataclass
class InitialWeights:
    """Backbone weights as read (before they are fitted to the run's channels and size)."""

    state: dict[str, torch.Tensor]
    source: str  # what the messages call them, e.g. "--init-weights resnet18.safetensors"
    record: dict | None = None  # a file's name and sha256 (run.json, config.json, the model card)
    metadata: dict = field(default_factory=dict)  # the safetensors header's __metadata__


def _save_hint(backbone: str) -> str:
    return (
        f'on a connected machine save them with `python -c "import timm, safetensors.torch as s; '
        f"s.save_file(timm.create_model('{backbone}', pretrained=True, num_classes=0).state_dict(), "
        f"'{backbone}.safetensors')\"` and pass --init-weights {backbone}.safetensors"
    )


def _read_file(path: Path, source: str) -> InitialWeights:
    """A safetensors file of weights: a regular file, a whole header, then the tensors."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise InitError(f"{source} is not a regular file; give a .safetensors file")
        header = read_header(path)
        state = load_file(path)
    except FileNotFoundError as e:
        raise InitError(f"{source}: no such file") from e
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, InitError):
            raise
        raise InitError(f"{source} is not a readable safetensors file ({e})") from e
    record = {"file": path.name, "sha256": sha256_file(path)}
    return InitialWeights(state, source, record, metadata=_metadata(path) if header else {})


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _hub_file(backbone: str) -> tuple[Path, str]:
    """timm's ImageNet weights of ``backbone`` from the Hub (or its local cache): the file and its repository.
    Offline (``HF_HUB_OFFLINE``, or the Hub not answering within HUB_PROBE_TIMEOUT) only the cache is used."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    pretrained = timm.models.get_pretrained_cfg(backbone)
    if pretrained is None or not pretrained.hf_hub_id:
        raise InitError(f"timm has no ImageNet weights of {backbone} on the Hub; pass --init-weights FILE")
    repo = pretrained.hf_hub_id
    filename = (
        pretrained.hf_hub_filename if str(pretrained.hf_hub_filename).endswith(".safetensors") else None
    )
    filename = filename or "model.safetensors"
    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    down = offline or unreachable(constants.ENDPOINT, HUB_PROBE_TIMEOUT)
    try:
        if down is None:
            return Path(hf_hub_download(repo, filename, etag_timeout=HUB_PROBE_TIMEOUT)), repo
        return Path(hf_hub_download(repo, filename, local_files_only=True)), repo
    except LocalEntryNotFoundError as e:
        reason = offline or f"the Hub ({constants.ENDPOINT}) cannot be reached: {down}"
        raise InitError(
            f"ImageNet weights of {backbone} cannot be downloaded here ({reason}, and {repo} is not in the local "
            f"cache); {_save_hint(backbone)}"
        ) from e
    except EntryNotFoundError as e:
        raise InitError(
            f"{repo} has no {filename} (only pickles, which are never loaded); pass --init-weights"
        ) from e
    except (HfHubHTTPError, OSError) as e:
        raise InitError(
            f"ImageNet weights of {backbone} cannot be downloaded here ({type(e).__name__}: {first_line(e)}); "
            f"{_save_hint(backbone)}"
        ) from e


def _catalogue_encoder(cfg: PretrainConfig, entry) -> InitialWeights:
    """A catalogue encoder's weights (continued pre-training); the run records the file, its sha256 and the base
    model's terms and pinned revision (run.json's ``init_weights``), which every card built on it carries."""
    if cfg.backbone != entry.name:
        raise InitError(
            f"--init {entry.name} continues the catalogue encoder {entry.name}: pass --backbone {entry.name} too "
            f"(its architecture {entry.architecture} and constructor kwargs come from the catalogue)"
        )
    try:
        encoder = zoo.load(entry.name, features_only=True)
    except (zoo.ModelNotAvailableError, ValueError) as e:
        raise InitError(f"--init {cfg.init}: {e}") from e
    path = Path(encoder.weights_path)
    base = encoder.zoo_metadata["base_model"]
    record = {"file": path.name, "sha256": sha256_file(path), "repo_id": entry.repo_id, "base_model": base}
    log.info(
        "%s: %s, licence %s, revision %s", entry.name, entry.repo_id, base["license_name"], base["revision"]
    )
    metadata = {"architecture": entry.name, "channels": 3}
    return InitialWeights(encoder.state_dict(), f"--init {cfg.init}", record, metadata=metadata)


def _zoo_encoder(cfg: PretrainConfig) -> InitialWeights:
    entry = catalogue_entry(cfg.init)
    if entry is not None:
        return _catalogue_encoder(cfg, entry)
    try:
        encoder = zoo.load(cfg.init, features_only=True)
    except (zoo.ModelNotAvailableError, ValueError) as e:
        raise InitError(f"--init {cfg.init}: {e}") from e
    architecture = encoder.pretrained_cfg.get("architecture") or (
        encoder.zoo_metadata.get("config") or {}
    ).get("backbone")
    metadata = {"architecture": architecture, "channels": encoder.pretrained_cfg["input_size"][0]}
    return InitialWeights(encoder.state_dict(), f"--init {cfg.init}", metadata=metadata)


def load_initial_weights(cfg: PretrainConfig) -> InitialWeights | None:
    """The weights ``cfg.init`` names, read and checked for finiteness (None: the random initialisation)."""
    if cfg.init == "random":
        return None
    if cfg.init == "imagenet" and cfg.init_weights:
        weights = _read_file(Path(cfg.init_weights).expanduser(), f"--init-weights {cfg.init_weights}")
    elif cfg.init == "imagenet":
        path, repo = _hub_file(cfg.backbone)
        weights = _read_file(path, f"timm's ImageNet weights of {cfg.backbone} ({repo})")
        weights.record = {**weights.record, "repo_id": repo}
    else:
        weights = _zoo_encoder(cfg)
    _check_finite(weights)
    log.info("initialising the backbone from %s", weights.source)
    return weights


def _check_finite(weights: InitialWeights) -> None:
    bad = [k for k, v in weights.state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InitError(
            f"{weights.source} holds NaN or infinite values in {len(bad)} tensor(s) ({', '.join(bad[:3])}): the "
            "weights are damaged, not the learning rate; save them again, or start from --init random"
        )


def _adapt(state: dict[str, torch.Tensor], model: torch.nn.Module, in_chans: int) -> dict[str, torch.Tensor]:
    """Weights saved for 3 channels and 224 px made to fit this run: timm's stem adaptation (RGB kernels summed)
    and the architecture's own checkpoint filter (ViTs: the position embedding resampled to the patch grid); the
    ImageNet classifier, which a backbone does not have, dropped."""
    classifier = model.pretrained_cfg.get("classifier")
    if classifier:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own or not k.startswith(f"{classifier}.")}
    first_conv = model.pretrained_cfg.get("first_conv")
    key = f"{first_conv}.weight"
    if first_conv and key in state and state[key].ndim == 4 and state[key].shape[1] != in_chans:
        state = {**state, key: adapt_input_conv(in_chans, state[key])}
    checkpoint_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return checkpoint_filter(state, model) if checkpoint_filter else state


def fit_initial_weights(
    weights: InitialWeights, cfg: PretrainConfig, in_chans: int
) -> dict[str, torch.Tensor]:
    """``weights`` adapted to this run's backbone, channels and size; ``InitError`` naming what does not fit."""
    architecture, channels = weights.metadata.get("architecture"), weights.metadata.get("channels")
    if weights.record is None and (architecture not in (None, cfg.backbone) or channels != in_chans):
        raise InitError(
            f"{weights.source} is a {architecture} with {channels} channel(s); this run trains a {cfg.backbone} "
            f"with {in_chans}: pass --backbone {architecture} (and --channels {channels})"
        )
    model = zoo.create_backbone(cfg.backbone, in_chans=in_chans, image_size=cfg.image_size)
    try:
        state = _adapt(weights.state, model, in_chans)
    except (RuntimeError, ValueError, KeyError, IndexError) as e:  # a filter meeting tensors of another model
        raise _misfit(weights, cfg, f"({type(e).__name__}: {first_line(e)})") from e
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    reshaped = [k for k in expected if k in found and found[k] != expected[k]]
    if missing or unexpected or reshaped:
        detail = f"{len(missing)} tensor(s) missing ({', '.join(missing[:3])})" if missing else ""
        if unexpected:
            detail += f"{'; ' if detail else ''}{len(unexpected)} unexpected ({', '.join(unexpected[:3])})"
        if reshaped:
            k = reshaped[0]
            detail += (
                f"{'; ' if detail else ''}{len(reshaped)} of another shape (e.g. {k}: file {list(found[k])}"
            )
            detail += f", {cfg.backbone} {list(expected[k])})"
        raise _misfit(weights, cfg, detail)
    return state


def _misfit(weights: InitialWeights, cfg: PretrainConfig, detail: str) -> InitError:
    """The one-line error for weights of another shape: the file, the architecture they fit (when it can be told),
    what to do."""
    fits = weights.metadata.get("architecture") or _guess_architecture(weights.state, cfg.backbone)
    if fits and fits != cfg.backbone:
        what = f"they are weights of {fits}"
        fix = f"pass --backbone {fits} to train that architecture, or give {cfg.backbone}'s weights"
    else:
        what, fix = "", f"give {cfg.backbone}'s weights"
    hint = _save_hint(cfg.backbone) if cfg.init == "imagenet" else "re-export them"
    return InitError(
        f"the initial weights ({weights.source}) do not fit {cfg.backbone}{f' ({what})' if what else ''}: {detail}; "
        f"{fix} ({hint})"
    )


def _guess_architecture(state: dict[str, torch.Tensor], backbone: str) -> str | None:
    """The timm architecture of ``backbone``'s family (the closest names first) whose backbone has exactly these
    tensor names and shapes (the stem's input channels and ViTs' position embedding aside), built on the meta
    device within GUESS_BUDGET seconds; None when none is found in time."""
    family = re.match(r"[a-z_]*[a-z]", backbone)
    names = timm.list_models(f"{family.group(0)}*") if family else []
    deadline = time.monotonic() + GUESS_BUDGET
    for name in difflib.get_close_matches(backbone, names, n=len(names), cutoff=0.0):
        if time.monotonic() > deadline:
            return None
        try:
            with torch.device("meta"):
                candidate = timm.create_model(name, pretrained=False, num_classes=0)
        except Exception:  # noqa: BLE001 (a timm entry point that cannot be built this way: not a candidate)
            continue
        cfg = candidate.pretrained_cfg
        own = _signature(candidate.state_dict(), cfg.get("first_conv"))
        head = f"{cfg.get('classifier') or chr(0)}."
        if own == _signature(
            {k: v for k, v in state.items() if k in own or not k.startswith(head)}, cfg.get("first_conv")
        ):
            return name
    return None


def _signature(state: dict[str, torch.Tensor], first_conv: str | None) -> dict[str, tuple]:
    """Tensor names and shapes as compared between architectures: the stem's input channels (adapted) and
    position embeddings (resampled) aside."""
    stem = f"{first_conv}.weight"
    return {
        k: ("pos_embed",) if "pos_embed" in k else (v.shape[0], *v.shape[2:]) if k == stem else tuple(v.shape)
        for k, v in state.items()
    }
