"""Hostile and faulty run folders, checkpoints, trackers and initial weights (issue 18: 2, 10, 14, 15, 16, 18;
issue 19: 6, 12, 15): each is refused or survived with one line, nothing that the run did not write is deleted,
and a resumed run still equals an uninterrupted one bit for bit."""

import hashlib
import json
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from medssl_zoo.hub.export import export_run
from medssl_zoo.train.checkpoint import CheckpointError, newest_intact_checkpoint, verify_checkpoint
from medssl_zoo.train.monitor import MetricsLog
from medssl_zoo.train.pretrain import main as pretrain_main
from tests.faults import test_unreachable_hub
from tests.faults.test_kill_and_resume import kill_tree
from tests.helpers.accelerate_state import reset_accelerate_state
from tests.helpers.launch import accelerate_launch, launch_command
from tests.train.tiny import TINY, args
from zoo import create_backbone

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "train" / "pretrain.py")
COMMON = (
    "--max-steps",
    "6",
    "--checkpoint-every",
    "2",
    "--keep-checkpoints",
    "3",
    "--log-every",
    "1",
    "--mixed-precision",
    "no",
    "--export-name",
    "null",
)
silent_server = test_unreachable_hub.silent_server  # a server that accepts and never answers (127.0.0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 6-step run, and the same run halted at step 4 (checkpoints at 2 and 4) to copy and resume."""
    root = tmp_path_factory.mktemp("runs")
    for name, extra in (("straight", ()), ("halted", ("--halt-at-step", "4"))):
        reset_accelerate_state()
        assert pretrain_main([*args(root / name, *COMMON), *extra]) == 0
    reset_accelerate_state()
    return root


