"""``zoo.load``: a timm model from a local folder, ``$ZOO_HOME``, a registry name or a Hub repo id.

Resolution order: an existing local folder → ``$ZOO_HOME/<name>`` → a registry name → a Hub repo id
(``org/name``). Downloads go through ``huggingface_hub.hf_hub_download`` (its cache, ``HF_ENDPOINT`` for
self-hosted mirrors, ``HF_HUB_OFFLINE``), each file within a deadline (``ZOO_HUB_TIMEOUT`` seconds for the small
files, 20 times that for the weights), all pinned to the commit of the first. A model folder is untrusted input:
``config.json`` is validated (:func:`zoo.hub_format.validate_config`), the model is first built on the ``meta``
device and compared with what the ``model.safetensors`` header declares, and only then allocated and filled. Only
safetensors are ever loaded — never pickles. The model says what its outputs mean and how unlike its training
data an input is (``model.task``, ``model.thresholds``, ``model.ood_score(x)``: :mod:`zoo.task`).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import socket
import threading
import urllib.parse
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zoo import task
from zoo.catalogue import CatalogueEntry, catalogue_entry
from zoo.catalogue_load import load_entry
from zoo.composed import is_head_only, load_composed
from zoo.hub_format import (
    CARD_FILE,
    HEAD_FILE,
    MODEL_CONFIG_FILE,
    OOD_FILE,
    WEIGHTS_FILE,
    read_config,
    zoo_home,
)
from zoo.registry import close_names, get_entry, is_hub_id, is_model_name
from zoo.revision import check_commit, check_revision
from zoo.safetensors_header import read_header

__all__ = ["load", "resolve", "model_info", "ModelNotAvailableError"]

log = logging.getLogger(__name__)
PICKLE_FILES = ("pytorch_model.bin", "model.pth", "model.pt", "open_clip_pytorch_model.bin")
DEFAULT_HUB_TIMEOUT = 30.0
MAX_HUB_TIMEOUT = 3600.0  # an hour for a small file (the weights get 20 times that)


class ModelNotAvailableError(LookupError):
    """The model could not be found or downloaded; the message says what to do."""


def _hub_timeout() -> float:
    """``ZOO_HUB_TIMEOUT`` in seconds: a finite number in (0, MAX_HUB_TIMEOUT]. Anything else (``inf``, ``nan``,
    ``-1``, ``0``, ``soon``) is one error saying what to set: an infinite wait is what the deadline exists to
    prevent, and a huge one overflows ``threading``'s timeout."""
    text = os.environ.get("ZOO_HUB_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_HUB_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_HUB_TIMEOUT:  # also false for nan
        raise ValueError(
            f"ZOO_HUB_TIMEOUT={text!r} is not a number of seconds in (0, {MAX_HUB_TIMEOUT:.0f}]; set it to e.g. "
            f"{DEFAULT_HUB_TIMEOUT:.0f} (the default), or unset it"
        )
    return value


def _within(deadline: float, function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a daemon thread, abandoned after ``deadline`` seconds (TimeoutError).

    huggingface_hub's HTTP client has no overall timeout and retries: a server that accepts the connection and
    never answers would otherwise hold the caller forever."""
    outcome: dict = {}

    def work():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=work, daemon=True, name="zoo-hub-download")
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {deadline:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_unreachable(endpoint: str, timeout: float) -> str | None:
    """Why ``endpoint`` cannot be reached at all (no DNS, connection refused, no route), or None.

    One TCP connection, bounded by ``timeout``: without it huggingface_hub retries a failed name lookup for about
    half a minute per file before falling back to its cache. Behind a proxy the proxy decides, so nothing is
    checked."""
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    url = urllib.parse.urlsplit(endpoint)
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout
        ).close()
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    return None


def _fetch(repo_id: str, filename: str, revision: str | None, deadline: float, local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    check_revision(revision)  # the one gate before huggingface_hub writes refs/<revision> in its cache
    timeout = min(10.0, deadline)
    return Path(
        _within(
            deadline,
            hf_hub_download,
            repo_id,
            filename,
            revision=revision,
            etag_timeout=timeout,
            local_files_only=local_only,
        )
    )


def _fetch_weights(repo_id: str, names: tuple[str, ...], commit: str, deadline: float, local_only: bool):
    """The first of ``names`` the commit holds (safetensors before a pickle where both are listed)."""
    from huggingface_hub.errors import EntryNotFoundError

    missing = None
    for filename in names:
        try:
            return _fetch(repo_id, filename, commit, deadline, local_only)
        except EntryNotFoundError as e:  # also LocalEntryNotFoundError: not in the cache (offline)
            missing = e
    raise missing


def _denied(
    name: str, repo_id: str, error: Exception, access_url: str | None
) -> ModelNotAvailableError | None:
    """The one line for a gated repository, or for a 401 / 403 answer (no token, or no access granted)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError

    status = getattr(getattr(error, "response", None), "status_code", None)
    if not (isinstance(error, GatedRepoError) or (access_url and status in (401, 403))):
        return None
    url = access_url or f"{constants.ENDPOINT}/{repo_id}"
    return ModelNotAvailableError(
        f"{name}: {repo_id} is gated (HTTP {status or 'refused'}): request access at {url}, then log in with "
        "`hf auth login` or set HF_TOKEN to a token of the account that was granted access"
    )


def _download(
    repo_id: str,
    revision: str | None,
    name: str,
    weights: tuple[str, ...] = (WEIGHTS_FILE, HEAD_FILE),  # a model, or a head-only export (zoo/composed.py)
    weight_bytes: int = 0,
    access_url: str | None = None,
) -> Path:
    """The snapshot folder holding the model's files; every file of the same commit. ``weights``: the weight
    files to try in order; ``weight_bytes``: their expected size (big weights get a longer deadline, one
    ``20 x ZOO_HUB_TIMEOUT`` per GiB); ``access_url``: where access to a gated repository is requested."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    deadline = _hub_timeout()
    check_revision(revision, f"{name}: revision")
    unreachable = (
        None if constants.HF_HUB_OFFLINE else hub_unreachable(constants.ENDPOINT, min(5.0, deadline))
    )
    local_only = constants.HF_HUB_OFFLINE or unreachable is not None  # the cache only: nothing to retry
    try:
        config = _fetch(repo_id, MODEL_CONFIG_FILE, revision, deadline, local_only)
        # snapshots/<commit sha>/config.json: pin the other files to it (what the server answered, checked)
        commit = check_commit(config.parent.name, f"{name}: the commit {repo_id} resolved to")
        _fetch_weights(repo_id, weights, commit, 20 * deadline * max(1.0, weight_bytes / 2**30), local_only)
        for optional in (CARD_FILE, OOD_FILE):  # the card, and the OOD reference of exports that have one
            with contextlib.suppress(EntryNotFoundError, LocalEntryNotFoundError):
                _fetch(repo_id, optional, commit, deadline, local_only)
        return config.parent
    except LocalEntryNotFoundError as e:
        denied = _denied(
            name, repo_id, e.__cause__, access_url
        )  # huggingface_hub hides a 403 behind this one
        if denied is not None:
            raise denied from e
        why = (
            "HF_HUB_OFFLINE is set"
            if constants.HF_HUB_OFFLINE
            else f"the Hub ({constants.ENDPOINT}) cannot be reached"
        )
        raise ModelNotAvailableError(
            f"{name}: {repo_id}@{revision or 'main'} is not in the local cache and {why}"
            + (f" ({unreachable})" if unreachable else "")
            + f". Pre-fetch it on a connected machine with `hf download {repo_id}"
            + (f" --revision {revision}" if revision else "")
            + "` (same HF_HOME), or set HF_ENDPOINT to a mirror."
        ) from e
    except TimeoutError as e:
        raise ModelNotAvailableError(
            f"{name}: the Hub at {constants.ENDPOINT} did not answer for {repo_id} ({e}). Check HF_ENDPOINT and "
            "the network, or raise ZOO_HUB_TIMEOUT (seconds)."
        ) from e
    except RevisionNotFoundError as e:
        raise ModelNotAvailableError(f"{name}: {repo_id} has no revision {revision!r}") from e
    except (RepositoryNotFoundError, EntryNotFoundError, HfHubHTTPError) as e:
        denied = _denied(name, repo_id, e, access_url)
        if denied is not None:
            raise denied from e
        if isinstance(e, (RepositoryNotFoundError, EntryNotFoundError)):
            raise ModelNotAvailableError(
                f"{name}: no accessible Hub repository {repo_id} ({type(e).__name__})"
            ) from e
        raise ModelNotAvailableError(f"{name}: downloading {repo_id} failed ({type(e).__name__}: {e})") from e
    except OSError as e:
        raise ModelNotAvailableError(f"{name}: downloading {repo_id} failed ({type(e).__name__}: {e})") from e


def _unknown(name: str, local_paths: bool) -> ModelNotAvailableError:
    close = close_names(name) if is_model_name(name) else []
    where = f"not a folder, not in $ZOO_HOME ({zoo_home()}), " if local_paths else ""
    return ModelNotAvailableError(
        f"unknown model {name!r}: {where}not a registered name, not a Hub repo id (org/name)."
        + (f" Close names: {', '.join(close)}." if close else "")
        + " `medssl-zoo list` shows the available names."
    )


def resolve(name_or_path: str | Path, revision: str | None = None, *, local_paths: bool = True) -> Path:
    """The local folder holding ``name_or_path``'s files, downloading them if needed.

    ``local_paths=False`` (the demo's model box: names typed by strangers) accepts only registered names, models
    in ``$ZOO_HOME`` and Hub ids, never a path on this machine.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    check_revision(revision)
    if local_paths and path.is_dir():
        return path
    if is_model_name(name) and (zoo_home() / name / MODEL_CONFIG_FILE).is_file():
        return zoo_home() / name
    entry = get_entry(name) if is_model_name(name) else None
    if entry is not None and not entry.published:
        raise ModelNotAvailableError(
            f"{name} is registered but its weights are not published yet ({entry.repo_id}). Produce it with "
            f"`medssl-pretrain --recipe {name} --data-root DATA`, export it "
            f"with `medssl-export RUN_DIR $ZOO_HOME/{name}` to use it locally, and publish it with "
            f"`medssl-push $ZOO_HOME/{name} {entry.repo_id}`."
        )
    if isinstance(entry, CatalogueEntry):
        gated = entry.access_url if entry.gated else None
        files, nbytes = entry.weights_files, 4 * entry.params
        return _download(entry.repo_id, revision or entry.revision, name, files, nbytes, gated)
    if entry is not None:
        return _download(entry.repo_id, revision or entry.revision, name)
    if local_paths:
        _refuse_missing_local_path(name, path)
    if is_hub_id(name) and not (local_paths and path.exists()):
        return _download(name, revision, name)
    raise _unknown(name, local_paths)


def _refuse_missing_local_path(name: str, path: Path) -> None:
    """A name only meant as a path here (``./x``, ``/x``, ``~/x``, or ``a/b`` where a folder ``a`` exists in the
    working directory) that does not exist: say so at once, with close names, instead of asking the Hub for it."""
    local = name.startswith((".", "/", "~", os.sep)) or (is_hub_id(name) and path.parent.is_dir())
    if not local or path.exists():
        return
    parent = path.parent
    siblings = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
    close = difflib.get_close_matches(path.name, siblings, n=3, cutoff=0.6)
    hint = f" Close names in {parent}/: {', '.join(close)}." if close else ""
    where = (
        f"{parent}/ exists but holds no {path.name}"
        if parent.is_dir()
        else f"{parent}/ does not exist either"
    )
    raise ModelNotAvailableError(
        f"no folder {name} ({where}); a local path was meant, so the Hub was not asked.{hint}"
    )


def _weights_header(folder: Path) -> dict:
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = [p for p in PICKLE_FILES if (folder / p).is_file()]
        why = (
            f"it only has {pickles}, and pickle files are never loaded (they can run code)"
            if pickles
            else "it is missing"
        )
        raise ValueError(
            f"{folder}: no {WEIGHTS_FILE} ({why}). Re-export the model with `medssl-export RUN_DIR OUT_DIR`."
        )
    return read_header(weights)


def _compare(expected: dict[str, tuple], declared: dict[str, tuple], source: Path, model_name: str) -> None:
    missing = sorted(set(expected) - set(declared))
    unexpected = sorted(set(declared) - set(expected))
    misshaped = sorted(k for k in set(declared) & set(expected) if tuple(declared[k]) != tuple(expected[k]))
    if missing or unexpected or misshaped:
        details = "; ".join(
            f"{label}: {keys[:6]}{' …' if len(keys) > 6 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
            if keys
        )
        raise ValueError(f"{source}: the weights do not fit {model_name} from config.json ({details})")


def _create(config: dict) -> torch.nn.Module:
    return timm.create_model(
        config["architecture"],
        pretrained=False,
        num_classes=config["num_classes"],
        **(config.get("model_args") or {}),
    )


def _build_checked(folder: Path, config: dict) -> torch.nn.Module:
    """The model of ``config`` with the folder's weights: compared on the meta device with the safetensors header
    first, so a folder whose config asks for more than its weights hold is refused before any allocation."""
    declared = {k: shape for k, (_, shape) in _weights_header(folder).items()}
    try:
        with torch.device("meta"):
            skeleton = _create(config)
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:
        raise ValueError(
            f"{folder / MODEL_CONFIG_FILE}: timm cannot build {config['architecture']} from it ({e})"
        ) from e
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    _compare(expected, declared, folder, type(skeleton).__name__)
    model = _create(config)
    try:
        state = load_file(folder / WEIGHTS_FILE)
    except (SafetensorError, OSError) as e:
        raise ValueError(
            f"{folder / WEIGHTS_FILE} is corrupt or truncated ({e}); delete it (or its Hub cache entry) and "
            "download it again"
        ) from e
    model.load_state_dict(state, strict=True)
    return model


def load(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    features_only: bool = False,
    local_paths: bool = True,
) -> torch.nn.Module:
    """Load a zoo model as a timm ``nn.Module`` in eval mode, weights loaded strictly.

    The model carries ``pretrained_cfg`` (input size, mean/std, …), ``label_names`` and ``zoo_metadata``, and
    :mod:`zoo.task`'s ``task`` (``multiclass``: softmax; ``multilabel``: a sigmoid per label, ``thresholds`` per
    label), ``ood`` (the out-of-distribution reference, or None for older exports) and ``ood_score(x)``.
    ``features_only=True`` drops the classifier: ``model(x)`` returns pooled features (N x num_features).
    ``local_paths=False`` refuses paths on this machine (see :func:`resolve`).

    Example:
        >>> model = zoo.load("vicreg-breast")
        >>> probabilities = zoo.task.probabilities(model.task, model(x))  # softmax, or sigmoid if multi-label
        >>> unlike_training_data = model.ood_score(x) > model.ood.threshold
    """
    entry = _catalogue(name_or_path, local_paths)
    if entry is not None and not features_only:
        raise ValueError(
            f"{entry.name} is an encoder without a classifier ({entry.width}-d {entry.pooling} embeddings): load it "
            f"with zoo.load({entry.name!r}, features_only=True) and fit a probe on your data (`medssl-evaluate "
            f"--compare {entry.name},... --dataset imagefolder --data-root DIR` shows which encoder suits it)"
        )
    folder = resolve(name_or_path, revision, local_paths=local_paths)
    if entry is not None:
        return load_entry(entry, folder).eval().to(device or "cpu")
    if not (folder / MODEL_CONFIG_FILE).is_file():
        raise ValueError(f"{folder}: no {MODEL_CONFIG_FILE}; not a timm / MedSSL Zoo model folder")
    config = read_config(folder / MODEL_CONFIG_FILE)
    if is_head_only(config):  # a head published without its base model's weights: composed with them here
        pinned = lambda name, commit: load(name, revision=commit, device=device, features_only=True)  # noqa: E731
        return load_composed(folder, config, pinned, features_only).eval().to(device or "cpu")
    model = _build_checked(folder, config)
    model.pretrained_cfg = {**model.pretrained_cfg, **config["pretrained_cfg"]}
    model.label_names = list(config.get("label_names") or [])
    model.zoo_metadata = dict(config.get("zoo") or {})
    model.source = str(folder)
    if features_only:
        model.reset_classifier(0)
    task.attach(model, folder, config)
    return model.eval().to(device or "cpu")


def _catalogue(name_or_path: str | Path, local_paths: bool) -> CatalogueEntry | None:
    """The catalogue entry ``name_or_path`` names, unless a local folder or a ``$ZOO_HOME`` model of that name
    comes first in the resolution order (see :func:`resolve`)."""
    name = str(name_or_path)
    if local_paths and Path(name).expanduser().is_dir():
        return None
    if is_model_name(name) and (zoo_home() / name / MODEL_CONFIG_FILE).is_file():
        return None
    return catalogue_entry(name) if is_model_name(name) else None


def model_info(name_or_path: str | Path, revision: str | None = None) -> dict:
    """Registry entry plus the model's config (downloaded if needed, weights not loaded); a catalogue entry's
    facts without any download (its model built on the meta device)."""
    from zoo.catalogue import catalogue_info
    from zoo.registry import entry_dict

    entry = _catalogue(name_or_path, local_paths=True)
    if entry is not None:
        return catalogue_info(entry)
    info = {"name": str(name_or_path), "registry": entry_dict(str(name_or_path))}
    folder = resolve(name_or_path, revision)
    config = read_config(folder / MODEL_CONFIG_FILE)
    info.update(
        folder=str(folder),
        architecture=config["architecture"],
        num_classes=config["num_classes"],
        label_names=config.get("label_names"),
        pretrained_cfg=config["pretrained_cfg"],
        zoo=config.get("zoo", {}),
    )
    return info
