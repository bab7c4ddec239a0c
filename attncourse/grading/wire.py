"""The message format between the grader and its sandboxed child: JSON plus raw tensor bytes.

No pickle crosses the boundary: the parent never unpickles bytes written by learner code.
A message is::

    8-byte big-endian length N | N bytes: 4-byte header length H | H bytes JSON | blobs...

The JSON may contain *value descriptions* (see :func:`encode_value`); a tensor is described by
its dtype and shape and its bytes are one of the blobs. Decoding checks every length, dtype
and shape against the bytes actually received, so a malformed or forged message is a
:class:`WireError`, never a crash or a wrong tensor.
"""
from __future__ import annotations

import json
import math
import os
import struct

import torch

MAX_HEADER = 1 << 20  # bytes of JSON in one message

# dtypes that may cross the boundary (the name is what goes on the wire)
DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool, "complex64": torch.complex64,
    "complex128": torch.complex128,
}
_NAMES = {v: k for k, v in DTYPES.items()}


class WireError(Exception):
    """A message that does not follow the format (truncated, oversized or malformed)."""


def dtype_name(dtype: torch.dtype) -> str:
    return _NAMES.get(dtype, str(dtype).replace("torch.", ""))


# --------------------------------------------------------------------------- values
def encode_value(value, blobs: list[bytes], depth: int = 0) -> dict:
    """Describe ``value`` as JSON, appending tensor bytes to ``blobs``.

    Plain tensors travel by value; tuples/lists/dicts of values recursively (bounded depth);
    ``None``, bools, ints, floats and short strings as themselves; anything else (a tensor
    subclass, a custom object) only by the name of its type, so the receiver can say what it
    got without ever holding the object.
    """
    if depth > 4:
        return {"kind": "object", "type": "a deeply nested container"}
    if type(value) is torch.Tensor:
        if value.dtype not in _NAMES:
            return {"kind": "object", "type": f"torch.Tensor of unsupported dtype {value.dtype}"}
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.is_sparse or t.layout != torch.strided:
            return {"kind": "object", "type": f"torch.Tensor with layout {t.layout}"}
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        blobs.append(data)
        return {"kind": "tensor", "dtype": _NAMES[t.dtype], "shape": list(t.shape),
                "requires_grad": bool(value.requires_grad), "blob": len(blobs) - 1}
    if isinstance(value, torch.Tensor):  # a subclass: never trusted, never sent
        return {"kind": "object", "type": f"{type(value).__name__} (a subclass of torch.Tensor)"}
    if value is None or type(value) is bool:
        return {"kind": "py", "value": value}
    if type(value) is int:
        return {"kind": "py", "value": value} if abs(value) < 2**62 else {"kind": "object", "type": "int (huge)"}
    if type(value) is float:
        if math.isfinite(value):
            return {"kind": "py", "value": value}
        return {"kind": "float", "value": repr(value)}
    if type(value) is str:
        return {"kind": "py", "value": value[:200]}
    if type(value) in (tuple, list) and len(value) <= 64:
        return {"kind": type(value).__name__, "items": [encode_value(v, blobs, depth + 1) for v in value]}
    if type(value) is dict and len(value) <= 64 and all(type(k) is str for k in value):
        return {"kind": "dict", "items": {k[:100]: encode_value(v, blobs, depth + 1) for k, v in value.items()}}
    if type(value) is torch.dtype:
        return {"kind": "dtype", "value": dtype_name(value)}
    try:
        name = type(value).__name__
        module = str(type(value).__module__ or "")
        if module.split(".")[0] in ("numpy", "torch"):   # numpy.int64, not a bare "int64" read as torch's
            name = f"{module.split('.')[0]}.{name}"
    except Exception:  # a hostile metaclass
        name = "object"
    return {"kind": "object", "type": str(name)[:100]}


class Foreign:
    """Stands for a value the child returned that may not cross by value (only its type name).

    ``type(x).__name__`` is deliberately ``Foreign`` and ``describe`` says what it was, so
    :func:`attncourse.testing.compare` and the grader report e.g. "it is a MyTensor (a
    subclass of torch.Tensor)" instead of a tensor the learner's object pretended to be.
    """

    def __init__(self, description: str):
        self.description = description

    def __repr__(self) -> str:
        return f"<{self.description}>"


