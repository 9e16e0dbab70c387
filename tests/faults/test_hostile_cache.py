"""The decoded disk cache against hostile and faulty caches: links planted at its names, a full disk, endless
growth, entries that lie about what they hold, images replaced behind its back, a read-only cache, and the
realistic one-line bugs that once slipped through its tests. Each result is compared with decoding into memory."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.zoo.data import trees
from zoo import files
from zoo.data import load_dataset

ROOT = Path(__file__).resolve().parents[2]
SIZE = 24
SLOT = 3 * SIZE * SIZE  # bytes of one decoded crc image at SIZE


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "zoo-cache"
    monkeypatch.setenv("ZOO_CACHE", str(folder))
    monkeypatch.delenv("ZOO_CACHE_MAX", raising=False)
    return folder


@pytest.fixture
def root(tmp_path):
    return trees.crc(tmp_path / "data")  # 8 classes x 5 TIFFs, all of the same size


def keys(cache: Path) -> set[str]:
    """The keys of the complete entries (those with a record)."""
    return {p.name.split(".")[0] for p in cache.glob("*.json")}


def only_key(cache: Path) -> str:
    (key,) = keys(cache)
    return key


def no_decoding(monkeypatch, ds):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again instead of reusing the cache")

    monkeypatch.setattr(type(ds), "read", refuse)


def assert_same_as_memory(ds, split="train", size=SIZE, **kwargs):
    disk, disk_labels = ds.decode(split, size, cache="disk", **kwargs)
    memory, memory_labels = ds.decode(split, size)
    assert disk.shape == memory.shape and torch.equal(disk, memory)
    assert torch.equal(disk_labels, memory_labels)


def temporaries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if ".tmp-" in p.name)


def run_script(script: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    prelude = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + script], capture_output=True, text=True, timeout=timeout, **kwargs
    )


# 1. links planted at the cache's names; import on an OS without fcntl


def test_a_lock_planted_as_a_link_is_refused_and_its_target_kept(tmp_path, cache, root):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")
    key = only_key(cache)
    for suffix in (".u8", ".json", ".lock"):
        (cache / f"{key}{suffix}").unlink(missing_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (cache / f"{key}.lock").symlink_to(victim)
    error = None
    try:
        ds.decode("train", SIZE, cache="disk")
    except ValueError as e:
        error = str(e)
    assert victim.read_text() == "precious"
    assert (cache / f"{key}.lock").is_symlink()  # not the project's: left as it is
    assert error == (
        f"[Errno 40] {cache / key}.lock is a symbolic link, which the decoded cache never makes: remove it, or "
        "set ZOO_CACHE to a folder of your own"
    )


def test_links_at_the_entry_names_are_never_followed(tmp_path, cache, root):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")
    key = only_key(cache)
    data, record = cache / f"{key}.u8", cache / f"{key}.json"
    zeros, copy = tmp_path / "zeros.bin", tmp_path / "record.json"
    zeros.write_bytes(bytes(data.stat().st_size))  # the right size, black pixels
    copy.write_bytes(record.read_bytes())
    data.unlink()
    record.unlink()
    data.symlink_to(zeros)
    record.symlink_to(copy)
    assert_same_as_memory(ds)
    assert zeros.read_bytes() == bytes(zeros.stat().st_size)  # targets unchanged
    assert not data.is_symlink() and not record.is_symlink()  # replaced by the cache's own files


def test_the_temporary_is_created_exclusively_never_through_a_link(tmp_path, cache, root, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted, real = [], files.temporary_path

    def plant_a_link(path):  # an attacker who wins the race for the temporary name
        tmp = real(path)
        if Path(path).suffix == ".u8":
            tmp.symlink_to(victim)
            planted.append(tmp)
        return tmp

    monkeypatch.setattr(files, "temporary_path", plant_a_link)
    ds = load_dataset("crc", root)
    with pytest.raises(ValueError, match="appeared before the decoded cache could create it") as e:
        ds.decode("train", SIZE, cache="disk")
    assert planted and planted[0].is_symlink() and victim.read_text() == "precious"
    assert str(e.value).startswith(f"[Errno 17] {planted[0]} appeared")


@pytest.mark.timeout(180)
def test_zoo_imports_and_caches_where_there_is_no_fcntl(cache, root):
    out = run_script(
        f"""
