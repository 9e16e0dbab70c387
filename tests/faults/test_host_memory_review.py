"""``keep_freed_host_memory`` keeps a step's freed memory however much the step frees, and a user's
``MALLOC_ARENA_MAX`` stands like glibc's other malloc variables (a fresh process each: the setting is process-wide).

A step that frees more than 2 GiB (a ResNet-50's activations at batch 32 and 224 px are of that order) was trimmed
back to the OS after every step with a trim threshold of 2**31 - 1, the pages faulted in again at the next:
``man 3 mallopt``'s "never trim" is -1."""

from __future__ import annotations

import textwrap

import pytest

import zoo.host_memory as host_memory
from tests.helpers.fresh_process import run_json

BLOCKS, BLOCK_MIB, TOUCHED_MIB = 52, 50, 1  # 2.54 GiB of address space per step, 52 MiB of it written
ROUNDS = 3

CHILD = textwrap.dedent(
    f"""
    import json, resource
    import torch
    from zoo.host_memory import keep_freed_host_memory

    status = keep_freed_host_memory()

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def one_step():  # a step's activations: allocated, the first MiB of each written, all freed at its end
        blocks = [torch.empty({BLOCK_MIB} * 2**18) for _ in range({BLOCKS})]
        for block in blocks:
            block[: {TOUCHED_MIB} * 2**18].fill_(1.0)

    one_step()  # the first step faults its pages in either way
    before = faults()
    for _ in range({ROUNDS}):
        one_step()
    print(json.dumps({{"status": status, "faults": faults() - before}}))
    """
)
TOUCHED_PAGES = ROUNDS * BLOCKS * TOUCHED_MIB * 256


@pytest.mark.timeout(150)
@pytest.mark.skipif(host_memory._glibc() is None, reason="glibc's mallopt only (Linux with glibc)")
def test_a_step_freeing_more_than_2_gib_is_kept_too():
    """Only address space: the blocks are barely written, so the test needs ~60 MiB of memory."""
    result = run_json(CHILD)
    assert result["status"] == "kept"
    assert result["faults"] < 0.05 * TOUCHED_PAGES  # ~0; trimmed every step, it was every touched page again


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST"])
def test_a_users_arena_settings_stand(name):
    """glibc's two malloc variables without a trailing underscore count as a user's choice like the others."""
    code = "import json; from zoo.host_memory import keep_freed_host_memory as k; print(json.dumps(k()))"
    assert run_json(code, **{name: "2"}) == f"left as set ({name})"
