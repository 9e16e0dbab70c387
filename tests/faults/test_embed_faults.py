"""medssl-embed under faults: kill -9 at a shard boundary and mid-shard then the same command, 2 processes against
1, a changed file list / model / revision / dtype refused by name, unreadable files reported, and hostile inputs
(links out of the data folder, an output folder that is not ours, a link planted in ours, FIFOs)."""

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from huggingface_hub import HfApi

import zoo
from tests.helpers.embeddings import hostile_outputs, image_folder, model_folder
from tests.helpers.launch import launch_command
from zoo.embeddings import NotAnOutputError, PlanMismatchError, TooManyUnreadableError
from zoo.embeddings.format import shard_name

ROOT = Path(__file__).resolve().parents[2]
FAST = {"workers": 0, "progress": False}
ENV = {
    **os.environ,
    "ACCELERATE_USE_CPU": "true",
    "GLOO_SOCKET_IFNAME": "lo",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": str(ROOT),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_folder(tmp_path_factory.mktemp("model") / "m", size=32)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (links as links) with its sha256, the lock file left out."""
    out = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[name] = "link to " + os.readlink(path)
        elif path.is_file() and path.name != ".lock":
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def shard_times(folder: Path) -> dict[int, int]:
    return {int(p.name[11:16]): p.stat().st_mtime_ns for p in folder.glob("embeddings-*.safetensors")}


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (DataLoader workers, torchrun's workers) at once."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)


def cli(model: Path, data: Path, out: Path, *extra: str, processes: int = 0) -> list[str]:
    """medssl-embed as ``python -m`` (processes=0) or under ``accelerate launch`` with N CPU processes."""
    args = [
        str(model),
        str(data),
        "--out",
        str(out),
        "--shard-size",
        "6",
        "--batch-size",
        "4",
        "--workers",
        "1",
        *extra,
    ]
    if processes:
        return launch_command("-m", "medssl_zoo.embed", *args, num_processes=processes)
    return [sys.executable, "-m", "medssl_zoo.embed", *args]


def run_until(
    cmd: list[str], out: Path, kill_after_shards: int | None, mid_shard: bool, timeout: float = 400
) -> int:
    """Run ``cmd``; with ``kill_after_shards``, SIGKILL it and its children as soon as that many shards are
    complete (whichever they are: several processes write theirs in any order; ``mid_shard``: half a shard's time
    later). Returns the exit code (-9 when killed)."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline, seen = time.monotonic() + timeout, {}
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            for k in range(64):
                if k not in seen and (out / shard_name(k)).is_file():
                    seen[k] = time.monotonic()
            if kill_after_shards is not None and len(seen) >= kill_after_shards:
                if mid_shard:
                    times = sorted(seen.values())
                    time.sleep((times[-1] - (times[-2] if len(times) > 1 else times[-1] - 1.0)) / 2)
                kill_tree(proc.pid)
                proc.wait(timeout=30)
                return proc.returncode
            time.sleep(0.005)
        if proc.poll() is None:
            raise TimeoutError(f"{cmd} ran past {timeout} s")
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(timeout=30)
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert proc.returncode == 0, stderr[-4000:]
    return 0


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(900)
@pytest.mark.parametrize("processes", [0, 2])
def test_kill_9_then_the_same_command_equals_an_uninterrupted_run(model, tmp_path, processes):
    """Killed right after 2 shards are complete (a boundary), then mid-shard after 2 more, then run to the end:
    every file of the output equals an uninterrupted 1-process run's byte for byte (2 processes: 2 == 1 as well).
    With 2 processes the shards complete in any order, so the kills count shards rather than name them."""
    data = image_folder(tmp_path / "data", 60)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    reference = tmp_path / "reference"
    assert run_until(cli(model, data, reference), reference, None, False) == 0
    out = tmp_path / "out"
    assert run_until(cli(model, data, out, processes=processes), out, 2, mid_shard=False) == -signal.SIGKILL
    first = shard_times(out)
    more = len(first) + 2
    assert run_until(cli(model, data, out, processes=processes), out, more, mid_shard=True) == -signal.SIGKILL
    second = shard_times(out)
    assert 2 <= len(first) < len(second) < 11 and not (out / "index.csv").exists()
    assert all(second[k] == t for k, t in first.items())  # continued from the complete shards, none redone
    assert run_until(cli(model, data, out, processes=processes), out, None, False) == 0
    assert all(shard_times(out)[k] == t for k, t in second.items())
    assert snapshot(out) == snapshot(reference)
    assert len(zoo.embeddings.open(out)) == 60 and zoo.embeddings.open(out).meta["skipped"] == 1


def test_a_changed_file_list_is_refused_by_name_and_nothing_is_mixed(model, tmp_path):
    data = image_folder(tmp_path / "data", 10)
    out = tmp_path / "out"
    zoo.embed(str(model), data, out, shard_size=4, **FAST)
    before = snapshot(out)
    shutil.copy(data / "img00000.png", data / "new.png")
    with pytest.raises(PlanMismatchError, match=r"files: 1 added \(new\.png\).*--overwrite"):
        zoo.embed(str(model), data, out, shard_size=4, **FAST)
    (data / "new.png").unlink()
    (data / "img00000.png").unlink()
    with pytest.raises(PlanMismatchError, match=r"1 removed \(img00000\.png\)"):
        zoo.embed(str(model), data, out, shard_size=4, **FAST)
    image_folder(tmp_path / "data", 1, seed=5)  # img00000.png again, other pixels
    with pytest.raises(PlanMismatchError, match=r"1 modified or relabelled \(img00000\.png\)"):
        zoo.embed(str(model), data, out, shard_size=4, **FAST)
    assert snapshot(out) == before
    replaced = zoo.embed(str(model), data, out, shard_size=4, overwrite=True, **FAST)
    fresh = zoo.embed(str(model), data, tmp_path / "fresh", shard_size=4, **FAST)
    assert (replaced.to_numpy() == fresh.to_numpy()).all() and snapshot(out) == snapshot(tmp_path / "fresh")


def test_another_model_dtype_or_shard_size_is_refused_by_name(model, tmp_path):
    data = image_folder(tmp_path / "data", 6)
    out = tmp_path / "out"
    zoo.embed(str(model), data, out, shard_size=4, **FAST)
    before = snapshot(out)
    other = model_folder(tmp_path / "other", seed=1, size=32)
    with pytest.raises(PlanMismatchError, match=r"model\.weights_sha256: '[0-9a-f]{64}' → '[0-9a-f]{64}'"):
        zoo.embed(str(other), data, out, shard_size=4, **FAST)
    with pytest.raises(PlanMismatchError, match=r"dtype: 'float32' → 'float16'"):
        zoo.embed(str(model), data, out, shard_size=4, dtype="float16", **FAST)
    with pytest.raises(PlanMismatchError, match=r"shard_size: 4 → 5"):
        zoo.embed(str(model), data, out, shard_size=5, **FAST)
    current = zoo.embeddings.open(out).meta["key"]["precision"]
    other = "fp32" if current == "bf16" else "bf16"
    with pytest.raises(PlanMismatchError, match=rf"precision: '{current}' → '{other}'"):
        zoo.embed(str(model), data, out, shard_size=4, precision=other, **FAST)
    assert snapshot(out) == before


def test_another_revision_of_a_hub_model_is_refused_by_name(tiny_export, hub_server, tmp_path):
    from medssl_zoo.hub.push import push
    from tests.hub.test_roundtrip import modified_copy

    repo, api = "medssl-test/embed-revisions", HfApi(endpoint=hub_server.url)
    first = push(tiny_export, repo, tag="v1", api=api)
    second = push(modified_copy(tiny_export, tmp_path / "v2", 2.0), repo, api=api)
    data = image_folder(tmp_path / "data", 5)
    emb = zoo.embed(repo, data, tmp_path / "out", revision="v1", **FAST)
    assert emb.model["revision"] == first
    with pytest.raises(PlanMismatchError, match=rf"model\.revision: '{first}' → '{second}'"):
        zoo.embed(repo, data, tmp_path / "out", **FAST)  # main: the second commit


def test_unreadable_files_are_skipped_counted_and_reported(model, tmp_path):
    data = image_folder(tmp_path / "data", 12)
    (data / "empty.png").write_bytes(b"")
    (data / "noise.png").write_bytes(os.urandom(300))
    good = (data / "img00003.png").read_bytes()
    (data / "truncated.png").write_bytes(good[: len(good) // 2])
    os.mkfifo(data / "pipe.png")  # not a regular file: never opened, named by the scan
    out = tmp_path / "out"
    with pytest.raises(
        TooManyUnreadableError, match=r"3 of 15 files could not be read .*skipped\.csv.*empty\.png"
    ):
        zoo.embed(str(model), data, out, shard_size=4, max_bad=0.1, **FAST)
    report = (out / "skipped.csv").read_text().splitlines()
    assert report[0] == "path,reason" and [r.split(",")[0] for r in report[1:]] == [
        "empty.png",
        "noise.png",
        "truncated.png",
    ]
    assert not (out / "index.csv").exists()
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("embeddings-*")}
    emb = zoo.embed(str(model), data, out, shard_size=4, max_bad=0.25, **FAST)  # the shards are reused
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("embeddings-*")} == written
    assert len(emb) == 12 and emb.meta["skipped"] == 3
    assert "pipe.png" not in (out / "files.csv").read_text()


def test_a_file_changed_during_the_run_is_skipped_not_embedded(model, tmp_path):
    from zoo.data.transforms import eval_transform
    from zoo.embeddings.loop import _Images
    from zoo.embeddings.plan import scan

    data = image_folder(tmp_path / "data", 3)
    plan = scan(data)
    image_folder(tmp_path / "data", 1, seed=9)  # img00000.png rewritten after the scan
    images = _Images(plan, eval_transform(zoo.load(model).pretrained_cfg))
    changed = [row[0] for row in plan.rows].index("img00000.png")
    assert images[changed][1] is None and images[changed][2] == "changed since the scan"
    assert all(images[i][1] is not None for i in range(3) if i != changed)


@pytest.mark.timeout(60)
def test_links_in_the_data_folder(model, tmp_path):
    """A link to a folder outside the data root is read under its own path (as the datasets read it); links back
    up are not followed; a file link to a device or a non-image is skipped: nothing is written outside --out."""
    data = image_folder(tmp_path / "data", 4)
    outside = image_folder(tmp_path / "outside", 2, seed=3)
    (data / "linked").symlink_to(outside, target_is_directory=True)
    (data / "loop").symlink_to(data, target_is_directory=True)
    (data / "zero.png").symlink_to("/dev/zero")
    (data / "passwd.png").symlink_to("/etc/passwd")
    emb = zoo.embed(str(model), data, tmp_path / "out", shard_size=4, max_bad=0.2, **FAST)
    paths = [r["path"] for r in emb.records()]
    assert {"linked/img00000.png", "linked/d1/img00001.png"} <= set(paths) and not any(
        "loop" in p for p in paths
    )
    assert "zero.png" not in paths and "passwd.png" in (tmp_path / "out" / "skipped.csv").read_text()
    assert all(not p.startswith("..") for p in paths)


def test_an_output_folder_that_is_not_ours_is_never_touched(model, tmp_path):
    data = image_folder(tmp_path / "data", 4)
    for name, content in (("notes", {"notes.txt": "mine"}), ("lookalike", {"index.csv": "path\nmine\n"})):
        folder = tmp_path / name
        folder.mkdir()
        for file, text in content.items():
            (folder / file).write_text(text)
        before = snapshot(folder)
        with pytest.raises(NotAnOutputError, match=r"is not an embedding output of this project"):
            zoo.embed(str(model), data, folder, overwrite=True, **FAST)
        assert snapshot(folder) == before
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(ValueError, match="is a link"):
        zoo.embed(str(model), data, tmp_path / "link", **FAST)
    assert not any((tmp_path / "real").iterdir())


def test_a_link_planted_in_an_output_is_replaced_never_written_through(model, tmp_path):
    data = image_folder(tmp_path / "data", 8)
    out = tmp_path / "out"
    zoo.embed(str(model), data, out, shard_size=4, **FAST)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / shard_name(1)).unlink()
    (out / shard_name(1)).symlink_to(victim)
    (out / "meta.json").write_text(
        (out / "meta.json").read_text().replace('"complete": true', '"complete": false')
    )
    emb = zoo.embed(str(model), data, out, shard_size=4, **FAST)
    assert victim.read_text() == "precious" and not (out / shard_name(1)).is_symlink() and len(emb) == 8


@pytest.mark.timeout(30)
def test_fifos_never_block(model, tmp_path):
    data = image_folder(tmp_path / "data", 4)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "meta.json")
    with pytest.raises(ValueError, match="not a regular file"):
        zoo.embed(str(model), data, out, **FAST)
    os.mkfifo(tmp_path / "fifo-out")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        zoo.embed(str(model), data, tmp_path / "fifo-out", **FAST)
    with pytest.raises(ValueError, match="not a regular file"):
        zoo.embeddings.open(out)


def test_a_lost_shard_of_a_complete_output_is_embedded_again(model, tmp_path):
    data = image_folder(tmp_path / "data", 9)
    out = tmp_path / "out"
    zoo.embed(str(model), data, out, shard_size=4, **FAST)
    complete = snapshot(out)
    (out / shard_name(1)).unlink()
    with pytest.raises(ValueError, match=r"lists embeddings-00001\.safetensors, which is not there"):
        zoo.embeddings.open(out)
    zoo.embed(str(model), data, out, shard_size=4, **FAST)
    assert snapshot(out) == complete


def test_nothing_is_created_when_the_model_or_the_data_cannot_be_read(model, tmp_path):
    data = image_folder(tmp_path / "data", 3)
    with pytest.raises(zoo.ModelNotAvailableError):
        zoo.embed(str(tmp_path / "no-model"), data, tmp_path / "out", **FAST)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.embed(str(model), tmp_path / "no-data", tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(30)
def test_a_strangers_output_is_refused_before_anything_large_is_read(tmp_path):
    for name, folder in hostile_outputs(tmp_path).items():
        with pytest.raises(ValueError) as refused:
            zoo.search(folder, [1.0, 0.0, 0.0, 0.0])
        assert str(folder) in str(refused.value), name