sys.modules["fcntl"] = None  # as on Windows
import zoo
from zoo.data import load_dataset
images, _ = load_dataset("crc", {str(root)!r}).decode("train", 16, cache="disk")
print(len(images))
""",
        env={**os.environ, "ZOO_CACHE": str(cache)},
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 0 and len(keys(cache)) == 1


# 2. a full disk


@pytest.mark.timeout(180)
def test_a_full_disk_is_one_clear_error_and_leaves_nothing(cache, root):
    limit = 64 * 1024  # RLIMIT_FSIZE: a file may not grow past 64 KiB, as on a disk that is full
    out = run_script(
        f"""
import resource
from zoo.data import load_dataset
ds = load_dataset("crc", {str(root)!r})
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    ds.decode("train", 64, cache="disk")
except OSError as e:
    print(e.errno, e)
    sys.exit(3)
""",
        env={**os.environ, "ZOO_CACHE": str(cache)},
    )
    assert out.returncode == 3, (out.returncode, out.stderr)  # not killed by SIGBUS or SIGXFSZ
    assert out.stdout.startswith(f"{errno.ENOSPC} ")
    assert f"no room for the decoded crc/train split at 64 px in {cache}" in out.stdout
    assert "GiB failed" in out.stdout and "set ZOO_CACHE" in out.stdout
    assert sum(p.stat().st_size for p in cache.iterdir()) == 0 and not temporaries(cache)


def test_too_little_free_space_is_refused_before_anything_is_written(cache, root, monkeypatch):
    usage = shutil.disk_usage(root)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    ds = load_dataset("crc", root)
    with pytest.raises(OSError, match=rf"needs .* GiB in {cache} but only 0.01 GiB are free.*ZOO_CACHE") as e:
        ds.decode("train", SIZE, cache="disk")
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, ValueError)
    assert not list(cache.glob("*.u8")) and not temporaries(cache)


def test_the_blocks_are_allocated_before_the_pixels_are_written(cache, root, monkeypatch):
    calls = []

    def disk_fills_up(fd, offset, length):  # the disk filled up after the free-space check
        calls.append((offset, length, os.fstat(fd).st_size))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", disk_fills_up)
    ds = load_dataset("crc", root)
    with pytest.raises(OSError, match="No space left on device.*set ZOO_CACHE") as e:
        ds.decode("train", SIZE, cache="disk")
    assert e.value.errno == errno.ENOSPC
    assert calls == [(0, len(ds.indices("train")) * SLOT, 0)]  # the whole file, before anything else
    assert not list(cache.glob("*.u8")) and not temporaries(cache)


# 3. endless growth


def test_a_relative_and_an_absolute_root_share_one_entry(tmp_path, cache, root, monkeypatch):
    load_dataset("crc", root).decode("train", SIZE, cache="disk")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("crc", Path(os.path.relpath(root)))
    no_decoding(monkeypatch, ds)
    ds.decode("train", SIZE, cache="disk")
    assert len(keys(cache)) == 1 and len(list(cache.glob("*.u8"))) == 1


def test_a_new_version_of_a_folder_evicts_the_stale_one(cache, root):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")
    ds.decode("val", SIZE, cache="disk")
    ds.decode("train", 16, cache="disk")
    before = keys(cache)
    touched = ds.base / ds.records[ds.indices("train")[0]].key
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    ds = load_dataset("crc", root)
    assert_same_as_memory(ds)
    after = keys(cache)
    assert (
        len(after) == 3 and len(after - before) == 1
    )  # the old train entry at 24 px went, val and 16 px stay
    assert len(list(cache.glob("*.u8"))) == 3 and len(list(cache.glob("*.lock"))) <= 3


def test_the_cache_is_bounded_least_recently_used_first(cache, root, monkeypatch):
    ds = load_dataset("crc", root)
    built = {}
    for split in ("train", "val"):
        ds.decode(split, SIZE, cache="disk")
        (built[split],) = keys(cache) - set(built.values())
    now = time.time()
    for age, key in ((7200, built["train"]), (3600, built["val"])):  # train used two hours ago, val one
        for path in cache.glob(f"{key}.*"):
            os.utime(path, (now - age, now - age))
    total = sum(p.stat().st_size for p in cache.iterdir())
    limit = total - 1 + len(ds.indices("test")) * (SLOT + 64) + 4096  # test fits once one entry goes
    monkeypatch.setenv("ZOO_CACHE_MAX", str(limit))
    assert_same_as_memory(ds, "test")
    assert built["train"] not in keys(cache) and not list(cache.glob(f"{built['train']}.*"))
    assert built["val"] in keys(cache) and len(keys(cache)) == 2
    assert sum(p.stat().st_size for p in cache.iterdir()) <= limit


@pytest.mark.timeout(180)
def test_entries_in_use_or_being_built_are_never_evicted(cache, root, monkeypatch, caplog):
    ds = load_dataset("crc", root)
    built = {}
    for split in ("train", "val"):
        ds.decode(split, SIZE, cache="disk")
        (built[split],) = keys(cache) - set(built.values())
    reader = subprocess.Popen(  # another process trains on the train split: its pixels are mapped
        [sys.executable, "-c", f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
         f"from zoo.data import load_dataset\n"
         f"images, _ = load_dataset('crc', {str(root)!r}).decode('train', {SIZE}, cache='disk')\n"
         "print('mapped', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "ZOO_CACHE": str(cache)},
    )  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "mapped"
        now = time.time()
        for age, key in ((7200, built["train"]), (3600, built["val"])):
            for path in cache.glob(f"{key}.*"):
                os.utime(path, (now - age, now - age))
        total = sum(p.stat().st_size for p in cache.iterdir())
        monkeypatch.setenv("ZOO_CACHE_MAX", str(total - 1 + len(ds.indices("test")) * (SLOT + 64) + 4096))
        assert_same_as_memory(ds, "test")
        assert built["train"] in keys(cache)  # the least recently used, but mapped: val went instead
        assert built["val"] not in keys(cache)
    finally:
        reader.communicate("", timeout=60)
    (test,) = keys(cache) - {built["train"]}
    with files.file_lock(cache / f"{built['train']}.lock"):  # held as a builder holds it
        monkeypatch.setenv(
            "ZOO_CACHE_MAX", str(len(ds.indices("val")) * (SLOT + 64) + 4096)
        )  # room for val only
        assert_same_as_memory(ds, "val")
        assert built["train"] in keys(cache) and test not in keys(cache)
    assert "entries in use by other processes cannot be removed now" in caplog.text


def test_an_entry_larger_than_the_bound_and_a_bad_bound_are_refused(cache, root, monkeypatch):
    ds = load_dataset("crc", root)
    monkeypatch.setenv("ZOO_CACHE_MAX", "lots")
    with pytest.raises(ValueError, match=r"ZOO_CACHE_MAX='lots' is not a size.*e\.g\. ZOO_CACHE_MAX=50G"):
        ds.decode("train", SIZE, cache="disk")
    monkeypatch.setenv("ZOO_CACHE_MAX", "1K")
    with pytest.raises(ValueError, match=r"needs 0\.00 GiB, more than ZOO_CACHE_MAX allows \(0\.00 GiB\)"):
        ds.decode("train", SIZE, cache="disk")
    assert not list(cache.glob("*.u8")) and not temporaries(cache)
    monkeypatch.setenv("ZOO_CACHE_MAX", "1.5m")
    assert_same_as_memory(ds)


@pytest.mark.timeout(60)
def test_temporaries_of_killed_decoders_are_removed(cache, root):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)  # a process that has ended
    cache.mkdir()
    orphans = [
        cache / f".{'0' * 32}.u8.tmp-{pid}-0badf00d",
        cache / f"{'1' * 32}.u8.tmp-{pid}",
    ]  # v2, v1 names
    alive = cache / f".{'2' * 32}.u8.tmp-1-0badf00d"  # pid 1 runs
    for path in (*orphans, alive):
        path.write_bytes(b"\0" * 4096)
    load_dataset("crc", root).decode("train", SIZE, cache="disk")
    assert not any(p.exists() for p in orphans) and alive.exists()


# 4. entries that lie


def damage(cache: Path, key: str, edit):
    record = cache / f"{key}.json"
    value = json.loads(record.read_text())
    edit(value, cache / f"{key}.u8")
    record.write_text(json.dumps(value))


def test_a_same_size_file_of_zeros_is_decoded_again(cache, root, caplog):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")
    data = cache / f"{only_key(cache)}.u8"
    size = data.stat().st_size
    data.unlink()  # a new file: no mapping of this process points at it
    data.write_bytes(bytes(size))
    assert_same_as_memory(ds)
    assert "does not match its digest" in caplog.text and "decoding it again" in caplog.text


def test_a_record_claiming_another_size_is_decoded_again(cache, root, caplog):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")

    def eight_px(record, data):
        record["shape"][2:] = [8, 8]
        record["size"] = 8
        head = data.read_bytes()[: record["shape"][0] * 3 * 8 * 8]
        data.unlink()
        data.write_bytes(head)

    damage(cache, only_key(cache), eight_px)
    assert_same_as_memory(ds)
    assert "unusable" in caplog.text


def test_a_record_with_fewer_images_is_decoded_again(cache, root):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")

    def one_fewer(record, data):  # consistent with itself: one image and its label gone
        record["shape"][0] -= 1
        record["labels"] = record["labels"][:-1]
        record["digests"] = record.get("digests", [])[:-1]
        head = data.read_bytes()[:-SLOT]
        data.unlink()
        data.write_bytes(head)

    damage(cache, only_key(cache), one_fewer)
    assert_same_as_memory(ds)


def test_unreadable_files_are_named_again_when_the_cache_is_reused(cache, root, monkeypatch, caplog):
    ds = load_dataset("crc", root)
    broken = ds.records[ds.indices("train")[3]].key
    (ds.base / broken).write_bytes(b"not a TIFF")
    ds = load_dataset("crc", root)
    first, _ = ds.decode("train", SIZE, cache="disk")
    assert len(first) == len(ds.indices("train")) - 1 and broken in caplog.text
    caplog.clear()
    no_decoding(monkeypatch, ds)
    again, _ = ds.decode("train", SIZE, cache="disk")
    assert torch.equal(first, again)
    assert f"skipped 1 unreadable of {len(ds.indices('train'))} images: {broken}" in caplog.text


# 5. images replaced behind the cache's back


@pytest.mark.parametrize("how", ["cp -p", "rsync -a"])
def test_an_image_replaced_with_the_same_size_and_time_is_decoded_again(cache, root, how):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")
    first, other = (ds.base / ds.records[i].key for i in ds.indices("train")[:2])
    before = first.stat()
    assert other.stat().st_size == before.st_size and other.read_bytes() != first.read_bytes()
    if how == "cp -p":  # rewritten in place, then the time set back
        first.write_bytes(other.read_bytes())
    else:  # a new file renamed over it, with the time of the old one
        tmp = first.with_name(".incoming")
        tmp.write_bytes(other.read_bytes())
        tmp.replace(first)
    os.utime(first, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = first.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    ds = load_dataset("crc", root)
    assert_same_as_memory(ds)


# 6. a read-only cache


def _without_root_powers():  # pragma: no cover (runs in the child, before exec)
    """Root reads and writes anything: drop those capabilities from the bounding set, so that the program executed
    next has the file permissions of an ordinary user who does not own the cache (and can still run Python)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    for cap in (0, 1, 2, 3, 4):  # CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID
        if prctl(24, cap, 0, 0, 0):  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.timeout(180)
