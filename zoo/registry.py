"""The model registry: short names (``<method>-<dataset>``) → Hub repo id + revision.

The study's twelve models are registered here. They are **not published yet**: until their weights are pushed
(``medssl-pretrain --recipe NAME`` + ``medssl-export`` + ``medssl-push``), loading one gives an error that says how
to produce it — never
a silently random model. Users add their own with :func:`register` or a registry file named by
``$ZOO_REGISTRY`` (YAML or JSON: ``{name: {repo_id: ..., revision: ...}}``).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from zoo._registry import Registry
from zoo.files import load_yaml, read_text
from zoo.hub_format import MODEL_CONFIG_FILE, zoo_home
from zoo.revision import check_revision

__all__ = [
    "ModelEntry",
    "register",
    "get_entry",
    "list_models",
    "close_names",
    "STUDY_METHODS",
    "STUDY_DATASETS",
    "HUB_ID",
    "LOCAL_NAME",
    "MAX_REGISTRY_BYTES",
]

STUDY_METHODS = ("simclr", "dclw", "simsiam", "vicreg")
STUDY_DATASETS = ("breast", "crc", "pneumonia")
HUB_ORG = "medssl-zoo"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")  # org/name
LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a model name in $ZOO_HOME or the registry
MAX_REGISTRY_BYTES = 1024 * 1024  # a registry file of a few thousand entries


def is_model_name(name) -> bool:
    """A plain model name (``vicreg-breast``): letters, digits, ``. _ -``, no path."""
    return isinstance(name, str) and bool(LOCAL_NAME.match(name)) and ".." not in name


def is_hub_id(name) -> bool:
    """A Hub repository id ``org/name`` (no path tricks)."""
    return isinstance(name, str) and bool(HUB_ID.match(name)) and ".." not in name


@dataclass(frozen=True)
class ModelEntry:
    """A registered model; every field is checked on creation (registry files come from anywhere)."""

    name: str
    repo_id: str
    revision: str | None = None  # a 40-character commit sha once published (reproducible downloads)
    published: bool = True
    description: str = ""

    def __post_init__(self):
        if not is_model_name(self.name):
            raise ValueError(f"model name {self.name!r} must be letters, digits and . _ - (no path)")
        if not is_hub_id(self.repo_id):
            raise ValueError(f"{self.name}: repo_id {self.repo_id!r} must be a Hub repository id org/name")
        check_revision(self.revision, f"{self.name}: revision")
        if not isinstance(self.description, str):
            raise ValueError(f"{self.name}: description must be text")


MODELS: Registry[ModelEntry] = Registry("model")


def register(
    name: str, repo_id: str, revision: str | None = None, description: str = "", *, overwrite: bool = False
) -> ModelEntry:
    """Register ``name`` → ``repo_id`` at ``revision`` (pin a commit sha for reproducibility); a taken name is
    an error unless ``overwrite``."""
    return MODELS.register(ModelEntry(name, repo_id, revision, True, description), overwrite=overwrite)


def read_registry_file(path: str | Path, what: str = "registry file") -> dict[str, ModelEntry]:
    """Entries of a registry file (``.json``, else YAML: ``{name: {repo_id, revision, description}}``), bounded
    and checked entry by entry; ``ValueError`` naming the file and the entry."""
    path = Path(path)
    try:
        text = read_text(path, MAX_REGISTRY_BYTES, what)
        data = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text, f"{what} {path}")
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} cannot be read ({e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path}: expected a mapping name → {{repo_id, revision}}")
    entries = {}
    for name, item in data.items():
        if not isinstance(name, str):
            raise ValueError(f"{what} {path}: entry {name!r} must be named by text (quote it: '{name}':)")
        if not isinstance(item, dict) or "repo_id" not in item:
            raise ValueError(f"{what} {path}: entry {name!r} needs a repo_id")
        unknown = sorted(set(item) - {"repo_id", "revision", "description"})
        if unknown:
            raise ValueError(f"{what} {path}: entry {name!r} has unknown keys {unknown}")
        try:
            entries[name] = ModelEntry(
                name, item["repo_id"], item.get("revision"), True, item.get("description", "")
            )
        except ValueError as e:
            raise ValueError(f"{what} {path}: {e}") from e
    return entries


def _user_registry() -> dict[str, ModelEntry]:
    path = os.environ.get("ZOO_REGISTRY")
    return read_registry_file(path, "$ZOO_REGISTRY") if path else {}


def _all_entries() -> dict[str, ModelEntry]:
    return {**{e.name: e for e in MODELS}, **_user_registry()}


def get_entry(name: str) -> ModelEntry | None:
    return _all_entries().get(name)


def local_models() -> list[str]:
    """Models exported into ``$ZOO_HOME``."""
    home = zoo_home()
    return (
        sorted(p.name for p in home.iterdir() if (p / MODEL_CONFIG_FILE).is_file()) if home.is_dir() else []
    )


def list_models(pattern: str | None = None) -> list[str]:
    """Registered and locally exported model names, optionally filtered by a shell pattern (``vicreg-*``)."""
    names = sorted(set(_all_entries()) | set(local_models()))
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def close_names(name: str) -> list[str]:
    return difflib.get_close_matches(name, list_models(), n=5, cutoff=0.5)


def entry_dict(name: str) -> dict | None:
    entry = get_entry(name)
    return asdict(entry) if entry else None


for _method in STUDY_METHODS:
    for _dataset in STUDY_DATASETS:
        _name = f"{_method}-{_dataset}"
        MODELS.register(
            ModelEntry(
                _name,
                f"{HUB_ORG}/{_name}",
                revision=None,
                published=False,
                description=f"{_method} pre-trained on {_dataset} with the original study's recipe",
            )
        )
