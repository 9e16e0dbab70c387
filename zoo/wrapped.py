"""State dicts of wrapped models: DDP saves its keys as ``module.*``, ``torch.compile`` as ``_orig_mod.*`` (in either
nesting order); the project stores and reads them without the wrappers, so a checkpoint reloads whatever the process
count and ``--compile`` of the run that wrote it and of the one reading it (../shared/notes/gpu.md)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["WRAPPER_PREFIXES", "unwrapped_keys"]

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _unwrapped(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def unwrapped_keys(state: Mapping) -> dict:
    """``state`` with the wrappers' leading prefixes removed from every key; ``ValueError`` when two keys become one
    (a state dict that mixes wrapped and unwrapped copies of a tensor is not a model's)."""
    out = {}
    for key, value in state.items():
        name = _unwrapped(key)
        if name in out:
            raise ValueError(
                f"the state dict holds {name!r} twice (wrapped and unwrapped): not one model's weights"
            )
        out[name] = value
    return out
