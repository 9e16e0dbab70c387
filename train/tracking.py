"""Experiment trackers through Accelerate: any of the trackers it supports, one or several at once.

``log_with: tensorboard,mlflow`` (or ``wandb``, ``comet_ml``, ``aim``, ``clearml``) starts each named tracker
on the main process with the resolved configuration; the trainer then logs per-step loss / lr / spread, each kNN
evaluation, the final metrics and the curves image. Local trackers write into ``<run>/tracking`` unless their own
environment variables say otherwise (``MLFLOW_TRACKING_URI``, ``WANDB_DIR``). A tracker whose package is missing is
an error naming the package, never a silent drop (Accelerate only warns).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from accelerate import Accelerator

from zoo.run_dir import TRACKING_DIR

__all__ = ["TRACKERS", "parse_trackers", "check_trackers", "start_trackers", "end_trackers", "log_image"]

log = logging.getLogger("train")
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
    """One clear error for the first tracker whose package is not installed."""
    for name in names:
        package = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            hint = "mlflow-skinny (or mlflow)" if package == "mlflow" else package.replace("_", "-")
            raise ValueError(f"log_with={name} needs the {package} package: pip install {hint}")


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
