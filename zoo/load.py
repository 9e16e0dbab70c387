"""``zoo.load``: a timm model from a local folder, ``$ZOO_HOME``, a registry name or a Hub repo id.

Resolution order: an existing local folder → ``$ZOO_HOME/<name>`` → a registry name → a Hub repo id
(``org/name``). Downloads go through ``huggingface_hub.snapshot_download`` (its cache, ``HF_ENDPOINT`` for
self-hosted mirrors, ``HF_HUB_OFFLINE``). Only safetensors are ever loaded — never pickles.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zoo.backbones import check_architecture
from zoo.hub_format import CONFIG_FILE, WEIGHTS_FILE, read_config, zoo_home
from zoo.registry import close_names, get_entry

__all__ = ["load", "resolve", "model_info", "ModelNotAvailableError"]

log = logging.getLogger(__name__)
PICKLE_FILES = ("pytorch_model.bin", "model.pth", "model.pt", "open_clip_pytorch_model.bin")
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, "README.md"]


class ModelNotAvailableError(LookupError):
    """The model could not be found or downloaded; the message says what to do."""


def _download(repo_id: str, revision: str | None, name: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError as e:
        offline = constants.HF_HUB_OFFLINE
        raise ModelNotAvailableError(
            f"{name}: {repo_id}@{revision or 'main'} is not in the local cache and "
            + ("HF_HUB_OFFLINE is set" if offline else f"the Hub ({constants.ENDPOINT}) cannot be reached")
            + f". Pre-fetch it on a connected machine with `hf download {repo_id}"
            + (f" --revision {revision}" if revision else "")
            + "` (same HF_HOME), or set HF_ENDPOINT to a mirror."
        ) from e
    except RevisionNotFoundError as e:
        raise ModelNotAvailableError(f"{name}: {repo_id} has no revision {revision!r}") from e
    except (RepositoryNotFoundError, GatedRepoError, EntryNotFoundError) as e:
        raise ModelNotAvailableError(
            f"{name}: no accessible Hub repository {repo_id} ({type(e).__name__})"
        ) from e


def resolve(name_or_path: str | Path, revision: str | None = None) -> Path:
    """The local folder holding ``name_or_path``'s files, downloading them if needed."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    local = zoo_home() / name
    if "/" not in name and (local / CONFIG_FILE).is_file():
        return local
    entry = get_entry(name)
    if entry is not None:
        try:
            return _download(entry.repo_id, revision or entry.revision, name)
        except ModelNotAvailableError as e:
            if entry.published:
                raise
            raise ModelNotAvailableError(
                f"{name} is registered but its weights are not published yet ({entry.repo_id}). Produce it with "
                f"`accelerate launch train/pretrain.py --config {name} --data-root DATA`, export it "
                f"with `python -m hub.export RUN_DIR $ZOO_HOME/{name}` to use it locally, and publish it with "
                f"`python -m hub.push $ZOO_HOME/{name} {entry.repo_id}`. ({e})"
            ) from e
    if "/" in name and not path.exists() and name.count("/") == 1:
        return _download(name, revision, name)
    close = close_names(name)
    raise ModelNotAvailableError(
        f"unknown model {name!r}: not a folder, not in $ZOO_HOME ({zoo_home()}), not a registered name, not a Hub "
        f"repo id (org/name)."
        + (f" Close names: {', '.join(close)}." if close else "")
        + " `python -m zoo list` shows the available names."
    )


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = [p for p in PICKLE_FILES if (folder / p).is_file()]
        why = (
            f"it only has {pickles}, and pickle files are never loaded (they can run code)"
            if pickles
            else "it is missing"
        )
        raise ValueError(
            f"{folder}: no {WEIGHTS_FILE} ({why}). Re-export the model with `python -m hub.export`."
        )
    try:
        return load_file(weights)
    except (SafetensorError, OSError) as e:
        raise ValueError(
            f"{weights} is corrupt or truncated ({e}); delete it (or its Hub cache entry) and download it again"
        ) from e


def _check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or misshaped:
        details = "; ".join(
            f"{label}: {keys[:6]}{' …' if len(keys) > 6 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
            if keys
        )
        raise ValueError(
            f"{source}: the weights do not fit {type(model).__name__} from config.json ({details})"
        )


def load(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    features_only: bool = False,
) -> torch.nn.Module:
    """Load a zoo model as a timm ``nn.Module`` in eval mode, weights loaded strictly.

    The model carries ``pretrained_cfg`` (input size, mean/std, …), ``label_names`` and ``zoo_metadata``.
    ``features_only=True`` drops the classifier: ``model(x)`` returns pooled features (N x num_features).

    Example:
        >>> model = zoo.load("vicreg-breast")
        >>> probabilities = model(x).softmax(dim=1)
    """
    folder = resolve(name_or_path, revision)
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{folder}: no {CONFIG_FILE}; not a timm / MedSSL Zoo model folder")
    config = read_config(folder / CONFIG_FILE)
    try:
        check_architecture(config["architecture"])
    except ValueError as e:
        raise ValueError(f"{folder / CONFIG_FILE}: {e}") from e
    model_args = dict(config.get("model_args") or {})
    model = timm.create_model(
        config["architecture"], pretrained=False, num_classes=config["num_classes"], **model_args
    )
    state = _read_weights(folder)
    _check_state(model, state, folder)
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg = {**model.pretrained_cfg, **config["pretrained_cfg"]}
    model.label_names = list(config.get("label_names") or [])
    model.zoo_metadata = dict(config.get("zoo") or {})
    model.source = str(folder)
    if features_only:
        model.reset_classifier(0)
    return model.eval().to(device or "cpu")


def model_info(name_or_path: str | Path, revision: str | None = None) -> dict:
    """Registry entry plus the model's config (downloaded if needed, weights not loaded)."""
    from zoo.registry import entry_dict

    info = {"name": str(name_or_path), "registry": entry_dict(str(name_or_path))}
    folder = resolve(name_or_path, revision)
    config = read_config(folder / CONFIG_FILE)
    info.update(
        folder=str(folder),
        architecture=config["architecture"],
        num_classes=config["num_classes"],
        label_names=config.get("label_names"),
        pretrained_cfg=config["pretrained_cfg"],
        zoo=config.get("zoo", {}),
    )
    return info
