"""``keep_freed_host_memory``: a freed tensor's pages are reused by the next one instead of being returned to the OS
and faulted in again (counted with ``getrusage``'s minor page faults, in a fresh process each: the setting is
process-wide); a user's own allocator settings stand."""

from __future__ import annotations

import textwrap

import pytest

import zoo.host_memory as host_memory
from tests.helpers.fresh_process import run_json

BLOCK_MIB = 48  # above glibc's largest mmap threshold (32 MiB): only M_MMAP_MAX = 0 keeps such a block
ROUNDS = 8

CHILD = textwrap.dedent(
    f"""
    import json, resource, sys
    import torch
    from zoo.host_memory import keep_freed_host_memory

    status = keep_freed_host_memory() if sys.argv[1] == "keep" else "not called"

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def one_step(mib):  # allocate, write every page, free: a step's activations, once
        torch.empty(mib * 2**18, dtype=torch.float32).fill_(1.0)

    for _ in range(2):  # the first rounds fault their pages in either way (the heap grows to its size)
        one_step({BLOCK_MIB})
        one_step(4)
    before = faults()
    for _ in range({ROUNDS}):
        one_step({BLOCK_MIB})
        one_step(4)  # a small block too: 4 MiB is above the default 128 KiB threshold
    print(json.dumps({{"status": status, "faults": faults() - before}}))
    """
)


def _run(mode: str, **env: str) -> dict:
    return run_json(CHILD, mode, **env)


PAGES_PER_ROUND = (BLOCK_MIB + 4) * 256  # 4 KiB pages written per round


@pytest.mark.skipif(host_memory._glibc() is None, reason="glibc's mallopt only (Linux with glibc)")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    plain, kept = _run("plain"), _run("keep")
    assert plain["status"] == "not called" and kept["status"] == "kept"
    assert plain["faults"] >= 0.9 * ROUNDS * PAGES_PER_ROUND  # every page of every round, faulted in again
    assert kept["faults"] < 0.02 * plain["faults"]  # ~0: the same pages, reused


@pytest.mark.skipif(host_memory._glibc() is None, reason="glibc's mallopt only (Linux with glibc)")
@pytest.mark.parametrize(
    "env, named",
    [
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_"),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}, "GLIBC_TUNABLES"),
    ],
)
def test_a_users_own_malloc_settings_stand(env, named):
    result = _run("keep", **env)
    assert result["status"] == f"left as set ({named})"
    assert result["faults"] >= 0.9 * ROUNDS * PAGES_PER_ROUND  # their setting, not ours: faults as before


def test_another_preloaded_allocator_or_libc_is_left_alone(monkeypatch):
    monkeypatch.setattr(host_memory, "_kept", False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert host_memory.keep_freed_host_memory().startswith("left as set (LD_PRELOAD=")
    monkeypatch.delenv("LD_PRELOAD")
    for name in [n for n in host_memory.os.environ if n.startswith("MALLOC_") or n == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(host_memory.sys, "platform", "darwin")
    assert host_memory.keep_freed_host_memory() == "left as it is (not glibc)"


def test_the_training_evaluation_and_embedding_commands_keep_it(tmp_path, monkeypatch):
    """Each command calls it once, before its work (here: work that then fails on a missing input)."""
    import medssl_zoo.embed as embed_cli
    import medssl_zoo.train.evaluate as evaluate_cli
    import medssl_zoo.train.pretrain as pretrain
    from medssl_zoo.train.config import parse_args
    from tests.train.tiny import args

    calls = []
    for module in (embed_cli, evaluate_cli, pretrain):
        monkeypatch.setattr(
            module, "keep_freed_host_memory", lambda m=module: calls.append(m.__name__) or "kept"
        )
    missing = str(tmp_path / "missing")
    assert evaluate_cli.main([missing]) != 0
    assert embed_cli.main([missing, missing, "--out", str(tmp_path / "out")]) != 0
    pretrain.Trainer(parse_args(args(tmp_path / "run"))[0])
    assert calls == ["medssl_zoo.train.evaluate", "medssl_zoo.embed", "medssl_zoo.train.pretrain"]
