"""Experiment trackers through Accelerate: any of the trackers it supports, one or several at once.

``log_with: tensorboard,mlflow`` (or ``wandb``, ``comet_ml``, ``aim``, ``clearml``) starts each named tracker
on the main process with the resolved configuration; the trainer then logs per-step loss / lr / spread, each kNN
evaluation, the final metrics and the curves image. Local trackers write into ``<run>/tracking`` unless their own
environment variables say otherwise (``MLFLOW_TRACKING_URI``, ``WANDB_DIR``). A tracker whose package is missing is
an error naming the package, never a silent drop (Accelerate only warns). Where a tracker logs to is checked before
the run claims its folder: a tracking server must answer within ``TRACKER_TIMEOUT`` seconds (MLflow's own client
retries for minutes), a local store must be a folder that can be written; MLflow's own requests are bounded too.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from accelerate import Accelerator

from medssl_zoo.train.network import unreachable
from zoo.run_dir import TRACKING_DIR

__all__ = ["TRACKERS", "parse_trackers", "check_trackers", "start_trackers", "end_trackers", "log_image"]

log = logging.getLogger("train")
TRACKER_TIMEOUT = 5.0  # seconds a tracking server has to answer before the run starts
MLFLOW_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}  # per request
OFFLINE_WANDB = ("offline", "disabled", "dryrun")
# tracker name (Accelerate's) → the package it needs
TRACKERS = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "clearml": "clearml",
}


def parse_trackers(value: str) -> list[str]:
    """``"none"`` → [], ``"tensorboard,mlflow"`` → both; ``ValueError`` naming unknown trackers."""
    names = [n.strip() for n in str(value).split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"log_with: unknown tracker(s) {unknown}; choose from none, {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def check_trackers(names: list[str]) -> None:
    """One clear error for the first tracker whose package is not installed or whose destination cannot be used
    (bounded by ``TRACKER_TIMEOUT``); called before the run claims its folder."""
    for name in names:
        package = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            hint = "mlflow-skinny (or mlflow)" if package == "mlflow" else package.replace("_", "-")
            raise ValueError(f"log_with={name} needs the {package} package: pip install {hint}")
    if "mlflow" in names and os.environ.get("MLFLOW_TRACKING_URI"):
        _check_mlflow(os.environ["MLFLOW_TRACKING_URI"])
    if "wandb" in names and os.environ.get("WANDB_MODE", "").lower() not in OFFLINE_WANDB:
        url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        _check_reachable(url, f"W&B ({url})", "set WANDB_MODE=offline to log locally")


def _check_mlflow(uri: str) -> None:
    """MLFLOW_TRACKING_URI: a local store (a path, ``file:``, ``sqlite:``) must be usable, a server must answer."""
    parts = urlsplit(uri)
    scheme, fix = parts.scheme.lower(), "fix MLFLOW_TRACKING_URI, or unset it to log into the run folder"
    if scheme in ("", "file") or len(scheme) == 1:  # a path (C:\\ on Windows) or file:///path
        _check_local_folder(
            Path(url2pathname(parts.path) if scheme == "file" else uri), f"MLFLOW_TRACKING_URI {uri}"
        )
    elif scheme == "sqlite":
        database = Path(uri.split(":///", 1)[-1]) if ":///" in uri else None
        if database is not None and str(database) not in ("", ":memory:"):
            _check_local_folder(database.parent, f"the folder of MLFLOW_TRACKING_URI {uri}")
    elif scheme in ("http", "https"):
        _check_reachable(uri, f"the MLflow server at MLFLOW_TRACKING_URI {uri}", fix)


def _check_local_folder(path: Path, what: str) -> None:
    """``path`` is a folder, or can be made one: no file in its place, its nearest existing parent writable."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"{what} is a file, not a folder: fix MLFLOW_TRACKING_URI, or unset it to log into the run folder"
        )
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{what} cannot be written ({existing} is not a writable folder); give a folder you can write to"
        )


def _check_reachable(url: str, what: str, fix: str) -> None:
    reason = unreachable(url, TRACKER_TIMEOUT)
    if reason is not None:
        raise ValueError(f"{what} cannot be reached ({reason}); {fix}")


_SET_HERE: set[str] = set()  # environment variables this module set for the current run (removed at its end)


def _set_default(key: str, value: str) -> None:
    if key not in os.environ:
        os.environ[key] = value
        _SET_HERE.add(key)


def _local_defaults(names: list[str], tracking_dir: Path) -> None:
    """Point local trackers into the run directory unless the user configured them."""
    if "mlflow" in names:
        _set_default("MLFLOW_TRACKING_URI", (tracking_dir / "mlruns").resolve().as_uri())
        _set_default("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps the file store behind a flag
        for key, value in MLFLOW_LIMITS.items():  # its client would otherwise retry a lost server for minutes
            _set_default(key, value)
    if "wandb" in names:
        _set_default("WANDB_DIR", str(tracking_dir))


def _flat_config(config: dict) -> dict:
    """Tracker-friendly hyper-parameters: scalars as they are, everything else as text."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}


def start_trackers(
    accelerator: Accelerator, names: list[str], run_dir: Path, project: str, config: dict
) -> None:
    """Start the named trackers (main process) with the configuration as hyper-parameters."""
    if not names:
        return
    tracking_dir = run_dir / TRACKING_DIR
    if accelerator.is_main_process:
        tracking_dir.mkdir(exist_ok=True)
        _local_defaults(names, tracking_dir)
    # the run directory is known only now (after the Accelerator was built): hand Accelerate the trackers here
    accelerator.log_with = names
    accelerator.project_configuration.logging_dir = str(tracking_dir)
    accelerator.init_trackers(project, config=_flat_config(config))


def end_trackers(accelerator: Accelerator) -> None:
    """Finish every tracker and forget the run-directory defaults (a later run in this process gets its own)."""
    accelerator.end_training()
    for key in _SET_HERE:
        os.environ.pop(key, None)
    _SET_HERE.clear()


def log_image(accelerator: Accelerator, path: Path, step: int) -> None:
    """Log a PNG (the curves) to every tracker that takes images or artifacts."""
    if not accelerator.is_main_process or not accelerator.trackers:
        return
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "mlflow":
            tracker.log_artifact(str(path))
        elif hasattr(tracker, "log_images"):
            kwargs = {"dataformats": "HWC"} if tracker.name == "tensorboard" else {}
            tracker.log_images(
                {path.stem: [image] if tracker.name == "wandb" else image}, step=step, **kwargs
            )
