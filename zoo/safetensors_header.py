"""Reading a safetensors file's header without reading its tensors: names, dtypes and shapes, checked.

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the data. Reading only
the header (bounded) tells what a model folder declares before anything of that size is allocated.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

__all__ = ["MAX_HEADER_BYTES", "TensorInfo", "read_header"]

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the safetensors library itself applies
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
TensorInfo = tuple[str, tuple[int, ...]]  # (dtype, shape)


def _tensor_info(path: Path, name: str, entry, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPE_BYTES:
        raise ValueError(f"{path}: tensor {name!r} has no known dtype")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ValueError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    valid_offsets = (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        and 0 <= offsets[0] <= offsets[1] <= data_size
    )
    if not valid_offsets or offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[entry["dtype"]]:
        raise ValueError(f"{path} is corrupt or truncated: tensor {name!r} does not fit in the file")
    return entry["dtype"], tuple(shape)


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """``{tensor name: (dtype, shape)}`` of a safetensors file; ``ValueError`` for anything that is not a whole,
    consistent safetensors file (header bounded by :data:`MAX_HEADER_BYTES`, every tensor inside the file)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is corrupt or truncated: {size} bytes is no safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path} is corrupt or truncated: its header claims {length} bytes")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is corrupt: its header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path} is corrupt: its header is not a mapping")
    data_size = size - 8 - length
    return {
        name: _tensor_info(path, name, entry, data_size)
        for name, entry in header.items()
        if name != "__metadata__"
    }
