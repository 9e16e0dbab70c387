"""The run directory's lifecycle: claim it (or the run to resume) once, on the main process, for every process.

Only the main process looks at the file system and decides; the decision (the folder, the checkpoint to resume
from, the run's identity) or the error is broadcast, so N processes never race each other into different answers.
A folder is only ever written to when it is new, empty, an earlier run of this project being resumed, or the
leftover of a run that failed during setup (its ``split.csv`` only, no ``config.yaml``). Each run has an identity
(``run_id`` in ``run.json``, written with ``config.yaml`` and into every checkpoint record), so a checkpoint of
another run is refused even when both runs were configured alike. A run folder that setup created and that holds
nothing but this run's own files is removed again when setup fails.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from medssl_zoo.train.checkpoint import (
    CheckpointError,
    TrainState,
    config_differences,
    list_checkpoints,
    newest_intact_checkpoint,
    verify_checkpoint,
)
from medssl_zoo.train.config import RESUMABLE_CHANGES, PretrainConfig
from zoo.files import atomic_write_json, atomic_write_text, is_temporary
from zoo.run_dir import (
    CHECKPOINTS_DIR,
    RUN_CONFIG_FILE,
    RUN_RECORD_FILE,
    SPLIT_FILE,
    is_run,
    read_run,
    read_run_record,
)

__all__ = [
    "RunClaim",
    "RunDirError",
    "abandon_run_dir",
    "claim_run_dir",
    "checkpoint_config",
    "write_run_config",
]

log = logging.getLogger("train")


class RunDirError(ValueError):
    """The output folder cannot be used for this run; the message says why and what to do."""


@dataclass
class RunClaim:
    """What the main process decided: the run directory, its identity, and the checkpoint to resume from."""

    run_dir: Path
    checkpoint: Path | None = None
    state: TrainState | None = None
    resumed: bool = False  # an existing run is continued (from ``checkpoint``, or from step 0 if it has none)
    record: dict = field(
        default_factory=dict
    )  # run.json: run_id (None: a run older than run ids), init_weights
    created: bool = False  # the folder was made by this run (removed again if setup fails)

    @property
    def run_id(self) -> str | None:
        return self.record.get("run_id")


def checkpoint_config(cfg: PretrainConfig) -> dict:
    """The part of the configuration a checkpoint and the run resuming it must share."""
    return {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}


def _check_new_folder(run_dir: Path) -> None:
    """A new run goes into a new or empty folder, or the leftover of a failed setup (its split.csv): anything
    else there — even files named like a run's, e.g. ``checkpoints/step_0000001/notes.txt`` — is someone else's."""
    if is_run(run_dir):
        raise RunDirError(
            f"{run_dir} already holds a run; pass --resume to continue it or a new --output-dir"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--output-dir {run_dir} is a file; give a folder")
    if not run_dir.is_dir():
        return
    with os.scandir(run_dir) as entries:
        foreign = sorted(
            e.name
            for e in entries
            if not ((e.name == SPLIT_FILE and e.is_file(follow_symlinks=False)) or is_temporary(e.name))
        )
    if foreign:
        raise RunDirError(
            f"--output-dir {run_dir} already holds files that are not a run's ({', '.join(foreign[:5])}); "
            "give a new or empty folder: a run never writes into someone else's folder (a folder without "
            f"{RUN_CONFIG_FILE} may hold only the {SPLIT_FILE} of a run whose setup failed)"
        )


def _check_resumable(run_dir: Path) -> None:
    """A run being resumed is written through its own files only: none of them may be a link."""
    links = sorted(p.name for p in run_dir.iterdir() if p.is_symlink())
    if links:
        raise RunDirError(
            f"{run_dir / links[0]} is a symbolic link: a run never writes through links; replace it by the file "
            "or folder itself"
        )
    if (run_dir / CHECKPOINTS_DIR).exists() and not (run_dir / CHECKPOINTS_DIR).is_dir():
        raise RunDirError(f"{run_dir / CHECKPOINTS_DIR} is not a folder; move it away and --resume")


def _check_writable(run_dir: Path) -> bool:
    """Create ``run_dir`` if needed (True when this run made it); ``RunDirError`` when it cannot be written."""
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(
            f"--output-dir {run_dir} cannot be created ({e.strerror or e}); choose a folder you can write to"
        ) from e
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"--output-dir {run_dir} is not writable; choose a folder you can write to")
    return created


def _check_same_config(run_dir: Path, cfg: PretrainConfig) -> None:
    saved = read_run(run_dir).config.to_dict()
    current = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
    differing = config_differences({k: saved.get(k) for k in current}, current, now="now")
    if differing:
        raise RunDirError(f"--resume: the configuration does not match the checkpoint's run ({differing})")


def _choose_checkpoint(run_dir: Path, cfg: PretrainConfig, resume: str, record: dict) -> RunClaim:
    expected, run_id = checkpoint_config(cfg), record.get("run_id")
    if resume != "latest":
        folder = Path(resume)
        if not folder.is_dir():
            raise RunDirError(f"--resume {resume}: no such checkpoint folder")
        state = verify_checkpoint(folder, expected, run_id)
        return RunClaim(run_dir, folder, state, resumed=True, record=record)
    found = newest_intact_checkpoint(run_dir, expected, run_id)
    if found is None:
        if list_checkpoints(run_dir):
            raise RunDirError(
                f"--resume latest: no checkpoint of {run_dir} is intact (see the warnings above)"
            )
        log.warning("%s has no checkpoint yet: starting the run from step 0", run_dir)
        return RunClaim(run_dir, resumed=True, record=record)
    return RunClaim(run_dir, *found, resumed=True, record=record)


def _resume(run_dir: Path, cfg: PretrainConfig, resume: str) -> RunClaim:
    _check_resumable(run_dir)
    _check_writable(run_dir)
    _check_same_config(run_dir, cfg)
    try:
        record = read_run_record(run_dir)
    except ValueError as e:
        raise RunDirError(f"--resume: {e}") from e
    return _choose_checkpoint(run_dir, cfg, resume, record)


def _claim_default_folder(cfg: PretrainConfig) -> Path:
    """``runs/<method>-<dataset>-<time>``, created exclusively: runs started in the same second get ``-2``, ``-3``
    … instead of sharing one folder."""
    base = Path("runs") / f"{cfg.method}-{cfg.dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{base.parent} cannot be created ({e.strerror or e}); pass --output-dir") from e
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunDirError(f"{base} and 998 more names are taken; pass --output-dir")


def _decide(cfg: PretrainConfig, resume: str | None) -> RunClaim:
    if cfg.output_dir is None and resume is None:
        run_dir = _claim_default_folder(cfg)
        return RunClaim(run_dir, record={"run_id": uuid.uuid4().hex}, created=True)
    run_dir = Path(cfg.output_dir or f"runs/{cfg.method}-{cfg.dataset}-{datetime.now():%Y%m%d-%H%M%S}")
    if resume is not None and is_run(run_dir):
        return _resume(run_dir, cfg, resume)
    if resume not in (None, "latest"):
        raise RunDirError(f"--resume {resume}: {run_dir} holds no run to resume (no {RUN_CONFIG_FILE})")
    if resume == "latest":
        log.warning(
            "--resume: %s holds no run yet (a run that failed during setup?): starting afresh", run_dir
        )
    _check_new_folder(run_dir)
    created = _check_writable(run_dir)
    return RunClaim(run_dir, record={"run_id": uuid.uuid4().hex}, created=created)


def claim_run_dir(accelerator: Accelerator, cfg: PretrainConfig, resume: str | None) -> RunClaim:
    """Decide on the main process, broadcast the decision (or the error) to every process."""
    decision: list = [None]
    if accelerator.is_main_process:
        try:
            decision = [_decide(cfg, resume)]
        except (RunDirError, CheckpointError) as e:
            decision = [RunDirError(str(e))]
        except OSError as e:  # an unreadable folder, say
            where = e.filename or cfg.output_dir or "the runs folder"
            decision = [RunDirError(f"{where}: {e.strerror or e}; choose a folder you can read and write")]
    decision = broadcast_object_list(decision)
    if isinstance(decision[0], Exception):
        raise decision[0]
    return decision[0]


def write_run_config(run_dir: Path, cfg: PretrainConfig, record: dict) -> None:
    """``run.json`` (the run's identity and provenance), then ``config.yaml``, written once setup succeeded: from
    then on the folder is a run."""
    import yaml

    atomic_write_json(run_dir / RUN_RECORD_FILE, record)
    atomic_write_text(run_dir / RUN_CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def abandon_run_dir(claim: RunClaim) -> None:
    """After a failed setup: remove the run folder again when this run created it and it holds only this run's
    own files (its split.csv, its temporary files); otherwise leave everything as it is."""
    run_dir = claim.run_dir
    if not claim.created or is_run(run_dir) or not run_dir.is_dir() or run_dir.is_symlink():
        return
    with os.scandir(run_dir) as entries:
        names = [(e.name, e.is_file(follow_symlinks=False)) for e in entries]
    if not all(regular and (name == SPLIT_FILE or is_temporary(name)) for name, regular in names):
        return
    for name, _ in names:
        (run_dir / name).unlink()  # this run's own split.csv / temporary file, in the folder it created
    run_dir.rmdir()  # the folder this run created moments ago, now empty again
    log.info("removed %s: the run's setup failed before it started", run_dir)
