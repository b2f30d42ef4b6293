"""What changed between a sealed item and the same path now, localised as far as the seal
allows: the chunk, element range and flipped bits of a tensor or file (:class:`RegionChange`),
a tensor or metadata entry (:class:`TensorChange`), a dataset record (:class:`RecordChange`),
a dataset source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edgeproof.integrity.chunks import ChunkDigest, locate_single_word_change
from edgeproof.integrity.items import DatasetItem, ModelItem, SourceEntry
from edgeproof.integrity.sources import DTYPE_ITEMSIZE, NUMPY_DTYPES

__all__ = [
    "BitFlip",
    "RecordChange",
    "RegionChange",
    "TensorChange",
    "bit_flips",
    "bit_role",
    "compare_tensors",
    "diff_chunks",
    "diff_records",
    "source_notes",
]

_FLOAT_LAYOUT = {"F32": (31, 23), "F64": (63, 52), "F16": (15, 10), "BF16": (15, 7)}


def bit_role(dtype: str, bit: int) -> str:
    """``sign``, ``exponent`` or ``mantissa`` for float dtypes (``""`` otherwise)."""
    if dtype not in _FLOAT_LAYOUT:
        return ""
    sign_bit, mant = _FLOAT_LAYOUT[dtype]
    return "sign" if bit == sign_bit else "exponent" if bit >= mant else "mantissa"


def _decode(dtype: str, raw: bytes) -> float | int | None:
    if dtype == "BF16":
        return float(np.frombuffer(b"\x00\x00" + raw, dtype="<f4")[0])
    np_dtype = NUMPY_DTYPES.get(dtype)
    if np_dtype is None:
        return None
    v = np.frombuffer(raw, dtype=np_dtype)[0]
    return float(v) if v.dtype.kind == "f" else int(v)


@dataclass(frozen=True)
class BitFlip:
    """One changed bit: element index (``None`` in raw files), bit within the element (LSB 0)."""

    byte: int
    element: int | None
    bit: int
    role: str = ""
    old_value: float | int | None = None
    new_value: float | int | None = None


@dataclass(frozen=True)
class RegionChange:
    """A changed chunk of a tensor or raw file, localised as far as the seal allows."""

    path: str
    tensor: str | None
    dtype: str | None
    shape: tuple[int, ...] | None
    chunk: int
    byte_start: int
    byte_stop: int
    flips: tuple[BitFlip, ...] = ()

    @property
    def element_range(self) -> tuple[int, int] | None:
        if self.dtype is None:
            return None
        size = DTYPE_ITEMSIZE[self.dtype]
        return self.byte_start // size, -(-self.byte_stop // size)

    def message(self) -> str:
        where = f"tensor {self.tensor!r} " if self.tensor is not None else ""
        if self.flips:
            parts = []
            for f in self.flips:
                if f.element is None:
                    parts.append(f"byte {f.byte} bit {f.bit} flipped")
                    continue
                idx = list(np.unravel_index(f.element, self.shape)) if self.shape else []
                role = f" ({f.role})" if f.role else ""
                value = f": {f.old_value!r} → {f.new_value!r}" if f.old_value is not None else ""
                parts.append(
                    f"element {f.element} {[int(i) for i in idx]} bit {f.bit}{role} flipped{value}"
                )
            return f"{self.path}: {where}" + "; ".join(parts)
        rng = self.element_range
        span = (
            f"elements {rng[0]}–{rng[1] - 1}"
            if rng is not None
            else f"bytes {self.byte_start}–{self.byte_stop - 1}"
        )
        return f"{self.path}: {where}{span} changed (chunk {self.chunk}, several words differ)"


@dataclass(frozen=True)
class TensorChange:
    """A tensor that vanished, appeared, or changed dtype/shape; or changed model metadata."""

    path: str
    tensor: str
    change: Literal["missing", "added", "dtype", "shape", "metadata"]
    detail: str

    def message(self) -> str:
        return f"{self.path}: {self.detail}"


@dataclass(frozen=True)
class RecordChange:
    """A dataset record whose content or label changed, or that was added or removed."""

    path: str
    record_id: str
    change: Literal["content", "label", "content+label", "missing", "added"]
    old_label: str | None = None
    new_label: str | None = None
    same_as: str | None = None

    def message(self) -> str:
        head = f"{self.path}: record {self.record_id!r}"
        if self.change == "label":
            return (
                f"{head} label changed {self.old_label!r} → {self.new_label!r} (content unchanged)"
            )
        if self.change == "content":
            tail = f" (now identical to sealed record {self.same_as!r})" if self.same_as else ""
            return f"{head} content changed (label {self.old_label!r} unchanged){tail}"
        if self.change == "content+label":
            tail = f" (now identical to sealed record {self.same_as!r})" if self.same_as else ""
            return (
                f"{head} content and label changed ({self.old_label!r} → {self.new_label!r}){tail}"
            )
        if self.change == "missing":
            return f"{head} is missing (it was sealed with label {self.old_label!r})"
        return f"{head} was added (label {self.new_label!r}); it is not in the seal"


def bit_flips(
    changes: Sequence[Any], dtype: str | None, blob: memoryview, start: int
) -> tuple[BitFlip, ...]:
    if dtype is None:
        return tuple(BitFlip(c.byte, None, c.bit) for c in changes)
    size = DTYPE_ITEMSIZE[dtype]
    by_element: dict[int, list[Any]] = {}
    for c in changes:
        by_element.setdefault(c.byte // size, []).append(c)
    out = []
    for element, cs in sorted(by_element.items()):
        new_raw = bytes(blob[element * size : (element + 1) * size])
        old = bytearray(new_raw)
        for c in cs:
            old[c.byte - element * size] ^= 1 << c.bit
        old_v, new_v = _decode(dtype, bytes(old)), _decode(dtype, new_raw)
        for c in cs:
            bit = (c.byte - element * size) * 8 + c.bit
            out.append(BitFlip(c.byte, element, bit, bit_role(dtype, bit), old_v, new_v))
    return tuple(out)


def diff_chunks(
    path: str,
    tensor: str | None,
    dtype: str | None,
    shape: tuple[int, ...] | None,
    sealed: Sequence[ChunkDigest],
    current: Sequence[ChunkDigest],
    blob: memoryview,
    chunk_size: int,
) -> list[RegionChange]:
    out = []
    for i, (a, b) in enumerate(zip(sealed, current)):
        if a.sha256 == b.sha256:
            continue
        start, stop = i * chunk_size, min(len(blob), (i + 1) * chunk_size)
        located = locate_single_word_change(blob[start:stop], a, start)
        flips = bit_flips(located, dtype, blob, start) if located else ()
        out.append(RegionChange(path, tensor, dtype, shape, i, start, stop, flips))
    return out


def compare_tensors(
    path: str,
    sealed: ModelItem,
    current: ModelItem,
    blobs: Mapping[str, memoryview],
    chunk_size: int,
) -> tuple[list[RegionChange], list[TensorChange]]:
    """Localise the differences between a sealed and a current model item."""
    regions: list[RegionChange] = []
    tchanges: list[TensorChange] = []
    old_meta, new_meta = dict(sealed.metadata), dict(current.metadata)
    for k in sorted(set(old_meta) | set(new_meta)):
        if old_meta.get(k) != new_meta.get(k):
            tchanges.append(TensorChange(path, k, "metadata", f"model metadata {k!r} changed"))
    old = {t.name: t for t in sealed.tensors}
    new = {t.name: t for t in current.tensors}
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if b is None:
            tchanges.append(TensorChange(path, name, "missing", f"tensor {name!r} is missing"))
        elif a is None:
            tchanges.append(
                TensorChange(
                    path, name, "added", f"tensor {name!r} was added; it is not in the seal"
                )
            )
        elif a.dtype != b.dtype:
            tchanges.append(
                TensorChange(
                    path, name, "dtype", f"tensor {name!r} dtype changed {a.dtype} → {b.dtype}"
                )
            )
        elif a.shape != b.shape:
            tchanges.append(
                TensorChange(
                    path,
                    name,
                    "shape",
                    f"tensor {name!r} shape changed {list(a.shape)} → {list(b.shape)}",
                )
            )
        elif a.chunks != b.chunks:
            regions += diff_chunks(
                path, name, a.dtype, a.shape, a.chunks, b.chunks, blobs[name], chunk_size
            )
    return regions, tchanges


def source_notes(sealed: Sequence[SourceEntry], current: Sequence[SourceEntry]) -> list[str]:
    old = {s.name: s for s in sealed}
    new = {s.name: s for s in current}
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if b is None:
            out.append(f"source {name!r} is missing")
        elif a is None:
            out.append(f"source {name!r} was added; it is not in the seal")
        elif a != b:
            size = f" (size {a.nbytes} → {b.nbytes} bytes)" if a.nbytes != b.nbytes else ""
            out.append(f"source {name!r} changed{size}")
    return out


def diff_records(old: DatasetItem, new: DatasetItem) -> list[RecordChange]:
    out: list[RecordChange] = []
    new_at = {rid: i for i, rid in enumerate(new.ids)}
    old_ids = set(old.ids)
    sealed_by_value = {
        (old.content_sha256[i], old.classes[old.labels[i]]): rid for i, rid in enumerate(old.ids)
    }
    for i, rid in enumerate(old.ids):
        old_label = old.classes[old.labels[i]]
        j = new_at.get(rid)
        if j is None:
            out.append(RecordChange(old.path, rid, "missing", old_label))
            continue
        new_label = new.classes[new.labels[j]]
        content_changed = new.content_sha256[j] != old.content_sha256[i]
        label_changed = new_label != old_label
        if not (content_changed or label_changed):
            continue
        same = sealed_by_value.get((new.content_sha256[j], new_label))
        change: Literal["content", "label", "content+label"] = (
            "content+label"
            if content_changed and label_changed
            else "content"
            if content_changed
            else "label"
        )
        out.append(
            RecordChange(
                old.path,
                rid,
                change,
                old_label,
                new_label,
                same if content_changed and same != rid else None,
            )
        )
    for j, rid in enumerate(new.ids):
        if rid not in old_ids:
            out.append(RecordChange(old.path, rid, "added", None, new.classes[new.labels[j]]))
    return out
