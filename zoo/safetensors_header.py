"""Reading a safetensors file's header without reading its tensors: names, dtypes and shapes, checked.

``safetensors.safe_open`` parses and validates the header before anything else (its length bounded at 100 MB, every
tensor's offsets inside the file and consistent with its dtype and shape) and memory-maps the data without reading
it, so what a model folder declares is known before anything of that size is allocated.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open

__all__ = ["TensorInfo", "read_header"]

TensorInfo = tuple[str, tuple[int, ...]]  # (dtype, shape)


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """``{tensor name: (dtype, shape)}`` of a safetensors file; ``ValueError`` for anything that is not a whole,
    consistent safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
            return {name: (s.get_dtype(), tuple(s.get_shape())) for name, s in slices.items()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is corrupt or truncated ({e})") from e
