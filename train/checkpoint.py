"""Crash-safe, verifiable checkpoints of a run: Accelerate's ``save_state`` into a temporary folder, then a rename.

A checkpoint folder ``checkpoints/step_0000100`` exists only once it is complete: a crash in the middle of a
write leaves a ``.tmp-*`` folder that is ignored (and removed by the next save), never a corrupt latest.
``trainer_state.json`` records the step, the run configuration the checkpoint belongs to and the size and sha256
of every file, so a checkpoint of another run, or one damaged on disk later, is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator

from zoo.run_dir import CHECKPOINTS_DIR

__all__ = [
    "CheckpointError",
    "TrainState",
    "save_checkpoint",
    "latest_checkpoint",
    "newest_intact_checkpoint",
    "verify_checkpoint",
    "load_checkpoint",
]

log = logging.getLogger("train")
STATE_FILE = "trainer_state.json"


class CheckpointError(ValueError):
    """A checkpoint is incomplete, damaged, or belongs to another run."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    best_knn: float = -1.0
    best_step: int = -1


def _folder(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS_DIR / f"step_{step:07d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file Accelerate wrote (relative paths)."""
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STATE_FILE
    }


def save_checkpoint(
    accelerator: Accelerator, run_dir: Path, state: TrainState, config: dict, keep: int = 2
) -> Path:
    """Save model, optimizer, RNG states and ``state`` atomically; keep the ``keep`` newest checkpoints.

    ``config`` (the part of the run configuration a resumed run must share) is stored with the checkpoint.
    """
    final = _folder(run_dir, state.step)
    tmp = final.with_name(".tmp-" + final.name)
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # a half-written checkpoint of this run, left by a crash
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's files are written before they are hashed
    if accelerator.is_main_process:
        record = {**asdict(state), "config": config, "files": _manifest(tmp)}
        (tmp / STATE_FILE).write_text(json.dumps(record, indent=1))
        if final.exists():  # this run's own checkpoint of the same step (a resumed run passing it again)
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted((run_dir / CHECKPOINTS_DIR).glob("step_*"))[:-keep]:
            shutil.rmtree(old)  # this run's own older checkpoints, beyond keep_checkpoints
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of ``run_dir`` (not verified), or None."""
    complete = [p for p in sorted((run_dir / CHECKPOINTS_DIR).glob("step_*")) if (p / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def _read_state(folder: Path) -> dict:
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(
            f"{folder} is not a complete checkpoint (no {STATE_FILE}); pass a checkpoints/step_* folder"
        )
    try:
        record = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder / STATE_FILE} is damaged ({e})") from e
    if not isinstance(record, dict) or not {"step", "config", "files"} <= set(record):
        raise CheckpointError(f"{folder / STATE_FILE} is not a checkpoint record of this project")
    return record


def verify_checkpoint(folder: Path, config: dict) -> TrainState:
    """Check that ``folder`` is intact (every file present with its recorded size and hash) and belongs to a run
    configured as ``config``; its :class:`TrainState` or :class:`CheckpointError` saying what is wrong."""
    record = _read_state(folder)
    differing = sorted(
        k for k in set(config) | set(record["config"]) if record["config"].get(k) != config.get(k)
    )
    if differing:
        details = "; ".join(
            f"{k}: checkpoint {record['config'].get(k)!r}, this run {config.get(k)!r}" for k in differing
        )
        raise CheckpointError(f"{folder} belongs to a run configured differently ({details})")
    for name, expected in record["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder} is damaged: {name} is missing")
        if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
            raise CheckpointError(
                f"{folder} is damaged: {name} has {path.stat().st_size} bytes, {expected['size']} were "
                "written (truncated or changed on disk)"
            )
    return TrainState(**{k: record[k] for k in ("step", "best_knn", "best_step")})


def newest_intact_checkpoint(run_dir: Path, config: dict) -> tuple[Path, TrainState] | None:
    """The newest checkpoint of ``run_dir`` that verifies, skipping (and reporting) damaged newer ones."""
    for folder in sorted((run_dir / CHECKPOINTS_DIR).glob("step_*"), reverse=True):
        try:
            return folder, verify_checkpoint(folder, config)
        except CheckpointError as e:
            log.warning("skipping %s; falling back to an older checkpoint", e)
    return None


def load_checkpoint(accelerator: Accelerator, folder: Path) -> None:
    """Restore model, optimizer, scheduler-free RNG and loader states from a verified checkpoint."""
    accelerator.load_state(str(folder))