def test_a_read_only_complete_cache_is_used_and_a_missing_entry_is_one_clear_error(tmp_path, monkeypatch):
    root, cache = trees.crc(tmp_path / "data"), tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE", str(cache))
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")
    expected = hashlib.sha256(ds.decode("train", SIZE)[0].numpy().tobytes()).hexdigest()
    for path in (*cache.iterdir(), cache):
        path.chmod(0o555 if path.is_dir() else 0o444)
        if os.geteuid() == 0:
            os.chown(path, 65534, 65534)  # someone else's cache
    before = tree(cache)
    try:
        out = run_script(
            f"""
import hashlib
from pathlib import Path
from zoo.data import load_dataset
try:
    Path({str(cache)!r}, "probe").touch()
    print("writable")
except PermissionError:
    print("read-only")
ds = load_dataset("crc", {str(root)!r})
images, _ = ds.decode("train", {SIZE}, cache="disk")
try:
    ds.decode("val", {SIZE}, cache="disk")  # no entry, and none can be written
except ValueError as e:
    print(e)
print(hashlib.sha256(images.numpy().tobytes()).hexdigest())
""",
            env={**os.environ, "ZOO_CACHE": str(cache)},
            preexec_fn=_without_root_powers if os.geteuid() == 0 else None,
        )
    finally:
        cache.chmod(0o755)  # so that pytest can remove tmp_path
    assert out.returncode == 0, out.stderr
    access, message, digest = out.stdout.strip().splitlines()
    assert access == "read-only" and digest == expected
    assert message.startswith(f"[Errno 13] no usable decoded cache of crc/val in {cache} (there is none)")
    assert message.endswith("set ZOO_CACHE to a writable folder, or decode to memory (cache: memory)")
    assert tree(cache) == before


