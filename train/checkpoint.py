"""Crash-safe, verifiable checkpoints of a run: Accelerate's ``save_state`` into a temporary folder, then a rename.

A checkpoint folder ``checkpoints/step_0000100`` exists only once it is complete: a crash in the middle of a
write leaves a temporary folder (``zoo.files`` naming) that is ignored and removed by the next save, never a
corrupt latest. ``trainer_state.json`` records the step, the run it belongs to (its ``run_id``), the run
configuration and the size and sha256 of every file, so a checkpoint of another run, one damaged on disk later, or
one whose record was edited (a negative step, an entry outside the folder, a file it does not list) is refused
with a clear message. Only folders this run wrote — its record names the run and lists exactly the files in it —
are ever deleted by rotation; links are never followed or deleted through.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from safetensors.torch import load_file

from zoo.files import (
    atomic_write_json,
    read_json,
    remove_stale_temporaries,
    sha256_file,
    temporary_path,
)
from zoo.run_dir import CHECKPOINTS_DIR
from zoo.wrapped import unwrapped_keys

__all__ = [
    "CheckpointError",
    "TrainState",
    "STATE_FILE",
    "config_differences",
    "list_checkpoints",
    "save_checkpoint",
    "newest_intact_checkpoint",
    "verify_checkpoint",
    "load_checkpoint",
]

log = logging.getLogger("train")
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"  # what Accelerate's save_state writes for the model (safe serialisation)
STATE_LIMIT = 4 * 2**20  # bytes; a record is a few KB
MAX_FILES = 1024  # files in one checkpoint: Accelerate writes a handful per process
MAX_STEP = 10**12
_STEP_NAME = re.compile(r"step_(\d{7,13})")
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


class CheckpointError(ValueError):
    """A checkpoint is incomplete, damaged, or belongs to another run."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    best_knn: float = -1.0
    best_step: int = -1


def config_differences(saved: Mapping, current: Mapping, now: str = "this run") -> str:
    """``"key: checkpoint A, <now> B; …"`` for every key whose value differs ("" when none): the one comparison of
    a checkpoint's or a run's stored configuration with the current one."""
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    return "; ".join(f"{k}: checkpoint {saved.get(k)!r}, {now} {current.get(k)!r}" for k in keys)


