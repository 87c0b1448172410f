"""Weight files read as memory maps: a tensor's pages stay file-backed until it is written.

``read_tensors`` maps a ``.safetensors`` file (its header gives every tensor's dtype, shape and
byte range; each tensor is a view of a private copy-on-write map) or loads a ``.bin``/``.pt``
with ``torch.load(weights_only=True, mmap=True)``, which refuses to run pickled code. Converting
or assembling an 8B model this way holds no anonymous copy of a tensor whose dtype is kept:
peak anonymous memory stays far below the checkpoint's size (``kangaroo bench convert``).
"""

from __future__ import annotations

import json
import mmap
import struct

import torch

_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def safetensors_header(path: str) -> tuple[dict, int]:
    """({name: {dtype, shape, data_offsets}}, byte offset of the data) without reading the data."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def mmap_safetensors(path: str) -> dict[str, torch.Tensor]:
    header, base = safetensors_header(path)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    out = {}
    for name, h in header.items():
        if h["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: {name} has an unsupported dtype {h['dtype']}")
        dtype = _DTYPES[h["dtype"]]
        start, end = h["data_offsets"]
        count = (end - start) // torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(mm, dtype=dtype, count=count, offset=base + start) if count else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(h["shape"])
    return out


def read_tensors(path: str) -> dict[str, torch.Tensor]:
    """{name: tensor} of one weight file, memory-mapped."""
    if path.endswith(".safetensors"):
        return mmap_safetensors(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zip" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except Exception as e:  # weights_only refuses code objects: say so, never fall back
        raise ValueError(f"{path}: cannot be loaded safely with weights_only=True ({e})") from None


def tensor_shapes(path: str) -> dict[str, tuple]:
    """{name: shape} of one weight file (safetensors: from the header alone)."""
    if path.endswith(".safetensors"):
        return {k: tuple(h["shape"]) for k, h in safetensors_header(path)[0].items()}
    return {k: tuple(v.shape) for k, v in read_tensors(path).items()}
