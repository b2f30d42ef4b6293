"""Reading what gets sealed: tensors of model files and in-memory models, raw file bytes.

No pickle is ever loaded. Safetensors files are opened with ``safetensors.safe_open`` (which
validates the header) and their tensor bytes are then read straight from a memory map at the
offsets the header gives (the safetensors format: 8-byte little-endian header length, JSON header
with ``dtype``, ``shape``, ``data_offsets``), so every dtype — BF16 and FP8 included — is sealed as
its stored little-endian bytes without conversion. ONNX initializers are read with
``onnx.numpy_helper``; the rest of the ONNX graph (nodes, attributes, metadata) is committed as one
metadata value so a rewired graph is caught too. In-memory weights (``LoadedModel.weights``,
``state_dict()``) map to the same dtype names and bytes, so a module can be checked against the
seal of the file it was loaded from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import mmap
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeproof.errors import ModelFileError, param
from edgeproof.extras import needs_extra

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPE_ITEMSIZE",
    "NUMPY_DTYPES",
    "TensorBlob",
    "TensorSet",
    "file_sha256",
    "read_onnx",
    "read_safetensors",
    "tensors_of_weights",
    "torch_dtype_name",
]

DTYPE_ITEMSIZE: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
    "I4": 1, "U4": 1,
}  # fmt: skip
"""Bytes per element for the safetensors dtype names used in seals (ONNX int4/uint4 sealed
as one value per byte: ``I4``/``U4``)."""

NUMPY_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
    "I4": "i1", "U4": "u1",
}  # fmt: skip
"""numpy dtypes for decoding element values (BF16/FP8 are decoded separately or not at all)."""

_NUMPY_NAMES: dict[str, str] = {
    np.dtype(v).str: k for k, v in NUMPY_DTYPES.items() if k not in ("I4", "U4")
}
_FOUR_BIT: dict[str, str] = {"int4": "I4", "uint4": "U4"}


@dataclass(frozen=True)
class TensorBlob:
    """One tensor as sealed: name, safetensors dtype name, shape and raw little-endian bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: memoryview


@dataclass(frozen=True)
class TensorSet:
    """The tensors of a model (sorted by name) and its non-tensor parts (``key → bytes``)."""

    format: str
    tensors: tuple[TensorBlob, ...]
    metadata: Mapping[str, bytes]
    done: Callable[[TensorBlob], None] = field(default=lambda blob: None, compare=False)
    """Called once a tensor's bytes are hashed: a memory-mapped file drops the tensor's pages
    from the resident set (``MADV_DONTNEED``; they stay in the page cache and are read again
    if the tensor is looked at later), so peak RSS is not the size of the model."""


@functools.cache
def _torch_names() -> dict[torch.dtype, str]:
    """torch dtype → safetensors name (torch imported here: sealing files does not need it)."""
    import torch

    names: dict[torch.dtype, str] = {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
        torch.uint8: "U8", torch.bool: "BOOL",
    }  # fmt: skip
    for name, sfname in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):
        if hasattr(torch, name):
            names[getattr(torch, name)] = sfname
    return names