def _folder(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS_DIR / f"step_{step:07d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every entry of ``checkpoints/`` named like a checkpoint, oldest first (by step, not
    by name: names grow a digit past 9 999 999). Not verified: links and strangers' folders are listed too."""
    try:
        names = os.listdir(run_dir / CHECKPOINTS_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [
        (int(m.group(1)), run_dir / CHECKPOINTS_DIR / n) for n in names if (m := _STEP_NAME.fullmatch(n))
    ]
    return sorted(found)


def _manifest(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file Accelerate wrote (relative paths)."""
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STATE_FILE
    }


def save_checkpoint(
    accelerator: Accelerator,
    run_dir: Path,
    state: TrainState,
    config: dict,
    run_id: str | None,
    keep: int = 2,
) -> Path:
    """Save model, optimizer, RNG states and ``state`` atomically; keep the ``keep`` newest checkpoints of this run.

    ``config`` (the part of the run configuration a resumed run must share) and ``run_id`` are stored with the
    checkpoint. A failure (a full disk) leaves the previous checkpoints and no half-written folder.
    """
    final, main = _folder(run_dir, state.step), accelerator.is_main_process
    name = [None]
    if main:
        _check_checkpoints_dir(run_dir)
        remove_stale_temporaries(final.parent, "step_")  # this project's own, of processes that died
        name = [temporary_path(final).name]
    tmp = final.parent / broadcast_object_list(name)[0]  # every process writes into the same folder
    try:
        with _hooked(accelerator.register_save_state_pre_hook(_save_unwrapped)):
            accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()  # every rank's files are written before they are hashed
        if main:
            record = {**asdict(state), "run_id": run_id, "config": config, "files": _manifest(tmp)}
            atomic_write_json(tmp / STATE_FILE, record, indent=1)
            _make_room(final, run_id)
            os.rename(tmp, final)
            _rotate(run_dir, run_id, keep)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)  # our own half-written temporary checkpoint
        raise
    accelerator.wait_for_everyone()
    return final


def _check_checkpoints_dir(run_dir: Path) -> None:
    folder = run_dir / CHECKPOINTS_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise CheckpointError(
            f"{folder} is a link or a file; checkpoints are written only into a folder of the run itself"
        )
    folder.mkdir(exist_ok=True)


def _is_own(folder: Path, run_id: str | None) -> bool:
    """Whether ``folder`` is a checkpoint this run wrote: a real folder whose valid record names this run and
    lists exactly the files it holds (their content is not hashed: a damaged own checkpoint is still its own)."""
    try:
        record = _read_record(folder)
        files = _validated_files(folder, record)
        if _run_id(folder, record) != run_id:
            return False
        _check_contents(folder, files)
    except CheckpointError:
        return False
    return True


_warned: set[Path] = set()


def _make_room(final: Path, run_id: str | None) -> None:
    """Free the name ``final``: this run's own checkpoint of the same step (a resumed run passing it again) is
    replaced; anything else there is renamed aside, never deleted."""
    if not (final.exists() or final.is_symlink()):
        return
    if _is_own(final, run_id):
        shutil.rmtree(final)  # this run's own checkpoint of this step (verified by _is_own)
        return
    aside = final.with_name(f"{final.name}.set-aside-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}")
    os.rename(final, aside)
    log.warning("%s was not a checkpoint of this run: moved aside to %s (nothing deleted)", final, aside.name)


def _rotate(run_dir: Path, run_id: str | None, keep: int) -> None:
    """Delete this run's own checkpoints beyond the ``keep`` newest; other entries are left alone (named once)."""
    own = []
    for _, folder in list_checkpoints(run_dir):
        if _is_own(folder, run_id):
            own.append(folder)
        elif folder not in _warned:
            _warned.add(folder)
            log.warning(
                "%s is not a checkpoint of this run (a link, or not written by it): left alone", folder
            )
    for folder in own[:-keep]:
        # this run's own older checkpoint (verified by _is_own), beyond keep_checkpoints
        shutil.rmtree(folder)


def _read_record(folder: Path) -> dict:
    if folder.is_symlink():
        raise CheckpointError(f"{folder} is a symbolic link; a checkpoint is a folder of the run itself")
    state = folder / STATE_FILE
    if not folder.is_dir() or state.is_symlink() or not state.is_file():
        raise CheckpointError(
            f"{folder} is not a complete checkpoint (no {STATE_FILE}); pass a checkpoints/step_* folder"
        )
    try:
        record = read_json(state, STATE_LIMIT, "checkpoint record")
    except ValueError as e:
        raise CheckpointError(f"{state} is damaged ({e})") from e
    if not isinstance(record, dict) or not {"step", "config", "files"} <= set(record):
        raise CheckpointError(f"{state} is not a checkpoint record of this project")
    return record


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _validated_state(folder: Path, record: dict) -> TrainState:
    """The record's step and best kNN, each checked (type, range, agreement with the folder's name)."""
    step, best_knn, best_step = record["step"], record.get("best_knn"), record.get("best_step")
    named = _STEP_NAME.fullmatch(folder.name)
    problems = []
    if not _is_int(step, 0, MAX_STEP):
        problems.append(f"step {step!r} is not a count of steps")
    elif named and int(named.group(1)) != step:
        problems.append(f"step {step} disagrees with the folder's name")
    knn_ok = isinstance(best_knn, (int, float)) and not isinstance(best_knn, bool) and math.isfinite(best_knn)
    if not (knn_ok and -1 <= best_knn <= 1):
        problems.append(f"best_knn {best_knn!r} is not an accuracy (or -1)")
    if not (_is_int(best_step, -1, MAX_STEP) and (not _is_int(step, 0, MAX_STEP) or best_step <= step)):
        problems.append(f"best_step {best_step!r} is not a step up to {step!r} (or -1)")
    if not isinstance(record["config"], dict) or not all(isinstance(k, str) for k in record["config"]):
        problems.append("config is not a mapping of configuration keys")
    if problems:
        raise CheckpointError(f"{folder / STATE_FILE} is damaged: {'; '.join(problems)}")
    return TrainState(step=step, best_knn=float(best_knn), best_step=best_step)


def _run_id(folder: Path, record: dict) -> str | None:
    run_id = record.get("run_id")
    if run_id is not None and not (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
        raise CheckpointError(f"{folder / STATE_FILE} is damaged: run_id {run_id!r} is not a run id")
    return run_id


def _safe_entry(name) -> bool:
    """A relative path inside the folder: plain components, no ``..``, no absolute path, no backslash."""
    parts = name.split("/") if isinstance(name, str) and len(name) <= 1024 else []
    return 0 < len(parts) <= 8 and all(_COMPONENT.fullmatch(p) and p not in (".", "..") for p in parts)


def _validated_files(folder: Path, record: dict) -> dict[str, dict]:
    """The manifest, checked: entries only inside the folder, each a size and a sha256, the model among them."""
    files = record["files"]
    if not isinstance(files, dict) or not 0 < len(files) <= MAX_FILES:
        raise CheckpointError(f"{folder / STATE_FILE} is damaged: its file list is not a manifest")
    for name, entry in files.items():
        if not _safe_entry(name) or name == STATE_FILE:
            raise CheckpointError(
                f"{folder / STATE_FILE} lists {name!r}, which is not a file inside the checkpoint folder"
            )
        valid = isinstance(entry, dict) and _is_int(entry.get("size"), 0, 2**62)
        if not (valid and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])):
            raise CheckpointError(
                f"{folder / STATE_FILE} is damaged: the entry of {name!r} has no size and sha256"
            )
    if MODEL_FILE not in files:
        raise CheckpointError(
            f"{folder / STATE_FILE} does not list {MODEL_FILE}: not a checkpoint of this project"
        )
    return files


def _check_contents(folder: Path, files: dict[str, dict]) -> None:
    """The folder holds exactly the listed files (plus the record): regular files, no links, nothing unlisted —
    every file Accelerate will load is one whose size and hash were recorded."""
    found, seen = set(), 0
    for root, dirs, names in os.walk(folder):  # does not descend into links to folders
        for name in dirs + names:
            seen += 1
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if seen > MAX_FILES + 16:
                raise CheckpointError(f"{folder} holds more than {MAX_FILES} entries: not a checkpoint")
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise CheckpointError(f"{folder} holds {relative}, a link or special file: refused")
            if path.is_file() and relative != STATE_FILE:
                found.add(relative)
    missing, unlisted = sorted(set(files) - found), sorted(found - set(files))
    if missing:
        raise CheckpointError(f"{folder} is damaged: {missing[0]} is missing")
    if unlisted:
        raise CheckpointError(
            f"{folder} holds files its record does not list ({', '.join(unlisted[:3])}): it was changed after "
            "it was written; not loaded"
        )


def _check_hashes(folder: Path, files: dict[str, dict]) -> None:
    for name, expected in files.items():
        size = (folder / name).stat().st_size
        if size != expected["size"]:
            raise CheckpointError(
                f"{folder} is damaged: {name} has {size} bytes, {expected['size']} were written (truncated or "
                "changed on disk)"
            )
        if sha256_file(folder / name) != expected["sha256"]:
            raise CheckpointError(
                f"{folder} is damaged: {name} changed on disk (same size, another sha256 than when it was written)"
            )


def verify_checkpoint(folder: Path, config: dict, run_id: str | None = None) -> TrainState:
    """Check that ``folder`` is a checkpoint of the run ``run_id`` configured as ``config``, with a valid record
    and every file present with its recorded size and hash; its :class:`TrainState` or :class:`CheckpointError`
    saying what is wrong."""
    record = _read_record(folder)
    state = _validated_state(folder, record)
    files = _validated_files(folder, record)
    differing = config_differences(record["config"], config)
    if differing:
        raise CheckpointError(f"{folder} belongs to a run configured differently ({differing})")
    owner = _run_id(folder, record)
    if owner != run_id:
        raise CheckpointError(
            f"{folder} is a checkpoint of another run (run id {owner or 'none'}, this run's is {run_id or 'none'}), "
            "configured the same way; resume a run only from its own checkpoints"
        )
    _check_contents(folder, files)
    _check_hashes(folder, files)
    return state


def newest_intact_checkpoint(
    run_dir: Path, config: dict, run_id: str | None = None
) -> tuple[Path, TrainState] | None:
    """The newest checkpoint of ``run_dir`` that verifies, skipping (and reporting) damaged newer ones."""
    for _, folder in reversed(list_checkpoints(run_dir)):
        try:
            return folder, verify_checkpoint(folder, config, run_id)
        except CheckpointError as e:
            log.warning("skipping %s; falling back to an older checkpoint", e)
    return None


def load_checkpoint(accelerator: Accelerator, folder: Path) -> None:
    """Restore model, optimizer, scheduler-free RNG and loader states from a verified checkpoint; the model's
    weights by their unwrapped names, so a checkpoint of a DDP or compiled model (or one written by an older
    version with ``module.`` / ``_orig_mod.`` keys) loads into any other combination."""
    with _hooked(accelerator.register_load_state_pre_hook(_loader_of_unwrapped(accelerator, folder))):
        accelerator.load_state(str(folder))


@contextlib.contextmanager
def _hooked(handle):
    """An Accelerate hook registered for the duration of one save or load."""
    try:
        yield
    finally:
        handle.remove()


def _model_file(index: int) -> str:
    return MODEL_FILE if index == 0 else MODEL_FILE.replace(".safetensors", f"_{index}.safetensors")


def _save_unwrapped(models: list, weights: list, output_dir: str) -> None:
    """Accelerate's save hook: each model's weights under their unwrapped names (no ``module.``/``_orig_mod.``)."""
    # an OrderedDict as state_dict() returns: Accelerate makes only those contiguous (channels_last) before saving
    weights[:] = [OrderedDict(unwrapped_keys(state)) for state in weights]


def _loader_of_unwrapped(accelerator: Accelerator, folder: Path):
    """Accelerate's load hook: load each model's weights into the unwrapped model, keys unwrapped, every key
    checked (strict); the models are then taken off Accelerate's list, which would load them by their wrapped names."""

    def load_models(models: list, input_dir: str) -> None:
        for index, model in enumerate(models):
            state = unwrapped_keys(load_file(folder / _model_file(index)))
            accelerator.unwrap_model(model, keep_torch_compile=False).load_state_dict(state, strict=True)
        models.clear()

    return load_models