def decode_value(desc, blobs: list[bytes], depth: int = 0):
    """Inverse of :func:`encode_value`; validates everything (raises :class:`WireError`)."""
    if depth > 5 or not isinstance(desc, dict):
        raise WireError("malformed value description")
    kind = desc.get("kind")
    if kind == "tensor":
        name, shape, idx = desc.get("dtype"), desc.get("shape"), desc.get("blob")
        if name not in DTYPES or not isinstance(shape, list) or not isinstance(idx, int):
            raise WireError("malformed tensor description")
        if not all(type(n) is int and 0 <= n < 2**40 for n in shape) or len(shape) > 16:
            raise WireError("malformed tensor shape")
        if not 0 <= idx < len(blobs):
            raise WireError("tensor refers to a missing blob")
        dtype = DTYPES[name]
        numel = math.prod(shape)
        item = torch.empty((), dtype=dtype).element_size()
        data = blobs[idx]
        if len(data) != numel * item:
            raise WireError(f"tensor bytes ({len(data)}) do not match dtype {name} and shape {tuple(shape)}")
        if numel == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape)
        if desc.get("requires_grad") is True and t.is_floating_point():
            t.requires_grad_(True)
        return t
    if kind == "py":
        v = desc.get("value")
        if v is None or type(v) in (bool, int, float, str):
            return v
        raise WireError("malformed python value")
    if kind == "float":
        v = desc.get("value")
        if v in ("nan", "inf", "-inf"):
            return float(v)
        raise WireError("malformed float")
    if kind in ("tuple", "list"):
        items = desc.get("items")
        if not isinstance(items, list) or len(items) > 64:
            raise WireError("malformed sequence")
        seq = [decode_value(d, blobs, depth + 1) for d in items]
        return tuple(seq) if kind == "tuple" else seq
    if kind == "dict":
        items = desc.get("items")
        if not isinstance(items, dict) or len(items) > 64:
            raise WireError("malformed dict")
        return {str(k): decode_value(d, blobs, depth + 1) for k, d in items.items()}
    if kind == "dtype":
        v = desc.get("value")
        if v in DTYPES:
            return DTYPES[v]
        return Foreign(f"torch dtype {str(v)[:40]}")
    if kind == "object":
        return Foreign(str(desc.get("type", "object"))[:160])
    raise WireError(f"unknown value kind {str(kind)[:40]!r}")


# --------------------------------------------------------------------------- framing
def pack(header: dict, blobs: list[bytes] = ()) -> bytes:
    header = dict(header, blobs=[len(b) for b in blobs])
    head = json.dumps(header, separators=(",", ":")).encode()
    body = struct.pack(">I", len(head)) + head + b"".join(blobs)
    return struct.pack(">Q", len(body)) + body


def unpack(body: bytes) -> tuple[dict, list[bytes]]:
    if len(body) < 4:
        raise WireError("message too short")
    (hlen,) = struct.unpack(">I", body[:4])
    if hlen > MAX_HEADER or 4 + hlen > len(body):
        raise WireError("message header is too long or truncated")
    try:
        header = json.loads(body[4:4 + hlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise WireError("message header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("blobs", []), list):
        raise WireError("message header is not an object")
    sizes = header.get("blobs", [])
    if not all(type(n) is int and n >= 0 for n in sizes) or 4 + hlen + sum(sizes) != len(body):
        raise WireError("message blob sizes do not add up")
    blobs, at = [], 4 + hlen
    for n in sizes:
        blobs.append(body[at:at + n])
        at += n
    return header, blobs


def write_message(fd: int, header: dict, blobs: list[bytes] = ()) -> None:
    """Blocking write of one framed message to a file descriptor."""
    data = memoryview(pack(header, blobs))
    while data:
        n = os.write(fd, data[:1 << 20])
        data = data[n:]


def read_message_blocking(fd: int, max_bytes: int) -> tuple[dict, list[bytes]] | None:
    """Blocking read of one message; ``None`` at end of file (used by the child)."""
    head = _read_exact(fd, 8)
    if head is None:
        return None
    (n,) = struct.unpack(">Q", head)
    if n > max_bytes:
        raise WireError(f"message of {n} bytes exceeds the limit of {max_bytes}")
    body = _read_exact(fd, n)
    if body is None:
        raise WireError("truncated message")
    return unpack(body)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, min(n - got, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)
