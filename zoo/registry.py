"""The model registry: short names (``<method>-<dataset>``) → Hub repo id + revision.

The study's twelve models are registered here. They are **not published yet**: until their weights are pushed
(``train/pretrain.py --config NAME`` + ``python -m hub.export`` + ``python -m hub.push``), loading one gives an error that says how to produce it — never
a silently random model. Users add their own with :func:`register` or a registry file named by
``$ZOO_REGISTRY`` (YAML or JSON: ``{name: {repo_id: ..., revision: ...}}``).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from zoo._registry import Registry
from zoo.hub_format import CONFIG_FILE, zoo_home

__all__ = [
    "ModelEntry",
    "register",
    "get_entry",
    "list_models",
    "close_names",
    "STUDY_METHODS",
    "STUDY_DATASETS",
]

STUDY_METHODS = ("simclr", "dclw", "simsiam", "vicreg")
STUDY_DATASETS = ("breast", "crc", "pneumonia")
HUB_ORG = "medssl-zoo"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    repo_id: str
    revision: str | None = None  # a 40-character commit sha once published (reproducible downloads)
    published: bool = True
    description: str = ""


MODELS: Registry[ModelEntry] = Registry("model")


def register(
    name: str, repo_id: str, revision: str | None = None, description: str = "", *, overwrite: bool = False
) -> ModelEntry:
    """Register ``name`` → ``repo_id`` at ``revision`` (pin a commit sha for reproducibility); a taken name is
    an error unless ``overwrite``."""
    return MODELS.register(ModelEntry(name, repo_id, revision, True, description), overwrite=overwrite)


def _user_registry() -> dict[str, ModelEntry]:
    path = os.environ.get("ZOO_REGISTRY")
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"$ZOO_REGISTRY {path} cannot be read ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"$ZOO_REGISTRY {path}: expected a mapping name → {{repo_id, revision}}")
    entries = {}
    for name, item in data.items():
        if not isinstance(item, dict) or "repo_id" not in item:
            raise ValueError(f"$ZOO_REGISTRY {path}: entry {name!r} needs a repo_id")
        entries[name] = ModelEntry(
            name, item["repo_id"], item.get("revision"), True, item.get("description", "")
        )
    return entries


def _all_entries() -> dict[str, ModelEntry]:
    return {**{e.name: e for e in MODELS}, **_user_registry()}


def get_entry(name: str) -> ModelEntry | None:
    return _all_entries().get(name)


def local_models() -> list[str]:
    """Models exported into ``$ZOO_HOME``."""
    home = zoo_home()
    return sorted(p.name for p in home.iterdir() if (p / CONFIG_FILE).is_file()) if home.is_dir() else []


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
