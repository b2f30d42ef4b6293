"""Canonical leaf encodings: the exact bytes each Merkle leaf commits to.

Every leaf is a tag naming what it is, then its fields, each as a 4-byte big-endian length and the
field's bytes (strings UTF-8, integers in decimal ASCII, shapes as comma-joined decimals, digests
raw). Length prefixes make the encoding injective: no two different field lists give the same bytes,
so no record can be passed off as a tensor chunk or an id as part of a label.

Leaves:

* dataset header — format, how record content is read, sample shape, class names, the kind of
  input, the value domain and the loader options (everything that decides what an audit reads);
* dataset source — one file (or archive member) the dataset is read from: name, size, SHA-256
  of its bytes (every member of an ``.npz``, each IDX/CIFAR/CSV file, the class-name list);
* dataset record — record id, SHA-256 of the record's content, label (the class *name*, so a
  relabel and a permuted class list both change the leaf);
* tensor chunk — tensor name, dtype (safetensors names: ``F32``, ``BF16``, ``I8`` …), shape,
  chunk index, SHA-256 of the chunk's raw little-endian bytes;
* metadata — a key and a value (safetensors ``__metadata__``, the ONNX graph without weights);
* file header — a raw file's size in bytes;
* file chunk — chunk index and SHA-256 of a raw file's bytes;
* item — one sealed path: kind, path, format, its root and leaf count (the seal's top tree).
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from collections.abc import Sequence

__all__ = [
    "Field",
    "dataset_header_leaf",
    "encode_leaf",
    "file_chunk_leaf",
    "file_header_leaf",
    "item_leaf",
    "metadata_leaf",
    "record_leaf",
    "record_leaf_hashes",
    "source_leaf",
    "tensor_chunk_leaf",
]

Field = bytes | str | int | Sequence[int]


def _field_bytes(value: Field) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        raise TypeError("booleans are not a leaf field type; use an int")
    if isinstance(value, int):
        return str(value).encode("ascii")
    return ",".join(str(int(v)) for v in value).encode("ascii")


@functools.lru_cache(maxsize=64)
def _tag(tag: str) -> bytes:
    raw = tag.encode("ascii")
    return struct.pack(">I", len(raw)) + raw


def encode_leaf(tag: str, *fields: Field) -> bytes:
    """``len(tag) ‖ tag ‖ len(f1) ‖ f1 ‖ …`` with 4-byte big-endian lengths."""
    out = [_tag(tag)]
    for f in fields:
        raw = _field_bytes(f)
        out.append(len(raw).to_bytes(4, "big"))
        out.append(raw)
    return b"".join(out)


def dataset_header_leaf(
    fmt: str,
    content: str,
    sample_shape: Sequence[int],
    classes: Sequence[str],
    input_kind: str,
    domain: tuple[float, float] | None,
    loader: Sequence[tuple[str, str]],
) -> bytes:
    """The first leaf of a dataset: what a record is, what its labels and values mean, and the
    loader options that select them. Class names and loader options (sorted by key) are JSON
    arrays, so no list of names can pass for another; the domain is ``repr`` of each float
    (exact round trip) or ``none``."""
    dom = "none" if domain is None else f"{float(domain[0])!r},{float(domain[1])!r}"
    return encode_leaf(
        "edgeproof/dataset/2",
        fmt,
        content,
        sample_shape,
        json.dumps(list(classes), ensure_ascii=False),
        input_kind,
        dom,
        json.dumps(sorted([k, v] for k, v in loader), ensure_ascii=False),
    )


def source_leaf(name: str, nbytes: int, sha256: bytes) -> bytes:
    """One file or archive member a dataset is read from."""
    return encode_leaf("edgeproof/source/1", name, nbytes, sha256)


_RECORD_TAG = _tag("edgeproof/record/1")
_SHA_LEN = (32).to_bytes(4, "big")


def record_leaf(record_id: str, content_sha256: bytes, label: str) -> bytes:
    """One dataset record: id, SHA-256 of its content, label (class name).

    The bytes of ``encode_leaf("edgeproof/record/1", record_id, content_sha256, label)``,
    written out directly: it runs once per record (50,000 times for a 50k-record set)."""
    if len(content_sha256) != 32:
        return encode_leaf("edgeproof/record/1", record_id, content_sha256, label)
    rid, lab = record_id.encode("utf-8"), label.encode("utf-8")
    return b"".join(
        (
            _RECORD_TAG,
            len(rid).to_bytes(4, "big"),
            rid,
            _SHA_LEN,
            content_sha256,
            len(lab).to_bytes(4, "big"),
            lab,
        )
    )


def record_leaf_hashes(
    ids: Sequence[str],
    content_sha256: Sequence[bytes],
    labels: Sequence[int],
    classes: Sequence[str],
) -> list[bytes]:
    """``[leaf_hash(record_leaf(ids[i], content_sha256[i], classes[labels[i]])) ...]``: the
    Merkle leaf hashes (``SHA-256(0x00 ‖ leaf)``, RFC 6962) of every record, in one
    comprehension, each class name encoded once (50,000 records: ~45 ms instead of ~250 ms)."""
    if not len(ids) == len(content_sha256) == len(labels):
        raise ValueError("ids, content digests and labels differ in length")
    sha = hashlib.sha256
    if any(len(d) != 32 for d in content_sha256):
        return [
            sha(b"\x00" + record_leaf(r, d, classes[lab])).digest()
            for r, d, lab in zip(ids, content_sha256, labels)
        ]
    prefix = b"\x00" + _RECORD_TAG
    label_fields = [_length_prefixed(c.encode("utf-8")) for c in classes]
    short = [n.to_bytes(4, "big") for n in range(256)]
    join = b"".join
    return [
        sha(
            join(
                (
                    prefix,
                    short[len(r)] if len(r) < 256 else len(r).to_bytes(4, "big"),
                    r,
                    _SHA_LEN,
                    d,
                    label_fields[lab],
                )
            )
        ).digest()
        for r, d, lab in zip((rid.encode("utf-8") for rid in ids), content_sha256, labels)
    ]


def _length_prefixed(raw: bytes) -> bytes:
    return len(raw).to_bytes(4, "big") + raw


def tensor_chunk_leaf(
    name: str, dtype: str, shape: Sequence[int], chunk: int, chunk_sha256: bytes
) -> bytes:
    """One fixed-size chunk of a tensor's raw bytes."""
    return encode_leaf("edgeproof/tensor/1", name, dtype, shape, chunk, chunk_sha256)


def metadata_leaf(key: str, value_sha256: bytes) -> bytes:
    """A named piece of a model file that is not a tensor (hash of its canonical bytes)."""
    return encode_leaf("edgeproof/metadata/1", key, value_sha256)


def file_header_leaf(nbytes: int) -> bytes:
    """The first leaf of a raw file: its size (so truncation and growth change the root)."""
    return encode_leaf("edgeproof/file-header/1", nbytes)


def file_chunk_leaf(chunk: int, chunk_sha256: bytes) -> bytes:
    """One fixed-size chunk of a raw file."""
    return encode_leaf("edgeproof/file/1", chunk, chunk_sha256)


def item_leaf(kind: str, path: str, fmt: str, root: bytes, leaves: int) -> bytes:
    """One sealed path in the seal's top-level tree."""
    return encode_leaf("edgeproof/item/1", kind, path, fmt, root, leaves)
