"""Nothing is lost: exports never replace folders they did not make, a run never writes into a stranger's folder,
a failed setup does not lock its folder, resume refuses other runs' and damaged checkpoints."""

import json
import os
import re
import shutil
import stat

import pytest
import torch
from safetensors.torch import load_file

import zoo
from medssl_zoo.hub.export import ExportError, export_run
from medssl_zoo.hub.export import main as export_main
from medssl_zoo.train.checkpoint import CheckpointError, TrainState, verify_checkpoint
from medssl_zoo.train.pretrain import main as pretrain_main
from tests.train.tiny import args, metrics, step_losses


def tree(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("where", ["folder-with-notes", "runs-parent", "the-run-itself", "a-file"])
def test_export_never_destroys_what_it_did_not_write(tiny_run, tmp_path, where, caplog):
    if where == "folder-with-notes":
        target = tmp_path / "notes"
        target.mkdir()
        (target / "notes.txt").write_text("my notes")
        (target / "other-run").mkdir()
        (target / "other-run" / "config.yaml").write_text("method: simclr\n")
    elif where == "runs-parent":
        target = tiny_run.parent
    elif where == "the-run-itself":
        target = tiny_run
    else:
        target = tmp_path / "file.txt"
        target.write_text("a file")
    before = tree(target) if target.is_dir() else target.read_bytes()
    reason = {
        "folder-with-notes": "exists and is not an export of this project (it holds notes.txt, other-run); nothing",
        "runs-parent": "is the run directory or one of its parents",
        "the-run-itself": "is the run directory or one of its parents",
        "a-file": "exists and is not a folder",
    }[where]
    with pytest.raises(ExportError, match=re.escape(f"{target} {reason}")):
        export_run(tiny_run, target)
    if where in ("runs-parent", "the-run-itself"):  # --force never applies to the run or its parents
        with pytest.raises(ExportError, match="is the run directory or one of its parents"):
            export_run(tiny_run, target, force=True)
    assert export_main([str(tiny_run), str(target)]) == 2
    assert str(target) in caplog.text
    after = tree(target) if target.is_dir() else target.read_bytes()
    assert after == before


def test_export_replaces_an_earlier_export_and_force_moves_a_stranger_aside(tiny_run, tmp_path):
    first = export_run(tiny_run, tmp_path / "model")
    second = export_run(tiny_run, tmp_path / "model")  # an earlier export: replaced in place
    assert first == second and (second / "model.safetensors").is_file()
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("precious")
    export_run(tiny_run, stranger, force=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("stranger.replaced-")]
    assert len(aside) == 1 and (aside[0] / "keep.txt").read_text() == "precious"  # moved, never deleted
    assert zoo.load(stranger).label_names


def test_export_mode_and_published_config(tiny_run, tmp_path):
    out = export_run(tiny_run, tmp_path / "model")
    expected = 0o666 & ~_umask()
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == expected, name
    published = json.loads((out / "config.json").read_text())["zoo"]["config"]
    assert "data_root" not in published and "output_dir" not in published
    assert str(tiny_run) not in (out / "config.json").read_text()  # no path of the training machine


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_export_name_that_is_a_path_is_refused(tmp_path, caplog):
    assert pretrain_main(args(tmp_path / "run", "--max-steps", "2", "--export-name", str(tmp_path))) == 2
    assert "export_name must be a plain model name" in caplog.text
    assert not (tmp_path / "run").exists()


def test_a_run_never_writes_into_a_strangers_folder(tmp_path, caplog):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("do not touch")
    assert pretrain_main(args(target, "--max-steps", "2")) == 2
    assert "already holds files that are not a run's" in caplog.text
    assert tree(target) == {"thesis.tex": b"do not touch"}


def test_a_failed_setup_does_not_lock_the_folder(tmp_path, caplog):
    out = tmp_path / "run"
    assert (
        pretrain_main(args(out, "--max-steps", "2", "--batch-size", "512")) == 2
    )  # fails while loading data
    assert "fewer than one batch" in caplog.text and not (out / "config.yaml").exists()
    assert pretrain_main(args(out, "--max-steps", "2")) == 0  # a new run is accepted …
    shutil.rmtree(out)
    assert pretrain_main(args(out, "--max-steps", "2", "--batch-size", "512")) == 2
    assert pretrain_main([*args(out, "--max-steps", "2"), "--resume"]) == 0  # … and so is --resume


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, caplog):
    assert pretrain_main(args(tmp_path / "a", "--max-steps", "4", "--checkpoint-every", "2")) == 0
    assert (
        pretrain_main(
            args(
                tmp_path / "b",
                "--max-steps",
                "4",
                "--checkpoint-every",
                "2",
                "--lr",
                "0.01",
                "--halt-at-step",
                "2",
            )
        )
        == 0
    )
    foreign = tmp_path / "a" / "checkpoints" / "step_0000004"
    code = pretrain_main(
        [
            *args(tmp_path / "b", "--max-steps", "4", "--checkpoint-every", "2", "--lr", "0.01"),
            "--resume",
            str(foreign),
        ]
    )
    assert code == 2
    assert "belongs to a run configured differently (lr: checkpoint 0.002, this run 0.01)" in caplog.text


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog):
    common = ("--max-steps", "6", "--checkpoint-every", "2", "--keep-checkpoints", "3", "--log-every", "1")
    assert pretrain_main(args(tmp_path / "straight", *common)) == 0
    out = tmp_path / "run"
    assert pretrain_main([*args(out, *common), "--halt-at-step", "4"]) == 0
    latest = out / "checkpoints" / "step_0000004"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated on disk
    with pytest.raises(CheckpointError, match="is damaged: model.safetensors has 100 bytes"):
        record = json.loads((latest / "trainer_state.json").read_text())
        verify_checkpoint(latest, record["config"], record["run_id"])
    code = pretrain_main([*args(out, *common), "--resume", str(latest)])
    assert code == 2 and "is damaged" in caplog.text  # an explicit damaged checkpoint: refused, named
    assert pretrain_main([*args(out, *common), "--resume"]) == 0  # latest: falls back to step 2
    assert "falling back to an older checkpoint" in caplog.text
    assert [m["step"] for m in metrics(out) if m["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert step_losses(out) == step_losses(tmp_path / "straight")
    straight, resumed = (load_file(p / "encoder.safetensors") for p in (tmp_path / "straight", out))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_checkpoint_state_round_trip(tmp_path):
    assert TrainState().step == 0
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        verify_checkpoint(tmp_path, {})