def copy_halted(runs: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(runs / "halted", out, symlinks=True)
    return out


def resume(out: Path, *extra: str) -> int:
    return pretrain_main([*args(out, *COMMON), *extra, "--resume"])


def step_records(out: Path) -> list[int]:
    """The steps metrics.jsonl records (read here, independently of MetricsLog)."""
    steps = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == "step" and isinstance(record.get("step"), int):
            steps.append(record["step"])
    return steps


def checkpoint_names(out: Path) -> list[str]:
    """The entries of checkpoints/ named like a checkpoint, oldest first."""
    return sorted((p.name for p in (out / "checkpoints").glob("step_*")), key=lambda n: int(n[5:]))


def assert_equals_straight(out: Path, runs: Path) -> None:
    """Every step logged once, and the final encoder bit for bit the uninterrupted run's."""
    assert step_records(out) == [1, 2, 3, 4, 5, 6]
    straight, resumed = (load_file(p / "encoder.safetensors") for p in (runs / "straight", out))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def tree(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def record_of(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())


# --- issue 18.2: folders named like a run's, foreign lines in metrics.jsonl -------------------------------------


def test_a_new_run_refuses_a_folder_holding_only_run_file_names(tmp_path, caplog):
    target = tmp_path / "mine"
    (target / "checkpoints" / "step_0000001").mkdir(parents=True)
    (target / "checkpoints" / "step_0000001" / "notes.txt").write_text("my notes")
    assert pretrain_main(args(target, *COMMON)) == 2
    assert "already holds files that are not a run's (checkpoints)" in caplog.text
    assert tree(target) == {"checkpoints/step_0000001/notes.txt": b"my notes"}


def test_rotation_deletes_only_checkpoints_this_run_wrote(runs, tmp_path, caplog):
    out = copy_halted(runs, tmp_path)
    stranger = out / "checkpoints" / "step_0000001"  # a stranger's folder with a checkpoint's name
    stranger.mkdir()
    (stranger / "notes.txt").write_text("my notes")
    elsewhere = tmp_path / "elsewhere"  # and a link to a folder outside the run (issue 18.15)
    elsewhere.mkdir()
    (elsewhere / "data.txt").write_text("precious")
    (out / "checkpoints" / "step_0000003").symlink_to(elsewhere, target_is_directory=True)
    assert resume(out, "--keep-checkpoints", "1") == 0
    assert (stranger / "notes.txt").read_text() == "my notes"
    assert (out / "checkpoints" / "step_0000003").is_symlink() and tree(elsewhere) == {
        "data.txt": b"precious"
    }
    assert checkpoint_names(out) == ["step_0000001", "step_0000003", "step_0000006"]
    assert "step_0000001 is not a checkpoint of this run" in caplog.text
    assert_equals_straight(out, runs)


def test_foreign_lines_in_metrics_jsonl_are_skipped_and_kept(runs, tmp_path):
    out = copy_halted(runs, tmp_path)
    foreign = [
        b'{"note": "mine"}',
        b"[1, 2]",
        b'"text"',
        b'{"event": "step", "step": "x"}',
        b"hello",
        b'{"event": 7}',
    ]
    with open(out / "metrics.jsonl", "ab") as f:
        f.write(b"\n".join(foreign) + b'\n{"event": "step", "step": 5, "lo')  # and a line a kill cut off
    assert resume(out) == 0
    lines = (out / "metrics.jsonl").read_bytes().splitlines()
    assert all(line in lines for line in foreign)  # someone else's lines: kept, not ours to delete
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
    assert_equals_straight(out, runs)


def test_metrics_log_truncation_keeps_foreign_lines_and_drops_a_cut_one(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.write(event="step", step=step, loss=1.0 / step)
    with open(log.path, "ab") as f:
        f.write(b'{"mine": 1}\n{"event": "eval", "step": 2, "knn": 0.5}\n{"event": "st')
    log.truncate(2)
    assert [(r["event"], r["step"]) for r in log.read()] == [("step", 1), ("step", 2), ("eval", 2)]
    assert log.path.read_bytes().endswith(b'{"mine": 1}\n{"event": "eval", "step": 2, "knn": 0.5}\n')
    log.truncate(-1)
    assert log.read() == [] and log.path.read_bytes() == b'{"mine": 1}\n'


# --- issue 18.14 and the planted bug: checkpoint records and files, verified -------------------------------------


def _outside_entry(folder: Path, record: dict) -> None:
    config = folder.parents[1] / "config.yaml"  # a real file, with its true size and hash: still outside
    record["files"]["../../config.yaml"] = {
        "size": config.stat().st_size,
        "sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
    }


def _unlisted_file(folder: Path, record: dict) -> None:
    (folder / "pytorch_model.bin").write_bytes(b"not listed")


def _link_inside(folder: Path, record: dict) -> None:
    target = folder.parent / "optimizer-copy.bin"
    (folder / "optimizer.bin").rename(target)
    (folder / "optimizer.bin").symlink_to(target)


def _no_model(folder: Path, record: dict) -> None:
    del record["files"]["model.safetensors"]
    (folder / "model.safetensors").unlink()


TAMPERINGS = {
    "negative step": (lambda f, r: r.update(step=-3), "step -3 is not a count of steps"),
    "step as text": (lambda f, r: r.update(step="4"), "step '4' is not a count of steps"),
    "step of another folder": (lambda f, r: r.update(step=2), "step 2 disagrees with the folder's name"),
    "NaN best kNN": (lambda f, r: r.update(best_knn=math.nan), "best_knn nan is not an accuracy"),
    "best step after the step": (lambda f, r: r.update(best_step=99), "best_step 99 is not a step up to 4"),
    "entry outside the folder": (_outside_entry, "lists '../../config.yaml', which is not a file inside"),
    "absolute entry": (
        lambda f, r: r["files"].update({"/etc/hostname": {"size": 1, "sha256": "0" * 64}}),
        "lists '/etc/hostname', which is not a file inside",
    ),
    "manifest not a mapping": (lambda f, r: r.update(files=["model.safetensors"]), "is not a manifest"),
    "unlisted file": (_unlisted_file, "holds files its record does not list (pytorch_model.bin)"),
    "link inside": (_link_inside, "holds optimizer.bin, a link or special file"),
    "no model": (_no_model, "does not list model.safetensors"),
    "run id not an id": (lambda f, r: r.update(run_id="../../x"), "run_id '../../x' is not a run id"),
    "config not a mapping": (lambda f, r: r.update(config=[1]), "config is not a mapping"),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_tampered_checkpoint_records_are_refused_and_the_previous_one_used(runs, tmp_path, tampering, caplog):
    out = copy_halted(runs, tmp_path)
    latest = out / "checkpoints" / "step_0000004"
    change, message = TAMPERINGS[tampering]
    record = record_of(latest)
    change(latest, record)
    (latest / "trainer_state.json").write_text(json.dumps(record))
    expected = record_of(out / "checkpoints" / "step_0000002")
    folder, state = newest_intact_checkpoint(out, expected["config"], expected.get("run_id"))
    assert folder.name == "step_0000002" and state.step == 2
    assert message in caplog.text and "falling back to an older checkpoint" in caplog.text


def test_a_negative_step_is_not_resumed_from(runs, tmp_path, caplog):
    out = copy_halted(runs, tmp_path)
    latest = out / "checkpoints" / "step_0000004"
    record = record_of(latest)
    (latest / "trainer_state.json").write_text(json.dumps({**record, "step": -3}))
    caplog.set_level(logging.INFO, logger="train")
    assert resume(out) == 0
    assert "resumed from" in caplog.text and "step_0000002 at step 2" in caplog.text
    assert_equals_straight(out, runs)  # no step logged twice


def test_an_oversized_record_is_refused_unread(runs, tmp_path):
    out = copy_halted(runs, tmp_path)
    latest = out / "checkpoints" / "step_0000004"
    record = record_of(latest)
    with open(latest / "trainer_state.json", "w") as f:
        f.write(json.dumps({**record, "padding": "x" * (5 * 2**20)}))
    with pytest.raises(
        CheckpointError, match="trainer_state.json is damaged .* a checkpoint record is at most"
    ):
        verify_checkpoint(latest, record["config"], record.get("run_id"))


def test_one_flipped_byte_of_the_weights_is_found(runs, tmp_path, caplog):
    out = copy_halted(runs, tmp_path)
    weights = out / "checkpoints" / "step_0000004" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight: the same size, another content
    weights.write_bytes(bytes(data))
    assert resume(out) == 0
    assert "model.safetensors changed on disk (same size" in caplog.text
    assert "falling back to an older checkpoint" in caplog.text
    assert_equals_straight(out, runs)


# --- issue 19.12: run identity -----------------------------------------------------------------------------------


def test_a_checkpoint_of_another_run_configured_alike_is_refused_by_name(runs, tmp_path, caplog):
    other = tmp_path / "other"
    assert pretrain_main([*args(other, *COMMON), "--halt-at-step", "2"]) == 0
    foreign = runs / "halted" / "checkpoints" / "step_0000004"
    assert pretrain_main([*args(other, *COMMON), "--resume", str(foreign)]) == 2
    assert f"{foreign} is a checkpoint of another run" in caplog.text
    assert not (other / "encoder.safetensors").exists()


# --- issue 19.15: --halt-at-step says so; a failed setup leaves no folder behind -------------------------------


def test_halting_says_so_and_how_to_continue(tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain_main([*args(out, *COMMON), "--halt-at-step", "2"]) == 0
    line = f"Halted at step 2 (--halt-at-step): checkpoint {out / 'checkpoints' / 'step_0000002'}; continue with --resume."
    assert line in capsys.readouterr().out.splitlines()


def test_a_failed_setup_removes_the_folder_it_created_and_only_that(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert pretrain_main([*TINY, "--max-steps", "2", "--batch-size", "512"]) == 2  # fails while loading data
    assert "fewer than one batch" in caplog.text
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []
    given = tmp_path / "given"
    given.mkdir()  # a folder the user made: kept, whatever happens
    assert pretrain_main(args(given, "--max-steps", "2", "--batch-size", "512")) == 2
    assert given.is_dir()


# --- issue 18.15: links, a full disk, an unwritable folder, bad initial weights --------------------------------


def test_a_linked_checkpoints_folder_is_refused(runs, tmp_path, caplog):
    out = copy_halted(runs, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (out / "checkpoints").rename(elsewhere)
    (out / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    before = tree(elsewhere)
    assert resume(out) == 2
    assert f"{out / 'checkpoints'} is a symbolic link: a run never writes through links" in caplog.text
    assert tree(elsewhere) == before


@pytest.mark.parametrize(
    ("limit", "failing", "reason"),
    [
        (1_000_000, "encoder_best.safetensors", "File too large"),  # safetensors' SafetensorError
        (
            2_500_000,
            "the checkpoint of step 6",
            "unexpected pos",
        ),  # torch.save's RuntimeError (optimizer.bin)
    ],
)
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(runs, tmp_path, limit, failing, reason):
    out = copy_halted(runs, tmp_path)

    def small_disk():  # every file this process writes is cut at `limit` bytes (EFBIG, as ENOSPC would)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, SCRIPT, *args(out, *COMMON), "--resume"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_disk,
    )
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(errors) == 1
    assert f"writing {failing} into {out} failed (" in errors[0] and reason in errors[0]
    assert "free some space" in errors[0] and "continue with --resume" in errors[0]
    names = sorted(p.name for p in out.rglob("*"))
    assert not [n for n in names if ".tmp-" in n], names  # no temporary file or folder left behind
    assert checkpoint_names(out) == ["step_0000002", "step_0000004"]
    assert not (out / "encoder.safetensors").exists()
    assert resume(out) == 0  # room again: the run continues from its newest checkpoint
    assert_equals_straight(out, runs)


def test_an_unwritable_output_dir_is_one_line(tmp_path, caplog):
    a_file = tmp_path / "file.txt"
    a_file.write_text("a file")
    assert pretrain_main(args(a_file / "run", *COMMON)) == 2
    assert f"--output-dir {a_file / 'run'} cannot be created (Not a directory)" in caplog.text
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert pretrain_main(args(locked / "run", *COMMON)) == 2
        assert "cannot be created (Permission denied)" in caplog.text


def _weights_file(tmp_path: Path, name: str, backbone: str = "test_resnet", change=None) -> Path:
    torch.manual_seed(7)
    state = create_backbone(backbone).state_dict()
    if change is not None:
        change(state)
    path = tmp_path / name
    save_file(state, str(path))
    return path


def test_non_finite_initial_weights_are_named_not_blamed_on_the_learning_rate(tmp_path, caplog):
    def poison(state):
        state["conv1.0.weight"][0, 0, 0, 0] = math.nan

    weights = _weights_file(tmp_path, "nan.safetensors", change=poison)
    out = tmp_path / "run"
    assert pretrain_main(args(out, *COMMON, "--init", "imagenet", "--init-weights", str(weights))) == 2
    assert (
        f"--init-weights {weights} holds NaN or infinite values in 1 tensor(s) (conv1.0.weight)"
        in caplog.text
    )
    assert "learning rate" not in caplog.text.replace("not the learning rate", "")
    assert not out.exists()  # the folder this run created is gone again


def test_weights_of_another_architecture_are_named(tmp_path, caplog):
    resnet18 = _weights_file(tmp_path, "resnet18.safetensors", backbone="resnet18")
    run = ("--backbone", "resnet10t", "--init", "imagenet", "--init-weights")
    assert pretrain_main(args(tmp_path / "a", *COMMON, *run, str(resnet18))) == 2
    assert (
        f"the initial weights (--init-weights {resnet18}) do not fit resnet10t (they are weights of resnet18)"
        in caplog.text
    )
    assert "pass --backbone resnet18" in caplog.text
    caplog.clear()

    def misshape(state):
        state["conv1.1.weight"] = torch.ones(15)

    misshaped = _weights_file(tmp_path, "misshaped.safetensors", change=misshape)
    assert (
        pretrain_main(args(tmp_path / "b", *COMMON, "--init", "imagenet", "--init-weights", str(misshaped)))
        == 2
    )
    assert "1 of another shape (e.g. conv1.1.weight: file [15], test_resnet [16])" in caplog.text
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_encoder_file_of_the_zoo_names_its_architecture(runs, tmp_path, caplog):
    encoder = runs / "straight" / "encoder.safetensors"  # carries its architecture in the header
    run = ("--backbone", "resnet10t", "--init", "imagenet", "--init-weights", str(encoder))
    assert pretrain_main(args(tmp_path / "run", *COMMON, *run)) == 2
    assert "do not fit resnet10t (they are weights of test_resnet)" in caplog.text


# --- issue 18.16: a resumed run does not need its initial weights again ------------------------------------------


def test_resume_does_not_need_the_init_folder_again(tiny_export, tmp_path, caplog):
    init = tmp_path / "init-copy"
    shutil.copytree(tiny_export, init)
    out = tmp_path / "run"
    assert pretrain_main([*args(out, *COMMON, "--init", str(init)), "--halt-at-step", "2"]) == 0
    shutil.rmtree(init)  # our own copy
    assert pretrain_main([*args(out, *COMMON, "--init", str(init)), "--resume"]) == 0
    assert step_records(out) == [1, 2, 3, 4, 5, 6]
    assert pretrain_main(args(tmp_path / "new", *COMMON, "--init", str(init))) == 2
    assert f"--init {init}: no folder {init}" in caplog.text and "the Hub was not asked" in caplog.text


# --- issue 18.18: SIGTERM; the card records the initial weights file ---------------------------------------------

LONG = ("--max-steps", "30", "--checkpoint-every", "10", "--log-every", "1", "--mixed-precision", "no")


def test_sigterm_checkpoints_the_current_step_and_resume_is_exact(tmp_path):
    assert pretrain_main(args(tmp_path / "straight", *LONG, "--export-name", "null")) == 0
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *args(out, *LONG, "--export-name", "null")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not any(s >= 5 for s in _logged(out)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, output[-3000:]
    last = _logged(out)[-1]
    assert 5 <= last < 30
    newest = out / "checkpoints" / checkpoint_names(out)[-1]
    assert newest.name == f"step_{last:07d}"  # steps lost: 0
    assert f"Halted at step {last} (SIGTERM): checkpoint {newest}; continue with --resume." in output
    assert "Traceback" not in output
    reset_accelerate_state()
    assert pretrain_main([*args(out, *LONG, "--export-name", "null"), "--resume"]) == 0
    assert step_records(out) == list(range(1, 31))
    straight, resumed = (load_file(p / "encoder.safetensors") for p in (tmp_path / "straight", out))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


@pytest.mark.distributed
def test_sigterm_to_the_launcher_of_two_processes_checkpoints_one_agreed_step(tmp_path):
    run = (*LONG, "--export-name", "null")
    accelerate_launch(SCRIPT, *args(tmp_path / "straight", *run), num_processes=2)
    out = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        launch_command(SCRIPT, *args(out, *run), num_processes=2),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not any(s >= 5 for s in _logged(out)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # to the launcher only: torchrun passes it on to both workers
        output, _ = proc.communicate(timeout=120)
    finally:
        kill_tree(proc.pid)
        proc.wait()
    last = _logged(out)[-1]
    newest = checkpoint_names(out)[-1]
    assert 5 <= last < 30 and newest == f"step_{last:07d}", output[-3000:]  # one step, agreed; steps lost: 0
    assert output.count(f"Halted at step {last} (SIGTERM)") == 1
    accelerate_launch(SCRIPT, *args(out, *run), "--resume", num_processes=2)
    assert step_records(out) == list(range(1, 31))
    straight, resumed = (load_file(p / "encoder.safetensors") for p in (tmp_path / "straight", out))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def _logged(out: Path) -> list[int]:
    try:
        return step_records(out)
    except OSError:  # not written yet
        return []


def test_the_card_records_the_initial_weights_file(tmp_path):
    weights = _weights_file(tmp_path, "my-imagenet.safetensors")
    out = tmp_path / "run"
    assert pretrain_main(args(out, *COMMON, "--init", "imagenet", "--init-weights", str(weights))) == 0
    export = export_run(out, tmp_path / "export")
    config = json.loads((export / "config.json").read_text())["zoo"]
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert config["init_weights"] == {"file": "my-imagenet.safetensors", "sha256": sha256}
    assert (
        config["config"]["init_weights"] == "my-imagenet.safetensors"
    )  # the name, not the training machine's path
    assert str(tmp_path) not in (export / "config.json").read_text()
    card = (export / "README.md").read_text()
    assert f"| initialisation | imagenet: `my-imagenet.safetensors` (sha256 `{sha256}`) |" in card


# --- issue 18.10: trackers checked before the folder is claimed --------------------------------------------------


@pytest.mark.timeout(120)
def test_an_unreachable_mlflow_server_is_one_line_before_the_folder_is_claimed(
    silent_server, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent_server)
    out = tmp_path / "run"
    assert pretrain_main(args(out, *COMMON, "--log-with", "mlflow")) == 2
    assert (
        f"the MLflow server at MLFLOW_TRACKING_URI {silent_server} cannot be reached (no answer within 5 s)"
        in caplog.text
    )
    assert not out.exists()


@pytest.mark.timeout(120)
def test_an_mlflow_store_that_is_a_file_is_one_line_before_the_folder_is_claimed(
    tmp_path, monkeypatch, caplog
):
    a_file = tmp_path / "some_file"
    a_file.write_text("not a store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", a_file.as_uri())
    out = tmp_path / "run"
    assert pretrain_main(args(out, *COMMON, "--log-with", "mlflow")) == 2
    assert f"MLFLOW_TRACKING_URI {a_file.as_uri()} is a file, not a folder" in caplog.text
    assert not out.exists() and a_file.read_text() == "not a store"


# --- issue 19.6: --init imagenet offline ------------------------------------------------------------------------


def _pretrain(out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args(out, *COMMON, "--init", "imagenet", *extra)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_init_imagenet_offline_says_so_in_full(tmp_path):
    proc = _pretrain(tmp_path / "run", {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "ImageNet weights of test_resnet cannot be downloaded here (HF_HUB_OFFLINE is set" in errors[0]
    assert errors[0].endswith("and pass --init-weights test_resnet.safetensors")
    assert not (tmp_path / "run").exists()


def test_init_imagenet_with_an_unanswering_hub_says_so(silent_server, tmp_path):
    proc = _pretrain(tmp_path / "run", {"HF_ENDPOINT": silent_server, "HF_HOME": str(tmp_path / "hf")})
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert f"the Hub ({silent_server}) cannot be reached: no answer within 10 s" in errors[0]
    assert errors[0].endswith("and pass --init-weights test_resnet.safetensors")


def test_init_imagenet_offline_uses_timms_weights_from_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    weights = _weights_file(tmp_path, "model.safetensors")
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copyfile(weights, repo / "snapshots" / commit / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    steps = ("--max-steps", "2", "--export-name", "null", "--init", "imagenet")
    assert pretrain_main(args(tmp_path / "cached", *steps)) == 0
    reset_accelerate_state()
    assert pretrain_main(args(tmp_path / "file", *steps, "--init-weights", str(weights))) == 0
    cached, from_file = (load_file(tmp_path / r / "encoder.safetensors") for r in ("cached", "file"))
    assert all(torch.equal(cached[k], from_file[k]) for k in cached)  # the same start, the same run
    record = json.loads((tmp_path / "cached" / "run.json").read_text())["init_weights"]
    assert record["repo_id"] == "timm/test_resnet.r160_in1k"
    assert record["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_runs_started_in_the_same_second_never_share_a_folder(tmp_path, monkeypatch):
    """Two default-named runs claimed in the same second: each gets a folder of its own, made exclusively."""
    import datetime as dt

    from medssl_zoo.train import lifecycle
    from medssl_zoo.train.config import load_config

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2026, 11, 30, 12, 0, 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lifecycle, "datetime", Frozen)
    cfg = load_config(overrides={"max_steps": 2})
    claims = [lifecycle._decide(cfg, None) for _ in range(3)]
    names = [c.run_dir.name for c in claims]
    assert names == [
        "simclr-synthetic-20261130-120000",
        "simclr-synthetic-20261130-120000-2",
        "simclr-synthetic-20261130-120000-3",
    ]
    assert all(c.created and c.run_dir.is_dir() for c in claims)
