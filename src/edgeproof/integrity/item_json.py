"""Seal items to and from their JSON objects in a seal file (``seal.schema.json``'s ``items``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeproof.integrity.chunks import ChunkDigest
from edgeproof.integrity.items import (
    LOADER_OPTIONS,
    DatasetItem,
    FileItem,
    ModelItem,
    SealItem,
    SourceEntry,
    TensorEntry,
)

__all__ = ["item_from_json", "item_to_json"]


def _digests_json(chunks: Sequence[ChunkDigest]) -> list[list[Any]]:
    return [[c.sha256.hex(), c.s1, c.s2] for c in chunks]


def _digests_from(rows: Sequence[Sequence[Any]]) -> tuple[ChunkDigest, ...]:
    return tuple(ChunkDigest(bytes.fromhex(r[0]), int(r[1]), int(r[2])) for r in rows)


def item_to_json(item: SealItem, root: bytes) -> dict[str, Any]:
    head = {
        "kind": item.kind,
        "path": item.path,
        "format": item.format,
        "root": root.hex(),
        "leaves": item.leaf_count(),
    }
    if isinstance(item, ModelItem):
        head["metadata"] = [{"key": k, "sha256": h.hex()} for k, h in item.metadata]
        head["tensors"] = [
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "bytes": t.nbytes,
                "chunks": _digests_json(t.chunks),
            }
            for t in item.tensors
        ]
    elif isinstance(item, DatasetItem):
        head.update(
            content=item.content,
            sample_shape=list(item.sample_shape),
            classes=list(item.classes),
            loader=dict(item.loader),
            input_kind=item.input_kind,
            domain=None if item.domain is None else list(item.domain),
            sources=[
                {"name": src.name, "bytes": src.nbytes, "sha256": src.sha256.hex()}
                for src in item.sources
            ],
            records={
                "ids": list(item.ids),
                "content_sha256": [h.hex() for h in item.content_sha256],
                "labels": list(item.labels),
            },
        )
    else:
        head.update(bytes=item.nbytes, chunks=_digests_json(item.chunks))
    return head


def _loader_from(obj: Any) -> dict[str, str]:
    if not isinstance(obj, Mapping):
        raise TypeError("loader must be an object")
    unknown = [k for k in obj if k not in LOADER_OPTIONS]
    if unknown:
        raise ValueError(
            f"unknown loader option {unknown[0]!r} (known: {', '.join(LOADER_OPTIONS)})"
        )
    return {str(k): str(v) for k, v in obj.items()}


def item_from_json(obj: Mapping[str, Any]) -> SealItem:
    kind = obj["kind"]
    if kind == "model":
        return ModelItem(
            obj["path"],
            obj["format"],
            tuple(
                TensorEntry(
                    t["name"],
                    t["dtype"],
                    tuple(t["shape"]),
                    int(t["bytes"]),
                    _digests_from(t["chunks"]),
                )
                for t in obj["tensors"]
            ),
            tuple((m["key"], bytes.fromhex(m["sha256"])) for m in obj.get("metadata", [])),
        )
    if kind == "dataset":
        rec = obj["records"]
        return DatasetItem(
            obj["path"],
            obj["format"],
            obj["content"],
            tuple(obj["sample_shape"]),
            tuple(obj["classes"]),
            tuple(rec["ids"]),
            tuple(bytes.fromhex(h) for h in rec["content_sha256"]),
            tuple(int(v) for v in rec["labels"]),
            _loader_from(obj.get("loader", {})),
            str(obj["input_kind"]),
            None if obj["domain"] is None else (float(obj["domain"][0]), float(obj["domain"][1])),
            tuple(
                SourceEntry(str(src["name"]), int(src["bytes"]), bytes.fromhex(src["sha256"]))
                for src in obj["sources"]
            ),
        )
    return FileItem(obj["path"], int(obj["bytes"]), _digests_from(obj["chunks"]))
