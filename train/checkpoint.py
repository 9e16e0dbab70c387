"""Crash-safe checkpoints of a run: Accelerate's ``save_state`` into a temporary folder, then a rename.

A checkpoint folder ``checkpoints/step_0000100`` exists only once it is complete: a crash in the middle of a
write leaves a ``.tmp-*`` folder that is ignored (and removed by the next save), never a corrupt latest.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator

__all__ = ["TrainState", "save_checkpoint", "latest_checkpoint", "load_checkpoint"]

STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    best_knn: float = -1.0
    best_step: int = -1


def _folder(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:07d}"


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainState, keep: int = 2) -> Path:
    """Save model, optimizer, RNG states and ``state`` atomically; keep the ``keep`` newest checkpoints."""
    final = _folder(run_dir, state.step)
    tmp = final.with_name(".tmp-" + final.name)
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state)))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted((run_dir / "checkpoints").glob("step_*"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of ``run_dir``, or None."""
    complete = [p for p in sorted((run_dir / "checkpoints").glob("step_*")) if (p / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def load_checkpoint(accelerator: Accelerator, folder: Path) -> TrainState:
    if not (folder / STATE_FILE).is_file():
        raise ValueError(
            f"{folder} is not a complete checkpoint (no {STATE_FILE}); pass a checkpoints/step_* folder"
        )
    accelerator.load_state(str(folder))
    return TrainState(**json.loads((folder / STATE_FILE).read_text()))
