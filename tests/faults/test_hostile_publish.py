"""Hostile publishing: export folders and runs with symbolic links or broken files, foreign destinations, a JSON
registry, and reproduce re-run with other settings. Each is refused (or skipped) by name before anything is
uploaded, copied or run; what is published loads with zoo.load."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi

import zoo
from medssl_zoo.hub import export as export_module
from medssl_zoo.hub.export import ExportError, check_destination, export_run
from medssl_zoo.hub.push import push
from medssl_zoo.train import reproduce
from tests.helpers.hub_server import HubServer
from zoo.hub_format import CARD_FILE, MODEL_CONFIG_FILE, OOD_FILE, PLOT_FILE, WEIGHTS_FILE
from zoo.registry import read_registry_file
from zoo.run_dir import CURVES_FILE, ENCODER_FILE, read_run

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"SECRET-private-key-0123456789"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


def copy_of(export: Path, folder: Path) -> Path:
    return shutil.copytree(export, folder)


def nothing_uploaded(server: HubServer) -> bool:
    """No request reached the server and no repository or file holds the secret."""
    stored = [p.read_bytes() for p in server.root.rglob("*") if p.is_file()]
    return server.auth_hashes == [] and not any(SECRET in data for data in stored)


def hostile_folder(kind: str, export: Path, tmp_path: Path, secret: Path) -> tuple[Path, str]:
    """(a broken copy of the export, the message its refusal must contain)."""
    folder = copy_of(export, tmp_path / kind)
    if kind == "curves-link-to-a-secret":
        (folder / PLOT_FILE).unlink(missing_ok=True)
        (folder / PLOT_FILE).symlink_to(secret)
        return folder, f"{folder / PLOT_FILE} is a symbolic link"
    if kind == "weights-link":  # valid weights, but elsewhere: a link is never published
        outside = shutil.copy(folder / WEIGHTS_FILE, tmp_path / "weights-elsewhere.safetensors")
        (folder / WEIGHTS_FILE).unlink()
        (folder / WEIGHTS_FILE).symlink_to(outside)
        return folder, f"{folder / WEIGHTS_FILE} is a symbolic link"
    if kind in ("config-link", "card-link"):
        name = MODEL_CONFIG_FILE if kind == "config-link" else CARD_FILE
        (folder / name).unlink()
        (folder / name).symlink_to(secret)
        return folder, f"{folder / name} is a symbolic link"
    if kind == "weights-as-text":
        (folder / WEIGHTS_FILE).write_text("these are not weights\n")
        return folder, "corrupt or truncated"
    if kind == "weights-truncated":
        data = (folder / WEIGHTS_FILE).read_bytes()
        (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
        return folder, "corrupt or truncated"
    if kind == "config-five-million-classes":
        config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
        config.update(num_classes=5_000_000, label_names=[])
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config))
        return folder, "num_classes must be an integer in"
    if kind == "config-of-another-architecture":
        config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
        config["architecture"] = "resnet18"
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config))
        return folder, "do not fit"
    raise AssertionError(kind)


LINKS = ["curves-link-to-a-secret", "weights-link", "config-link", "card-link"]
BROKEN = [
    "weights-as-text",
    "weights-truncated",
    "config-five-million-classes",
    "config-of-another-architecture",
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", LINKS + BROKEN)
def test_push_refuses_links_and_unloadable_folders_before_any_upload(
    kind, tiny_export, tmp_path, secret, hub_server
):
    folder, message = hostile_folder(kind, tiny_export, tmp_path, secret)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        push(folder, "medssl-test/hostile", api=HfApi(endpoint=hub_server.url))
    assert "\n" not in str(refused.value)
    if kind in BROKEN:
        assert str(refused.value).startswith(f"{folder} cannot be published: ")
    assert nothing_uploaded(hub_server)
    assert not (hub_server.root / "models" / "medssl-test" / "hostile").exists()


@pytest.mark.timeout(120)
def test_push_uploads_only_the_export_files_of_a_folder_with_other_entries(
    tiny_export, tmp_path, secret, hub_server, caplog
):
    folder = copy_of(tiny_export, tmp_path / "with-extras")
    (folder / "notes.txt").write_text("my notes")
    (folder / "link-to-secret").symlink_to(secret)
    caplog.set_level(logging.WARNING)
    sha = push(folder, "medssl-test/extras", api=HfApi(endpoint=hub_server.url))
    assert "not uploaded (not export files): link-to-secret, notes.txt" in caplog.text
    repo = hub_server.root / "models" / "medssl-test" / "extras"
    files = subprocess.run(
        ["git", "ls-tree", "--name-only", sha], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(files) - {".gitattributes"} == {p.name for p in tiny_export.iterdir()}  # the export files only
    assert not any(SECRET in p.read_bytes() for p in repo.rglob("*") if p.is_file())


@pytest.fixture
def run_copy(tiny_export, tmp_path):
    """A copy of the session's finished tiny run (the export's source), to plant links in."""
    return shutil.copytree(tiny_export.parent / "run", tmp_path / "run", symlinks=True)


@pytest.mark.timeout(300)
def test_export_skips_a_linked_curves_image_and_never_copies_its_target(run_copy, tmp_path, secret, caplog):
    (run_copy / CURVES_FILE).unlink(missing_ok=True)
    (run_copy / CURVES_FILE).symlink_to(secret)
    caplog.set_level(logging.WARNING)
    out = export_run(run_copy, tmp_path / "export")
    assert f"{run_copy / CURVES_FILE} is a symbolic link: not copied" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == [CARD_FILE, MODEL_CONFIG_FILE, WEIGHTS_FILE, OOD_FILE]
    assert not any(SECRET in p.read_bytes() for p in out.iterdir())
    assert f"]({PLOT_FILE})" not in (out / CARD_FILE).read_text()  # the card does not show a missing plot
    assert zoo.load(out).label_names


@pytest.mark.timeout(120)
def test_export_refuses_a_run_whose_files_are_links(run_copy, tmp_path):
    weights = shutil.move(run_copy / ENCODER_FILE, tmp_path / "elsewhere.safetensors")
    (run_copy / ENCODER_FILE).symlink_to(weights)
    with pytest.raises(ExportError, match=f"^{run_copy / ENCODER_FILE} is a symbolic link; an export reads"):
        export_run(run_copy, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    assert export_module.main([str(run_copy), str(tmp_path / "export")]) == 2


def test_export_into_a_symbolic_link_is_refused(tiny_export, tmp_path):
    target = copy_of(tiny_export, tmp_path / "earlier-export")  # an earlier export: replaceable by name
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ExportError, match=f"^{link} is a symbolic link; export into a folder of its own"):
        check_destination(link, force=True)
    assert link.is_symlink() and {p.name: p.read_bytes() for p in target.iterdir()} == before


@pytest.mark.parametrize("force", [False, True])
def test_a_foreign_folder_holding_a_single_file_is_refused_without_force(tmp_path, force):
    """The planted bug `check_destination` accepting a foreign folder with one file: ``notes.txt`` alone."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    if force:
        check_destination(folder, force=True)  # allowed: write_folder then moves it aside, never deletes it
        return
    with pytest.raises(
        ExportError, match=r"exists and is not an export of this project \(it holds notes.txt\)"
    ):
        check_destination(folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


# --- the registry reproduce --push writes


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_the_registry_keeps_its_format(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"team{suffix}"
    first = {"team-model": {"repo_id": "team/team-model", "revision": "v1", "description": "ours"}}
    path.write_text(json.dumps(first) if suffix == ".json" else yaml.safe_dump(first))
    reproduce.update_registry(
        path, "simclr-synthetic", {"repo_id": "medssl-test/simclr-synthetic", "revision": SHA}
    )
    text = path.read_text()
    parsed = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert parsed == {
        "simclr-synthetic": {"repo_id": "medssl-test/simclr-synthetic", "revision": SHA},
        **first,
    }
    if suffix == ".json":
        assert text.lstrip().startswith("{")  # JSON, not YAML
    entries = read_registry_file(path)  # as zoo.load reads it
    assert entries["simclr-synthetic"].revision == SHA and entries["team-model"].description == "ours"
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    assert {"simclr-synthetic", "team-model"} <= set(zoo.list_models())


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("team.txt", "", r"cannot tell its format from the suffix '\.txt'"),
        ("registry", "", r"cannot tell its format from the suffix '\(none\)'"),
        ("team.json", "{not json", "cannot be read"),
        ("team.yaml", "a: &x [1]\nb: *x\n", "aliases"),
        ("team.json", '{"m": {"repo_id": "../../etc"}}', "must be a Hub repository id"),
    ],
)
def test_a_registry_that_cannot_be_kept_is_refused_before_any_work(
    tmp_path, monkeypatch, caplog, name, content, message
):
    registry = tmp_path / name
    if content:
        registry.write_text(content)

    def no_work(*args, **kwargs):
        raise AssertionError("a cell started although the registry is refused")

    monkeypatch.setattr(reproduce, "pretrain", no_work)
    monkeypatch.setattr(reproduce, "publish", no_work)
    argv = ["--methods", "simclr", "--synthetic-steps", "2", "--out", str(tmp_path / "out")]
    assert reproduce.main([*argv, "--push", "medssl-test", "--registry", str(registry)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and re.search(message, errors[0]), errors
    assert registry.read_text() == content if content else not registry.exists()


# --- reproduce: a cell records the settings it was made with


TINY = "--dataset-options '{num_images: 96}' --image-size 32 --batch-size 16 --knn-k 5"


def reproduce_argv(out: Path, steps: int, protocols: str = "knn") -> list[str]:
    return [
        "--methods", "simclr", "--synthetic-steps", str(steps), "--protocols", protocols, "--fractions", "1.0",
        "--seeds", "0", "--baselines", "none", "--out", str(out), "--pretrain-args", TINY,
    ]  # fmt: skip


@pytest.mark.timeout(600)
def test_reproduce_refuses_cells_made_with_other_settings_and_redoes_them_on_request(tmp_path, caplog):
    out = tmp_path / "results"
    run_dir = out / "runs" / "simclr-synthetic"
    assert reproduce.main(reproduce_argv(out, 2)) == 0
    assert read_run(run_dir).config.max_steps == 2
    caplog.clear()
    assert reproduce.main(reproduce_argv(out, 3)) == 2  # --synthetic-steps changed
    error = next(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert (
        "1 cell(s) in" in error
        and "simclr-synthetic (max_steps: 2 → 3)" in error
        and "--rerun-changed" in error
    )
    assert "finished earlier, skipped" not in caplog.text and read_run(run_dir).config.max_steps == 2
    caplog.clear()
    assert reproduce.main(reproduce_argv(out, 2, "knn,linear")) == 2  # an evaluation setting changed
    assert "simclr-synthetic (protocols: knn → knn,linear)" in caplog.text
    # on request, only the evaluation is redone: the run stays
    caplog.clear()
    caplog.set_level(logging.INFO, logger="reproduce")
    assert reproduce.main([*reproduce_argv(out, 2, "knn,linear"), "--rerun-changed"]) == 0
    assert (
        "pre-training" not in caplog.text and "| simclr | ssl | linear |" in (out / "results.md").read_text()
    )
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["simclr-synthetic"]
    # a pre-training change redoes the cell; the earlier run is renamed aside, not deleted
    assert reproduce.main([*reproduce_argv(out, 3, "knn,linear"), "--rerun-changed"]) == 0
    assert read_run(run_dir).config.max_steps == 3 and read_run(run_dir).finished
    aside = [p for p in (out / "runs").iterdir() if p.name.startswith("simclr-synthetic.replaced-")]
    assert len(aside) == 1 and read_run(aside[0]).config.max_steps == 2
    caplog.clear()
    assert reproduce.main(reproduce_argv(out, 3, "knn,linear")) == 0  # the same settings: reused
    assert "simclr-synthetic: finished earlier, skipped" in caplog.text


def test_push_and_export_help_and_the_cli_refusal(tiny_export, tmp_path, secret):
    folder = copy_of(tiny_export, tmp_path / "cli")
    (folder / PLOT_FILE).unlink(missing_ok=True)
    (folder / PLOT_FILE).symlink_to(secret)
    proc = subprocess.run(
        [sys.executable, "-m", "medssl_zoo.hub.push", str(folder), "medssl-test/cli"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_TOKEN": "hf_unused_0123456789", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert lines == [
        f"ERROR {folder / PLOT_FILE} is a symbolic link: push uploads only the export's own regular files, never "
        "what a link points to; re-export the model (medssl-export RUN_DIR OUT_DIR) or put the file itself there"
    ]
