"""Loading a catalogue encoder: its downloaded files checked against the trusted entry before anything is built.

The files come from a stranger's repository (or a mirror): ``config.json`` is read bounded and only checked — its
architecture and ``model_args`` must be what the entry already says (a changed repository is refused by name,
never followed); the model is built on the ``meta`` device first and the weights' names and shapes compared with
it (safetensors: from the header; a ``pytorch_model.bin``: its size against the model's float32 bytes, then its
tensors after PyTorch's weights-only unpickler read them — never a full unpickle); only then is the model
allocated, loaded strictly, and given the entry's pooling (:mod:`zoo.pooling`) and preprocessing.
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from zoo.catalogue import CatalogueEntry, build_encoder
from zoo.files import read_json
from zoo.hub_format import MAX_CONFIG_BYTES, MODEL_CONFIG_FILE
from zoo.messages import first_line
from zoo.pooling import set_pooling
from zoo.safetensors_header import read_header

__all__ = ["check_config", "load_entry", "weights_file"]

log = logging.getLogger(__name__)
PICKLE_SLACK = 1 << 20  # bytes of pickle framing beyond the tensors' (UNI's .bin: 125 kB for 294 tensors)
PICKLE_SLACK_PER_TENSOR = 4096


def _same(found, trusted) -> bool:
    if isinstance(found, (int, float)) and isinstance(trusted, (int, float)) and not isinstance(found, bool):
        return math.isclose(found, trusted, rel_tol=1e-9)
    if isinstance(found, list) and isinstance(trusted, (list, tuple)):
        return len(found) == len(trusted) and all(_same(a, b) for a, b in zip(found, trusted, strict=True))
    return found == trusted


def check_config(entry: CatalogueEntry, folder: Path) -> None:
    """The repository's ``config.json`` must describe the entry's model: the same architecture, and every
    ``model_args`` value one the entry passes itself (``num_classes`` 0 aside). It shapes nothing."""
    path = folder / MODEL_CONFIG_FILE
    config = read_json(path, MAX_CONFIG_BYTES, "model config")
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object: {entry.repo_id} is not a timm model repository")
    architecture = config.get("architecture", entry.architecture)
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise ValueError(f"{path}: model_args is not a mapping")
    trusted = {**entry.kwargs, "num_classes": 0}
    differ = sorted(k for k, v in model_args.items() if k not in trusted or not _same(v, trusted[k]))
    if architecture != entry.architecture or differ:
        what = f"architecture {architecture!r}" if architecture != entry.architecture else ""
        what += f"{' and ' if what else ''}model_args {differ}" if differ else ""
        raise ValueError(
            f"{entry.name}: {entry.repo_id}'s config.json asks for {what}, not what the catalogue entry builds "
            f"({entry.architecture} with its own kwargs): the repository changed since the entry was written. "
            "Nothing was built; pin the entry's revision, or update the entry in zoo/catalogue.py"
        )


def weights_file(entry: CatalogueEntry, folder: Path) -> Path:
    """The first of the entry's weight files present in the downloaded snapshot."""
    for name in entry.weights_files:
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder} holds none of {list(entry.weights_files)}; download {entry.name} again")


def _refuse_misfit(entry: CatalogueEntry, path: Path, expected: dict, found: dict) -> None:
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    misshaped = sorted(k for k in set(found) & set(expected) if tuple(found[k]) != tuple(expected[k]))
    if missing or unexpected or misshaped:
        details = "; ".join(
            f"{label}: {keys[:4]}{' …' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
            if keys
        )
        raise ValueError(f"{path}: the weights do not fit {entry.name} ({entry.architecture}): {details}")


def _read_safetensors(entry: CatalogueEntry, path: Path, expected: dict) -> dict[str, torch.Tensor]:
    _refuse_misfit(entry, path, expected, {k: shape for k, (_, shape) in read_header(path).items()})
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is corrupt or truncated ({e}); delete its Hub cache entry and retry") from e


def _torch_load(path: Path) -> object:
    """PyTorch's weights-only unpickler (tensors, plain containers and numbers; no code runs), memory-mapped
    where the file's format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format


def _read_pickle(entry: CatalogueEntry, path: Path, expected: dict, nbytes: int) -> dict[str, torch.Tensor]:
    """A ``pytorch_model.bin``: no larger than the model's float32 tensors (checked before it is read), then
    read with the weights-only unpickler, then a flat mapping of exactly the model's tensors."""
    size, bound = path.stat().st_size, nbytes + PICKLE_SLACK + PICKLE_SLACK_PER_TENSOR * len(expected)
    if size > bound:
        raise ValueError(
            f"{path} is {size} bytes, more than {entry.name}'s {len(expected)} float32 tensors can take ({bound}); "
            "it is not this model's checkpoint: nothing was read"
        )
    try:
        state = _torch_load(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = first_line(e)
        raise ValueError(
            f"{path} is not a plain checkpoint of tensors (PyTorch's weights-only unpickler refused it: {first}); "
            "only tensors are ever read from a pickle file, so it is not loaded"
        ) from e
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} is not a flat mapping of tensor names to tensors: not a timm state dict")
    _refuse_misfit(entry, path, expected, {k: tuple(v.shape) for k, v in state.items()})
    return state


def _commit(folder: Path) -> str | None:
    return folder.name if folder.parent.name == "snapshots" and len(folder.name) == 40 else None


def _finish(model: nn.Module, entry: CatalogueEntry, folder: Path, path: Path) -> nn.Module:
    """The entry's pooling, preprocessing and terms on the loaded model."""
    set_pooling(model, entry.pooling)
    model.pretrained_cfg = model.default_cfg = entry.pretrained_cfg
    model.label_names = []
    model.zoo_metadata = {"base_model": {**entry.terms(), "revision": _commit(folder) or entry.revision}}
    model.source = str(folder)
    model.weights_path = str(path)
    return model


def load_entry(entry: CatalogueEntry, folder: Path) -> nn.Module:
    """The entry's encoder with the weights of the snapshot ``folder`` (downloaded by :func:`zoo.load.resolve`),
    every file checked first (see the module docstring)."""
    check_config(entry, folder)
    path = weights_file(entry, folder)
    skeleton = build_encoder(entry, device="meta")
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    nbytes = sum(4 * v.numel() for v in skeleton.state_dict().values())
    if path.suffix == ".safetensors":
        state = _read_safetensors(entry, path, expected)
    else:
        state = _read_pickle(entry, path, expected, nbytes)
    model = build_encoder(entry)
    model.load_state_dict(state, strict=True)
    log.info("loaded %s (%s @ %s) from %s", entry.name, entry.repo_id, _commit(folder), path.name)
    return _finish(model, entry, folder, path)
