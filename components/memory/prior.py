"""What a model's weights will take in memory, read before anything is loaded.

A safetensors file starts with an 8-byte little-endian length and a JSON header that lists every tensor's dtype
and shape: enough to know each component's weight bytes without reading a single weight. The planner uses the
difference between a never-run model's weights and those of the model its fit was measured on (the built-in tiny
Wan) as the first physical correction of its prediction, until runs of that model teach it the rest.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DTYPE_BYTES", "safetensors_header", "weight_bytes"]

#: Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_FLOATING = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_MAX_HEADER = 100 * 2**20  # the format's own limit; a larger length field is a damaged or hostile file


def safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name → dtype, shape, offsets), read without the weights."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ValueError(f"{Path(path).name}: too short for a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ValueError(f"{Path(path).name}: header length {length} is over the format's limit")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{Path(path).name}: the header is not a JSON object")
    header.pop("__metadata__", None)
    return header


def weight_bytes(
    folder: str | os.PathLike[str], dtype_bytes: int = 2, component_dtype_bytes: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Bytes each component's weights take once loaded: floating tensors in the run dtype (``dtype_bytes``, or
    ``component_dtype_bytes[component]`` for a component run in another, e.g. a VAE in fp32), others as stored.
    Components are the folder's sub-folders holding ``*.safetensors`` files."""
    root = Path(folder)
    overrides = dict(component_dtype_bytes or {})
    sizes: dict[str, int] = {}
    for file in sorted(root.glob("*/*.safetensors")):
        component = file.parent.name
        width = overrides.get(component, dtype_bytes)
        total = 0
        for entry in safetensors_header(file).values():
            stored = str(entry.get("dtype"))
            count = math.prod(int(side) for side in entry.get("shape", ()))
            total += count * (width if stored in _FLOATING else DTYPE_BYTES.get(stored, 4))
        sizes[component] = sizes.get(component, 0) + total
    return sizes