def torch_dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``torch.float32`` → ``F32``)."""
    try:
        return _torch_names()[dtype]
    except KeyError:
        raise ModelFileError(
            "<in-memory model>",
            f"tensors of dtype {dtype} cannot be sealed",
            "convert them to a standard float or integer dtype",
        ) from None


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    import torch

    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    arr = flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, np.uint8)
    return arr.data.cast("B")


def tensors_of_weights(weights: Mapping[str, torch.Tensor], fmt: str = "weights") -> TensorSet:
    """The tensor set of in-memory weights (``LoadedModel.weights`` or a ``state_dict``)."""
    blobs = tuple(
        TensorBlob(
            name, torch_dtype_name(t.dtype), tuple(int(s) for s in t.shape), _tensor_bytes(t)
        )
        for name, t in sorted(weights.items())
    )
    return TensorSet(fmt, blobs, {})


@contextmanager
def _mapped(path: Path) -> Iterator[memoryview]:
    with path.open("rb") as fh:
        size = path.stat().st_size
        if size == 0:
            yield memoryview(b"")
            return
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        mv = memoryview(mm)
        try:
            yield mv
        finally:
            mv.release()
            mm.close()


def _page_dropper(mv: memoryview) -> Callable[[TensorBlob], None]:
    """``done`` for tensors that are views of ``mv`` (a memory map): ``MADV_DONTNEED`` on the
    whole pages inside the tensor (a no-op where ``madvise`` is unavailable)."""
    mm = mv.obj
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if not isinstance(mm, mmap.mmap) or advice is None:
        return lambda blob: None
    base = np.frombuffer(mv, np.uint8).ctypes.data if len(mv) else 0
    page = mmap.PAGESIZE

    def done(blob: TensorBlob) -> None:
        if not len(blob.data):
            return
        start = np.frombuffer(blob.data, np.uint8).ctypes.data - base
        a, b = -(-start // page) * page, (start + len(blob.data)) // page * page
        if b > a:
            with suppress(OSError, ValueError):
                mm.madvise(advice, a, b - a)

    return done


@contextmanager
def read_safetensors(path: str | Path) -> Iterator[TensorSet]:
    """The tensors of a ``.safetensors`` file, as views into a read-only memory map.

    Raises:
        ModelFileError: the file is not a valid safetensors file.
    """
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="numpy") as fh:  # header only: no torch import
            keys = set(fh.keys())
    except Exception as exc:  # safetensors raises its own error types and OSError
        raise ModelFileError(
            p,
            f"is not a readable safetensors file ({exc})",
            "re-export the model with safetensors.torch.save_file",
        ) from None
    with _mapped(p) as mv:
        done = _page_dropper(mv)
        (hlen,) = struct.unpack("<Q", mv[:8])
        header = json.loads(bytes(mv[8 : 8 + hlen]))
        base = 8 + hlen
        meta = header.pop("__metadata__", None)
        blobs = []
        for name in sorted(keys):
            h = header[name]
            if str(h.get("dtype")) not in DTYPE_ITEMSIZE:
                raise ModelFileError(
                    p,
                    f"tensor {name!r} has dtype {h.get('dtype')}, which a model seal does not "
                    "cover",
                    f"seal the file as raw bytes ({param('raw', switch=True)})",
                )
            a, b = h["data_offsets"]
            blobs.append(
                TensorBlob(
                    name,
                    str(h["dtype"]),
                    tuple(int(s) for s in h["shape"]),
                    mv[base + a : base + b],
                )
            )
        metadata = (
            {}
            if meta is None
            else {"__metadata__": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()}
        )
        try:
            yield TensorSet("safetensors", tuple(blobs), metadata, done)
        finally:
            for blob in blobs:
                blob.data.release()


def read_onnx(path: str | Path) -> TensorSet:
    """The initializers of an ONNX model plus its graph without weights (key ``onnx-graph``)."""
    with needs_extra("onnx", "to read the weights of an ONNX model"):
        import onnx
        from onnx import numpy_helper

    p = Path(path)
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf DecodeError, OSError, ValidationError
        raise ModelFileError(
            p, f"is not a readable ONNX model ({exc})", "re-export it with torch.onnx.export"
        ) from None
    blobs = []
    for init in model.graph.initializer:
        arr = np.ascontiguousarray(numpy_helper.to_array(init))
        if arr.dtype.name in _FOUR_BIT:
            # int4/uint4 (ml_dtypes, one value per byte): sealed as their values, one byte each
            # (the int8/uint8 widening; the graph records the 4-bit type)
            name: str | None = _FOUR_BIT[arr.dtype.name]
            le = arr.astype(np.int8 if "u" not in arr.dtype.name else np.uint8)
        else:
            le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
            name = _NUMPY_NAMES.get(le.dtype.str)
        if name is None:
            raise ModelFileError(
                p,
                f"initializer {init.name!r} has dtype {arr.dtype}, which cannot be sealed",
                f"seal the file as raw bytes ({param('raw', switch=True)})",
            )
        data = le.reshape(-1).view(np.uint8).data.cast("B")
        blobs.append(TensorBlob(init.name, name, tuple(int(s) for s in arr.shape), data))
    del model.graph.initializer[:]
    graph = model.SerializeToString(deterministic=True)
    return TensorSet("onnx", tuple(sorted(blobs, key=lambda b: b.name)), {"onnx-graph": graph})


def file_sha256(path: str | Path) -> bytes:
    """SHA-256 of a file's bytes, read through a memory map in 16 MiB ranges, each dropped from
    the resident set once hashed (``MADV_DONTNEED``), so peak RSS stays small."""
    sha = hashlib.sha256()
    with _mapped(Path(path)) as mv:
        mm = mv.obj
        advice = getattr(mmap, "MADV_DONTNEED", None)
        step = 16 << 20
        for a in range(0, len(mv), step):
            sha.update(mv[a : a + step])
            if isinstance(mm, mmap.mmap) and advice is not None and a + step < len(mv):
                with suppress(OSError, ValueError):
                    mm.madvise(advice, a, step)
    return sha.digest()


@contextmanager
def read_file(path: str | Path) -> Iterator[memoryview]:
    """A file's bytes as a read-only memory map."""
    with _mapped(Path(path)) as mv:
        yield mv