# 7. bugs that once survived: the key ignoring the size; decoding in place instead of into a temporary file


def test_each_size_has_its_own_entry_and_is_reused(cache, root, monkeypatch):
    ds = load_dataset("crc", root)
    for size in (24, 32):
        assert_same_as_memory(ds, size=size)
    memory = {size: ds.decode("train", size)[0] for size in (24, 32)}
    no_decoding(monkeypatch, ds)
    for size in (32, 24):  # both reused as they are, neither decoded over the other
        assert torch.equal(ds.decode("train", size, cache="disk")[0], memory[size])


def test_a_failed_re_decode_of_a_damaged_cache_changes_nothing_in_place(cache, root, monkeypatch):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")
    data = cache / f"{only_key(cache)}.u8"
    damaged = bytes(data.stat().st_size)
    data.unlink()
    data.write_bytes(damaged)
    real, calls = type(ds).read, []

    def fails_after_five(self, i):
        calls.append(i)
        if len(calls) > 5:
            raise RuntimeError("the disk went away")
        return real(self, i)

    monkeypatch.setattr(type(ds), "read", fails_after_five)
    with pytest.raises(RuntimeError, match="the disk went away"):
        ds.decode("train", SIZE, cache="disk", num_threads=1)
    assert data.read_bytes() == damaged and not temporaries(cache)  # nothing written in place, nothing left
    monkeypatch.setattr(type(ds), "read", real)
    assert_same_as_memory(ds)


def test_a_cache_short_by_exactly_one_image_is_decoded_again(cache, root):
    ds = load_dataset("crc", root)
    ds.decode("train", SIZE, cache="disk")
    data = cache / f"{only_key(cache)}.u8"
    head = data.read_bytes()[:-SLOT]
    data.unlink()
    data.write_bytes(head)
    assert_same_as_memory(ds)
