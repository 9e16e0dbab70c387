"""The run directory's lifecycle: claim it (or the run to resume) once, on the main process, for every process.

Only the main process looks at the file system and decides; the decision (the folder, the checkpoint to resume
from) or the error is broadcast, so N processes never race each other into different answers. A folder is only
ever written to when it is new, empty, an earlier run of this project being resumed, or the leftovers of a run
that failed during setup (nothing but run-directory files, no ``config.yaml``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from medssl_zoo.train.checkpoint import (
    CheckpointError,
    TrainState,
    newest_intact_checkpoint,
    verify_checkpoint,
)
from medssl_zoo.train.config import RESUMABLE_CHANGES, PretrainConfig
from zoo.files import atomic_write_text
from zoo.run_dir import CHECKPOINTS_DIR, CONFIG_FILE, METRICS_FILE, is_run, is_run_file, read_run

__all__ = [
    "RunClaim",
    "RunDirError",
    "claim_run_dir",
    "checkpoint_config",
    "write_run_config",
    "truncate_metrics",
]

log = logging.getLogger("train")


class RunDirError(ValueError):
    """The output folder cannot be used for this run; the message says why and what to do."""


@dataclass
class RunClaim:
    """What the main process decided: the run directory, and the checkpoint to resume from (if any)."""

    run_dir: Path
    checkpoint: Path | None = None
    state: TrainState | None = None
    resumed: bool = False  # an existing run is continued (from ``checkpoint``, or from step 0 if it has none)


def checkpoint_config(cfg: PretrainConfig) -> dict:
    """The part of the configuration a checkpoint and the run resuming it must share."""
    return {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}


def _check_new_folder(run_dir: Path) -> None:
    if is_run(run_dir):
        raise RunDirError(
            f"{run_dir} already holds a run; pass --resume to continue it or a new --output-dir"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--output-dir {run_dir} is a file; give a folder")
    foreign = sorted(p.name for p in run_dir.iterdir() if not is_run_file(p.name)) if run_dir.is_dir() else []
    if foreign:
        raise RunDirError(
            f"--output-dir {run_dir} already holds files that are not a run's ({', '.join(foreign[:5])}); "
            "give a new or empty folder: a run never writes into someone else's folder"
        )


def _check_same_config(run_dir: Path, cfg: PretrainConfig) -> None:
    saved = read_run(run_dir).config
    differing = sorted(
        k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k) != v
    )
    if differing:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {getattr(cfg, k)!r}" for k in differing)
        raise RunDirError(f"--resume: the configuration does not match the checkpoint's run ({details})")


def _choose_checkpoint(run_dir: Path, cfg: PretrainConfig, resume: str) -> RunClaim:
    expected = checkpoint_config(cfg)
    if resume != "latest":
        folder = Path(resume)
        if not folder.is_dir():
            raise RunDirError(f"--resume {resume}: no such checkpoint folder")
        return RunClaim(run_dir, folder, verify_checkpoint(folder, expected), resumed=True)
    found = newest_intact_checkpoint(run_dir, expected)
    if found is None:
        if any((run_dir / CHECKPOINTS_DIR).glob("step_*")):
            raise RunDirError(
                f"--resume latest: no checkpoint of {run_dir} is intact (see the warnings above)"
            )
        log.warning("%s has no checkpoint yet: starting the run from step 0", run_dir)
        return RunClaim(run_dir, resumed=True)
    return RunClaim(run_dir, *found, resumed=True)


def _decide(cfg: PretrainConfig, resume: str | None) -> RunClaim:
    run_dir = Path(cfg.output_dir or f"runs/{cfg.method}-{cfg.dataset}-{datetime.now():%Y%m%d-%H%M%S}")
    if resume is not None and is_run(run_dir):
        _check_same_config(run_dir, cfg)
        return _choose_checkpoint(run_dir, cfg, resume)
    if resume not in (None, "latest"):
        raise RunDirError(f"--resume {resume}: {run_dir} holds no run to resume (no {CONFIG_FILE})")
    if resume == "latest":
        log.warning(
            "--resume: %s holds no run yet (a run that failed during setup?): starting afresh", run_dir
        )
    _check_new_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunClaim(run_dir)


def claim_run_dir(accelerator: Accelerator, cfg: PretrainConfig, resume: str | None) -> RunClaim:
    """Decide on the main process, broadcast the decision (or the error) to every process."""
    decision: list = [None]
    if accelerator.is_main_process:
        try:
            decision = [_decide(cfg, resume)]
        except (RunDirError, CheckpointError) as e:
            decision = [RunDirError(str(e))]
    decision = broadcast_object_list(decision)
    if isinstance(decision[0], Exception):
        raise decision[0]
    return decision[0]


def write_run_config(run_dir: Path, cfg: PretrainConfig) -> None:
    """``config.yaml``, written once setup succeeded: from then on the folder is a run."""
    import yaml

    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop what a crashed run logged after the checkpoint it resumes from (and a half-written last line), so
    the resumed run does not log those steps twice; ``step = -1`` drops everything (a restart from step 0)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut off
        if record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
