"""Model items: the tensors of a ``.safetensors``/``.onnx`` file (or of in-memory weights) as
chunk digests, with the model's metadata and its sidecar ``<stem>.json`` as metadata digests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeproof import limits
from edgeproof.integrity.chunks import chunk_sha256s, digest_blob
from edgeproof.integrity.items import ModelItem, TensorEntry
from edgeproof.integrity.seal_errors import SealedPathError
from edgeproof.integrity.sources import TensorSet, read_onnx, read_safetensors

__all__ = ["model_item", "model_unchanged", "open_model", "sidecar_meta"]


def _tensor_entries(ts: TensorSet, chunk_size: int, pool: Any) -> tuple[TensorEntry, ...]:
    out = []
    for b in ts.tensors:
        chunks = tuple(digest_blob(b.data, chunk_size, pool))
        ts.done(b)
        out.append(TensorEntry(b.name, b.dtype, b.shape, len(b.data), chunks))
    return tuple(out)


def model_item(
    path: str, ts: TensorSet, chunk_size: int, pool: Any, extra: Sequence[tuple[str, bytes]] = ()
) -> ModelItem:
    meta = [(k, hashlib.sha256(v).digest()) for k, v in sorted(ts.metadata.items())]
    meta += [(k, hashlib.sha256(v).digest()) for k, v in extra]
    return ModelItem(path, ts.format, _tensor_entries(ts, chunk_size, pool), tuple(sorted(meta)))


def model_unchanged(
    item: ModelItem, ts: TensorSet, chunk_size: int, pool: Any, extra: Sequence[tuple[str, bytes]]
) -> bool:
    """Whether ``ts`` (+ sidecar ``extra``) still has every leaf of the sealed ``item``: the same
    metadata digests, tensor names, dtypes, shapes, sizes and chunk SHA-256s. Only the chunks'
    SHA-256 are computed (no syndromes: they locate a change, and there is none), and the
    comparison stops at the first difference."""
    meta = [(k, hashlib.sha256(v).digest()) for k, v in sorted(ts.metadata.items())]
    meta += [(k, hashlib.sha256(v).digest()) for k, v in extra]
    if tuple(sorted(meta)) != item.metadata or ts.format != item.format:
        return False
    if [b.name for b in ts.tensors] != [t.name for t in item.tensors]:
        return False
    for b, t in zip(ts.tensors, item.tensors, strict=True):
        if (b.dtype, tuple(b.shape), len(b.data)) != (t.dtype, tuple(t.shape), t.nbytes):
            return False
        same = chunk_sha256s(b.data, chunk_size, pool) == [c.sha256 for c in t.chunks]
        ts.done(b)
        if not same:
            return False
    return True


def sidecar_meta(model: Path) -> list[tuple[str, bytes]]:
    """The model's sidecar ``<stem>.json`` as a metadata value (``[]`` if there is none)."""
    side = model.with_suffix(".json")
    if not side.is_file():
        return []
    try:
        return [(f"sidecar {side.name}", _bounded_bytes(side, "max_document_bytes"))]
    except OSError as exc:
        raise SealedPathError(side, f"cannot be read ({exc.strerror or exc})") from None


def _bounded_bytes(path: Path, limit: str) -> bytes:
    limits.check(SealedPathError, path, limit, "the file", path.stat().st_size)
    return path.read_bytes()


@contextmanager
def open_model(path: Path, fmt: str) -> Iterator[TensorSet]:
    if fmt == "safetensors":
        with read_safetensors(path) as ts:
            yield ts
    else:
        yield read_onnx(path)
