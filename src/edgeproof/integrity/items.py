"""What a seal holds per sealed path: model, dataset and file items, their leaves and roots.

Each item keeps the per-leaf digests that produce its root (leaf encodings in
:mod:`edgeproof.integrity.records`); :class:`ItemHeader` is what the top-level tree and the
signature commit to for one item, and :func:`seal_message` the bytes the signature covers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeproof.integrity.chunks import ChunkDigest
from edgeproof.integrity.merkle import leaf_hash, merkle_root
from edgeproof.integrity.records import (
    dataset_header_leaf,
    file_chunk_leaf,
    file_header_leaf,
    item_leaf,
    metadata_leaf,
    record_leaf,
    record_leaf_hashes,
    source_leaf,
    tensor_chunk_leaf,
)
from edgeproof.serialize import JsonFields

__all__ = [
    "LOADER_OPTIONS",
    "DatasetItem",
    "FileItem",
    "ItemHeader",
    "ModelItem",
    "SealItem",
    "SourceEntry",
    "TensorEntry",
    "item_root",
    "seal_message",
]

LOADER_OPTIONS = ("x_key", "y_key", "label_column", "kind")
"""The ``load_data`` options a seal records (and commits) for each dataset."""


@dataclass(frozen=True)
class TensorEntry:
    """One sealed tensor: name, dtype, shape, byte size and chunk digests."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    chunks: tuple[ChunkDigest, ...]

    def leaves(self) -> list[bytes]:
        return [
            tensor_chunk_leaf(self.name, self.dtype, self.shape, i, c.sha256)
            for i, c in enumerate(self.chunks)
        ]


@dataclass(frozen=True)
class ModelItem:
    """A sealed model: metadata digests, then tensors sorted by name."""

    path: str
    format: str
    tensors: tuple[TensorEntry, ...]
    metadata: tuple[tuple[str, bytes], ...] = ()
    kind: Literal["model"] = "model"

    def leaves(self) -> list[bytes]:
        out = [metadata_leaf(k, h) for k, h in self.metadata]
        for t in self.tensors:
            out.extend(t.leaves())
        return out

    def leaf_count(self) -> int:
        return len(self.metadata) + sum(len(t.chunks) for t in self.tensors)

    def tensor(self, name: str) -> TensorEntry | None:
        return next((t for t in self.tensors if t.name == name), None)


@dataclass(frozen=True)
class SourceEntry:
    """A file or archive member a dataset is read from: name, size and SHA-256 of its bytes."""

    name: str
    nbytes: int
    sha256: bytes

    def leaf(self) -> bytes:
        return source_leaf(self.name, self.nbytes, self.sha256)


@dataclass(frozen=True)
class DatasetItem:
    """A sealed dataset: a header leaf, one leaf per source, then one per record in order."""

    path: str
    format: str
    content: Literal["array-float32", "file-bytes"]
    sample_shape: tuple[int, ...]
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    content_sha256: tuple[bytes, ...]
    labels: tuple[int, ...]
    loader: Mapping[str, str] = field(default_factory=dict)
    input_kind: str = "image"
    domain: tuple[float, float] | None = None
    sources: tuple[SourceEntry, ...] = ()
    kind: Literal["dataset"] = "dataset"

    def header_leaf(self) -> bytes:
        return dataset_header_leaf(
            self.format,
            self.content,
            self.sample_shape,
            self.classes,
            self.input_kind,
            self.domain,
            tuple(self.loader.items()),
        )

    def record_leaf(self, i: int) -> bytes:
        return record_leaf(self.ids[i], self.content_sha256[i], self.classes[self.labels[i]])

    @property
    def first_record_leaf(self) -> int:
        """Index of record 0's leaf (after the header and the sources)."""
        return 1 + len(self.sources)

    def leaves(self) -> list[bytes]:
        return [
            self.header_leaf(),
            *(src.leaf() for src in self.sources),
            *(self.record_leaf(i) for i in range(len(self.ids))),
        ]

    def leaf_hashes(self) -> list[bytes]:
        """``[leaf_hash(x) for x in self.leaves()]``, the records in one tight loop."""
        head = [leaf_hash(self.header_leaf()), *(leaf_hash(src.leaf()) for src in self.sources)]
        return head + record_leaf_hashes(self.ids, self.content_sha256, self.labels, self.classes)

    def leaf_count(self) -> int:
        return 1 + len(self.sources) + len(self.ids)


@dataclass(frozen=True)
class FileItem:
    """A sealed raw file: chunk digests of its bytes."""

    path: str
    nbytes: int
    chunks: tuple[ChunkDigest, ...]
    format: str = "raw"
    kind: Literal["file"] = "file"

    def leaves(self) -> list[bytes]:
        return [
            file_header_leaf(self.nbytes),
            *(file_chunk_leaf(i, c.sha256) for i, c in enumerate(self.chunks)),
        ]

    def leaf_count(self) -> int:
        return 1 + len(self.chunks)


SealItem = ModelItem | DatasetItem | FileItem


def item_root(item: SealItem) -> bytes:
    """The item's root: the RFC 6962 Merkle tree hash of its leaves."""
    if isinstance(item, DatasetItem):
        return merkle_root(item.leaf_hashes())
    return merkle_root([leaf_hash(x) for x in item.leaves()])


@dataclass(frozen=True)
class ItemHeader(JsonFields):
    """What the top-level tree and the signature commit to for one item (its JSON: the fields in
    order, ``root`` in hex)."""

    kind: str
    path: str
    format: str
    root: bytes
    leaves: int

    def leaf(self) -> bytes:
        return item_leaf(self.kind, self.path, self.format, self.root, self.leaves)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ItemHeader:
        return cls(
            obj["kind"], obj["path"], obj["format"], bytes.fromhex(obj["root"]), int(obj["leaves"])
        )


def seal_message(root: bytes, headers: Sequence[ItemHeader]) -> bytes:
    """The canonical bytes a seal signature covers: the top root and every item root (hex)."""
    lines = ["edgeproof-seal/1", f"root {root.hex()}"]
    lines += [
        f"item {h.kind} {h.format} {h.root.hex()} {h.leaves} {json.dumps(h.path)}" for h in headers
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
