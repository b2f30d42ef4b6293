"""Seals: RFC 6962 Merkle commitments to model tensors, dataset records and raw files.

A seal (``*.seal.json``, schema ``seal.schema.json`` in this package) holds one *item* per sealed
path and a top-level root over the items. Each item keeps its own root *and* the per-leaf digests
that produced it, because a seal that stored only a root could say *that* something changed but
not *what*:

* **model** (``.safetensors``, ``.onnx``): per tensor — name, dtype, shape — the SHA-256 and the
  word-sum syndrome of each fixed-size chunk (default 64 KiB): about 50 bytes of JSON per 64 KiB,
  i.e. ~80 KB for a 100 MB model. Verify names the tensor and element range of every changed chunk,
  and for a chunk where one 32-bit word changed, the element, the bit (31 = sign for float32) and
  the value before and after (:mod:`edgeproof.integrity.chunks`).
  The model's sidecar metadata (``<stem>.json``, which names its architecture, input domain and
  classes) is committed as one metadata digest when it exists, so adding, removing or editing it
  is a change.
* **dataset** (every format :func:`edgeproof.data.loading.load_data` reads): a header (format,
  sample shape, class names, input kind, value domain, loader options), one *source* per file or
  archive member the data is read from (name, size, SHA-256: every member of an ``.npz`` —
  ``domain``, ``classes`` and any unused array included —, each IDX/CIFAR/CSV file, CIFAR's class
  list), then per record — id, SHA-256 of its content, label — ~110 bytes of JSON per record,
  ~5.5 MB for 50k records. Content is the record's raw file bytes for image folders (any byte of
  the file counts, decoding cannot hide a change) and the record's float32 array bytes as loaded
  (C order, little-endian) for the array formats, whose files pack many records together. Verify
  says, per record id, whether the content, the label, or both changed, which records were added
  or removed, and which sources changed.
* **file** (anything else, or ``raw=True``): the file's size and chunk digests of its bytes; verify
  names the byte range (and the bit, for a single-word change).

Paths are stored relative to the seal's folder; ``seal_paths`` refuses a path outside it and
``verify_seal`` refuses an absolute path, a ``..`` escape or a symlink out of it, unless
``allow_outside=True``. A sealed path that vanished or can no longer be read is a verification
*failure* (``VerifyResult.ok`` is false), as is a signature by another key than the one pinned,
or a missing signature when a key is pinned.

Leaf encodings are in :mod:`edgeproof.integrity.records`. The top root is the MTH of one leaf per
item; an optional Ed25519 signature covers :meth:`Seal.message` (top root and every item's root).
Reading a seal checks its size and nesting (:mod:`edgeproof.limits`), the schema, and that every
stored digest list reproduces its item root, so a hand-edited seal is rejected before any
comparison.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgeproof import limits
from edgeproof._version import __version__
from edgeproof.atomic import atomic_write_text
from edgeproof.errors import InputFileError, ModelFileError, OptionError, UserError, param
from edgeproof.integrity.chunks import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    ChunkDigest,
    digest_blob,
    hashing_pool,
    locate_single_word_change,
)
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
from edgeproof.integrity.sources import (
    DTYPE_ITEMSIZE,
    NUMPY_DTYPES,
    TensorSet,
    read_file,
    read_onnx,
    read_safetensors,
    tensors_of_weights,
)
from edgeproof.options import positive_int, threads_or_default
from edgeproof.structured import check_depth, parse_json, read_text

if TYPE_CHECKING:
    import torch

    from edgeproof.integrity.signing import Signature

__all__ = [
    "LOADER_OPTIONS",
    "SCHEMA_VERSION",
    "BitFlip",
    "DatasetItem",
    "FileItem",
    "ItemHeader",
    "ItemVerification",
    "ModelItem",
    "RecordChange",
    "RegionChange",
    "Seal",
    "SealFileError",
    "SealItem",
    "SealedPathError",
    "SignatureCheck",
    "SignatureKeyError",
    "SourceEntry",
    "TensorChange",
    "TensorEntry",
    "VerifyResult",
    "bit_role",
    "compare_tensors",
    "model_item_from_weights",
    "seal_message",
    "seal_paths",
    "verify_seal",
]

SCHEMA_VERSION = "2.0"
MODEL_FORMATS = {".safetensors": "safetensors", ".onnx": "onnx"}
DATA_SUFFIXES = {".npz", ".csv", ".tsv", ".idx"}
LOADER_OPTIONS = ("x_key", "y_key", "label_column", "kind")
"""The ``load_data`` options a seal records (and commits) for each dataset."""
_HASH_BLOCK = 1 << 20


class SealFileError(InputFileError):
    """The seal file is missing, not JSON, of unknown schema version, or inconsistent."""


class SealedPathError(InputFileError):
    """A sealed path vanished or its format changed since sealing."""


class SignatureKeyError(UserError):
    """Kept for callers that catch it; :func:`verify_seal` now reports an unsigned seal or one
    signed by another key as a verification failure (``SignatureCheck.status``)."""


# ---------------------------------------------------------------------------------------- items


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


def _root(item: SealItem) -> bytes:
    if isinstance(item, DatasetItem):
        return merkle_root(item.leaf_hashes())
    return merkle_root([leaf_hash(x) for x in item.leaves()])


def _signature_from(obj: Any) -> Signature:
    from edgeproof.integrity.signing import Signature

    return Signature.from_json(obj)


@dataclass(frozen=True)
class ItemHeader:
    """What the top-level tree and the signature commit to for one item."""

    kind: str
    path: str
    format: str
    root: bytes
    leaves: int

    def leaf(self) -> bytes:
        return item_leaf(self.kind, self.path, self.format, self.root, self.leaves)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "format": self.format,
            "root": self.root.hex(),
            "leaves": self.leaves,
        }

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


# ----------------------------------------------------------------------------------------- seal


def _digests_json(chunks: Sequence[ChunkDigest]) -> list[list[Any]]:
    return [[c.sha256.hex(), c.s1, c.s2] for c in chunks]


def _digests_from(rows: Sequence[Sequence[Any]]) -> tuple[ChunkDigest, ...]:
    return tuple(ChunkDigest(bytes.fromhex(r[0]), int(r[1]), int(r[2])) for r in rows)


def _item_to_json(item: SealItem, root: bytes) -> dict[str, Any]:
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


def _item_from_json(obj: Mapping[str, Any]) -> SealItem:
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


@dataclass(frozen=True)
class Seal:
    """A set of sealed items, their top root and an optional signature."""

    items: tuple[SealItem, ...]
    chunk_size: int = DEFAULT_CHUNK_SIZE
    created: str = ""
    tool_version: str = __version__
    signature: Signature | None = None
    schema_version: str = SCHEMA_VERSION
    source: str = field(default="<seal>", compare=False)
    """Where the seal was read from (for messages; not part of the seal)."""

    @cached_property
    def item_roots(self) -> tuple[bytes, ...]:
        return tuple(_root(it) for it in self.items)

    @property
    def headers(self) -> tuple[ItemHeader, ...]:
        return tuple(
            ItemHeader(it.kind, it.path, it.format, r, it.leaf_count())
            for it, r in zip(self.items, self.item_roots)
        )

    @cached_property
    def root(self) -> bytes:
        """MTH over one leaf per item."""
        return merkle_root([leaf_hash(h.leaf()) for h in self.headers])

    def message(self) -> bytes:
        """What the signature covers (:func:`seal_message`)."""
        return seal_message(self.root, self.headers)

    def signed(self, key: Any) -> Seal:
        """This seal with an Ed25519 signature by ``key`` (an ``Ed25519PrivateKey``)."""
        from edgeproof.integrity.signing import sign

        return dataclasses.replace(self, signature=sign(key, self.message()))

    def item(self, path: str) -> SealItem:
        for it in self.items:
            if it.path == path:
                return it
        raise KeyError(path)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tool": "edgeproof",
            "tool_version": self.tool_version,
            "created": self.created,
            "hash": "sha256",
            "tree": "rfc6962",
            "chunk_size": self.chunk_size,
            "root": self.root.hex(),
            "items": [_item_to_json(it, r) for it, r in zip(self.items, self.item_roots)],
            "signature": None if self.signature is None else self.signature.to_json(),
        }

    def write(self, path: str | Path, *, base_dir: str | Path | None = None) -> Path:
        """Write the seal atomically, as one compact JSON document.

        Refuses (``OptionError("out", ...)``) to write over, or into, anything the seal covers:
        item paths are taken relative to ``base_dir`` (default: the seal's folder, the
        convention of :func:`seal_paths`). What is written matches ``seal.schema.json`` (the
        tests validate written seals of every item kind against it; :meth:`read` checks it), so
        writing does not load a schema validator (``jsonschema`` alone costs ~80 ms to import).
        """
        from edgeproof.outputs import check_output_paths

        base = Path(path).parent if base_dir is None else Path(base_dir)
        sealed = [base / it.path for it in self.items if not it.path.startswith("builtin:")]
        check_output_paths([Path(path)], sealed)
        return atomic_write_text(path, json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str | Path = "<seal>") -> Seal:
        """Parse, schema-check and self-check a seal object."""
        check_depth(obj, source, error=SealFileError, what="seal")
        return cls._from_checked_depth(obj, source)

    @classmethod
    def _from_checked_depth(cls, obj: Any, source: str | Path) -> Seal:
        """:meth:`from_json` for an object whose nesting depth is already checked."""
        import jsonschema

        version = obj.get("schema_version") if isinstance(obj, Mapping) else None
        if version != SCHEMA_VERSION:
            raise SealFileError(
                source,
                f"seal schema version {version!r} is not supported (this edgeproof "
                f"{__version__} reads {SCHEMA_VERSION})",
                "re-seal with this version, or verify with the edgeproof that wrote it",
            )
        try:
            jsonschema.validate(_skeleton(obj), load_schema())
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "top level"
            raise SealFileError(
                source,
                f"does not match the seal schema at {where}: {exc.message}",
                "regenerate it with `edgeproof seal`",
            ) from None
        sig = obj.get("signature")
        try:
            seal = cls(
                items=tuple(_item_from_json(it) for it in obj["items"]),
                chunk_size=int(obj["chunk_size"]),
                created=obj["created"],
                tool_version=obj["tool_version"],
                signature=None if sig is None else _signature_from(sig),
                source=str(source),
            )
            for it in seal.items:
                _check_lengths(it)
            roots = seal.item_roots
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise SealFileError(
                source,
                f"is malformed ({type(exc).__name__}: {str(exc)[:160]})",
                "regenerate it with `edgeproof seal`",
            ) from None
        for it, r, stored in zip(seal.items, roots, obj["items"]):
            if r.hex() != stored["root"]:
                raise SealFileError(
                    source,
                    f"item {it.path!r}: its stored digests give root {r.hex()[:16]}… but the "
                    f"seal records {stored['root'][:16]}…; the seal was edited after sealing",
                    "do not trust it; re-seal from a known-good copy",
                )
        if seal.root.hex() != obj["root"]:
            raise SealFileError(
                source,
                "the top-level root does not match its items; the seal was edited",
                "do not trust it; re-seal from a known-good copy",
            )
        return seal

    @classmethod
    def read(cls, path: str | Path) -> Seal:
        """Load a seal file (see :meth:`from_json`)."""
        p = Path(path)
        text = read_text(p, error=SealFileError, what="seal file", limit="max_seal_bytes")
        return cls._from_checked_depth(_parse_seal(text, p), p)


_BIG_LISTS = ("chunks", "ids", "content_sha256", "labels")
_SCALARS = (str, int, float, bool, type(None))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_seal(text: str, source: Path) -> Any:
    """:func:`~edgeproof.structured.parse_json` (``allow_nan=False``) for a seal, with the nesting
    check walking the long digest lists as flat lists (a generic walk of a 50k-record seal visits
    every string: ~0.1 s). Anything unusual — not JSON, ``NaN``, too deep, a digest list that is
    not flat — goes through ``parse_json``/``check_depth`` themselves, for their error."""
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (RecursionError, ValueError):
        return parse_json(text, source, error=SealFileError, what="seal", allow_nan=False)
    if not _shallow(obj, limits.current().max_nesting_depth):
        check_depth(obj, source, error=SealFileError, what="seal")
    return obj


def _shallow(obj: Any, limit: int) -> bool:
    """True if ``obj`` nests at most ``limit`` deep, the lists under :data:`_BIG_LISTS` holding
    only scalars or lists of scalars (``False`` also when unsure: then the generic walk decides)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            for k, v in node.items():
                if k in _BIG_LISTS and isinstance(v, list):
                    if depth + 2 > limit or not _flat(v):
                        return False
                elif isinstance(v, (dict, list)):
                    stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return True


def _flat(values: list[Any]) -> bool:
    scalars = _SCALARS
    return all(
        type(v) in scalars or (type(v) is list and all(type(w) in scalars for w in v))
        for v in values
    )


def _skeleton(obj: Any) -> Any:
    """``obj`` with long digest lists cut to 2 entries: the schema checks their shape quickly;
    :func:`_check_lengths` and parsing check every entry."""
    if isinstance(obj, Mapping):
        return {
            k: (v[:2] if k in _BIG_LISTS and isinstance(v, list) else _skeleton(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_skeleton(v) for v in obj]
    return obj


def _check_lengths(item: SealItem) -> None:
    digests = (
        [c.sha256 for t in item.tensors for c in t.chunks]
        if isinstance(item, ModelItem)
        else list(item.content_sha256)
        if isinstance(item, DatasetItem)
        else [c.sha256 for c in item.chunks]
    )
    if any(len(h) != 32 for h in digests):
        raise ValueError(f"item {item.path!r} holds a digest that is not 32 bytes")
    if isinstance(item, DatasetItem):
        if not len(item.ids) == len(item.content_sha256) == len(item.labels):
            raise ValueError(f"item {item.path!r}: ids, content_sha256 and labels differ in length")
        if item.labels and max(item.labels) >= len(item.classes):
            raise ValueError(f"item {item.path!r}: a label exceeds the class list")


def load_schema() -> dict[str, Any]:
    """The seal JSON Schema shipped in the package."""
    text = resources.files("edgeproof.integrity").joinpath("seal.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# ------------------------------------------------------------------------------------- building


def _tensor_entries(ts: TensorSet, chunk_size: int, pool: Any) -> tuple[TensorEntry, ...]:
    out = []
    for b in ts.tensors:
        chunks = tuple(digest_blob(b.data, chunk_size, pool))
        ts.done(b)
        out.append(TensorEntry(b.name, b.dtype, b.shape, len(b.data), chunks))
    return tuple(out)


def _model_item(
    path: str, ts: TensorSet, chunk_size: int, pool: Any, extra: Sequence[tuple[str, bytes]] = ()
) -> ModelItem:
    meta = [(k, hashlib.sha256(v).digest()) for k, v in sorted(ts.metadata.items())]
    meta += [(k, hashlib.sha256(v).digest()) for k, v in extra]
    return ModelItem(path, ts.format, _tensor_entries(ts, chunk_size, pool), tuple(sorted(meta)))


def _sidecar_meta(model: Path) -> list[tuple[str, bytes]]:
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


def model_item_from_weights(
    weights: Mapping[str, torch.Tensor],
    *,
    path: str = "<in-memory>",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    threads: int | None = None,
) -> ModelItem:
    """Seal in-memory weights (``LoadedModel.weights`` or a ``state_dict``) as a model item."""
    with hashing_pool(threads_or_default("threads", threads)) as pool:
        return _model_item(path, tensors_of_weights(weights), _chunk_size(chunk_size), pool)


@contextmanager
def _open_model(path: Path, fmt: str) -> Iterator[TensorSet]:
    if fmt == "safetensors":
        with read_safetensors(path) as ts:
            yield ts
    else:
        yield read_onnx(path)


def _record_hashes(ds: Any, root: Path | None) -> tuple[str, list[bytes]]:
    sha = hashlib.sha256
    if (
        root is not None
        and ds.format == "imagefolder"
        and all((root / rid).is_file() for rid in ds.ids)
    ):
        return "file-bytes", [sha((root / rid).read_bytes()).digest() for rid in ds.ids]
    x = np.ascontiguousarray(ds.x, dtype="<f4")
    n = len(ds.ids)
    flat = x.reshape(-1).view(np.uint8).data.cast("B")
    step = flat.nbytes // n if n else 0
    return "array-float32", [sha(flat[i * step : (i + 1) * step]).digest() for i in range(n)]


def _load_dataset(source: str, loader: Mapping[str, str]) -> Any:
    from edgeproof.data.loading import load_data

    options: dict[str, Any] = dict(loader)  # strings only (the seal's schema)
    return load_data(source, **options)


def _file_source(path: Path, name: str) -> SourceEntry:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return SourceEntry(name, size, digest.digest())


def _dataset_sources(source: str, fmt: str) -> tuple[SourceEntry, ...]:
    """Every file (and ``.npz`` member) the loader reads for this dataset, hashed."""
    if source.startswith("builtin:") or fmt == "imagefolder":
        return ()  # built-ins ship with the code; image records are their files' bytes
    from edgeproof.data.formats.cifar import batch_files
    from edgeproof.data.formats.idx import labels_path_for

    p = Path(source)
    try:
        if fmt == "npz":
            return (_file_source(p, p.name), *_npz_members(p))
        if fmt == "idx":
            labels = labels_path_for(p)
            return (_file_source(p, p.name), _file_source(labels, labels.name))
        if fmt == "cifar10":
            folder = p if p.is_dir() else p.parent
            files = batch_files(p) if p.is_dir() else [p]
            meta = folder / "batches.meta.txt"
            out = [_file_source(f, f.name) for f in files]
            if meta.is_file():
                out.append(_file_source(meta, meta.name))
            return tuple(out)
        return (_file_source(p, p.name),) if p.is_file() else ()
    except OSError as exc:
        raise SealedPathError(p, f"cannot be read ({exc.strerror or exc})") from None


def _npz_members(path: Path) -> list[SourceEntry]:
    from edgeproof.errors import DataFileError
    from edgeproof.zipfiles import ZIP_ERRORS, ZipArchive

    out = []
    with ZipArchive(path, DataFileError, what=".npz archive") as zf:
        for name in zf.names():
            digest = hashlib.sha256()
            size = 0
            try:
                with zf.open(name) as fh:
                    while block := fh.read(_HASH_BLOCK):
                        digest.update(block)
                        size += len(block)
            except ZIP_ERRORS as exc:
                raise DataFileError(path, f"member {name!r} cannot be read ({exc})") from None
            out.append(SourceEntry(f"{path.name}:{name}", size, digest.digest()))
    return out


def _npz_item(
    rel: str, source: str, loader: Mapping[str, str], sealed_file: bytes | None = None
) -> DatasetItem | None:
    """The item of an uncompressed ``.npz`` from one pass over its memory map
    (:func:`~edgeproof.integrity.npzscan.scan_npz`), or ``None``: not such a file, or one the
    one-pass reader leaves to ``load_data`` (which gives the same item, or the error)."""
    p = Path(source)
    if source.startswith("builtin:") or not p.name.lower().endswith(".npz") or not p.is_file():
        return None
    from edgeproof.integrity.npzscan import scan_npz

    scan = scan_npz(
        p,
        x_key=loader.get("x_key", "x"),
        y_key=loader.get("y_key", "y"),
        kind=loader.get("kind"),
        skip_crc_if=sealed_file,
    )
    if scan is None:
        return None
    return DatasetItem(
        rel,
        "npz",
        "array-float32",
        scan.sample_shape,
        scan.classes,
        scan.ids,
        scan.content_sha256,
        scan.labels,
        dict(loader),
        scan.kind,
        scan.domain,
        tuple(SourceEntry(m.name, m.nbytes, m.sha256) for m in scan.sources),
    )


def _dataset_item(rel: str, source: str, loader: Mapping[str, str], ds: Any = None) -> DatasetItem:
    if ds is None:
        fast = _npz_item(rel, source, loader)
        if fast is not None:
            return fast
        ds = _load_dataset(source, loader)
    root = None if source.startswith("builtin:") else Path(source)
    content, hashes = _record_hashes(ds, root)
    return DatasetItem(
        rel,
        ds.format,
        content,  # type: ignore[arg-type]
        tuple(int(s) for s in ds.sample_shape),
        tuple(str(c) for c in ds.classes),
        tuple(ds.ids),
        tuple(hashes),
        tuple(int(v) for v in ds.y),
        dict(loader),
        str(ds.kind),
        None if ds.domain is None else (float(ds.domain[0]), float(ds.domain[1])),
        _dataset_sources(source, ds.format),
    )


def _file_item(rel: str, path: Path, chunk_size: int, pool: Any) -> FileItem:
    with read_file(path) as mv:
        return FileItem(rel, len(mv), tuple(digest_blob(mv, chunk_size, pool)))


def _classify(path: Path, raw: bool) -> str:
    if raw:
        return "file"
    if path.suffix.lower() in MODEL_FORMATS:
        return "model"
    if path.is_dir() or path.suffix.lower() in DATA_SUFFIXES or "ubyte" in path.name:
        return "dataset"
    return "file"


def _inside(path: Path, base: Path) -> bool:
    """True if ``path`` (symlinks resolved) is ``base`` or lies under it."""
    try:
        path.resolve().relative_to(base.resolve())
    except ValueError:
        return False
    return True


def _rel(path: Path, base: Path, allow_outside: bool) -> str:
    if not allow_outside and not _inside(path, base):
        raise SealedPathError(
            path,
            f"is outside the seal's folder {base.resolve()} (symlinks resolved)",
            "write the seal into a folder that contains everything it seals, or pass "
            f"{param('allow_outside', switch=True)} to store a ../ path",
        )
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _chunk_size(chunk_size: Any) -> int:
    cs = positive_int("chunk_size", chunk_size, minimum=MIN_CHUNK_SIZE, maximum=MAX_CHUNK_SIZE)
    if cs % 4:
        raise OptionError("chunk_size", f"{cs} is not a multiple of 4", "use e.g. 65536")
    return cs


def _loader_options(loader: Mapping[str, str] | None) -> dict[str, str]:
    opts = dict(loader or {})
    for key, value in opts.items():
        if key not in LOADER_OPTIONS:
            raise OptionError(
                "loader",
                f"unknown dataset loader option {key!r}",
                f"use only {', '.join(LOADER_OPTIONS)}",
            )
        if not isinstance(value, str):
            raise OptionError("loader", f"option {key}={value!r} is not a string")
    return opts


def seal_paths(
    paths: Sequence[str | Path],
    *,
    base_dir: str | Path = ".",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    raw: bool = False,
    loader: Mapping[str, str] | None = None,
    threads: int | None = None,
    key: Any = None,
    allow_outside: bool = False,
) -> Seal:
    """Seal model files, datasets and raw files.

    Args:
        paths: files or folders; ``builtin:<name>`` datasets too. ``.safetensors``/``.onnx`` are
            sealed as models (with their sidecar ``.json``, if any), folders and
            ``.npz``/``.csv``/IDX files as datasets, anything else as raw files. A folder with
            ``raw=True`` seals every file under it as a raw file.
        base_dir: paths are stored relative to this folder (the seal file's folder), so the seal
            and the artefacts can move together.
        chunk_size: bytes per tensor/file chunk (multiple of 4, 4–256 KiB).
        raw: seal everything as raw file bytes, no format parsing.
        loader: ``load_data`` options for datasets, from :data:`LOADER_OPTIONS` (``x_key``,
            ``y_key``, ``label_column``, ``kind``); committed in the seal.
        threads: hashing threads (default: CPU count, at most 8).
        key: an ``Ed25519PrivateKey`` to sign the seal with.
        allow_outside: allow paths outside ``base_dir`` (stored as ``../`` paths).

    Raises:
        OptionError: ``chunk_size``, ``threads`` or ``loader`` is invalid.
        SealedPathError: a path does not exist or lies outside ``base_dir``.
    """
    base = Path(base_dir)
    cs = _chunk_size(chunk_size)
    opts = _loader_options(loader)
    items: list[SealItem] = []
    with hashing_pool(threads_or_default("threads", threads)) as pool:
        for given in paths:
            text = str(given)
            if text.startswith("builtin:"):
                items.append(_dataset_item(text, text, opts))
                continue
            p = Path(text)
            if not p.exists():
                raise SealedPathError(p, "does not exist", "check the path")
            kind = _classify(p, raw)
            if kind == "file" and p.is_dir():
                for f in sorted(q for q in p.rglob("*") if q.is_file()):
                    items.append(_file_item(_rel(f, base, allow_outside), f, cs, pool))
            elif kind == "file":
                items.append(_file_item(_rel(p, base, allow_outside), p, cs, pool))
            elif kind == "model":
                rel = _rel(p, base, allow_outside)
                with _open_model(p, MODEL_FORMATS[p.suffix.lower()]) as ts:
                    items.append(_model_item(rel, ts, cs, pool, _sidecar_meta(p)))
            else:
                items.append(_dataset_item(_rel(p, base, allow_outside), str(p), opts))
    if not items:
        raise SealedPathError(str(paths), "nothing to seal", "give at least one file or folder")
    seal = Seal(tuple(items), cs, datetime.now(UTC).isoformat(timespec="seconds"))
    return seal.signed(key) if key is not None else seal


# ------------------------------------------------------------------------------------ verifying


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


@dataclass(frozen=True)
class ItemVerification:
    """The outcome for one sealed item."""

    path: str
    kind: str
    format: str
    expected_root: bytes
    actual_root: bytes
    regions: tuple[RegionChange, ...] = ()
    tensors: tuple[TensorChange, ...] = ()
    records: tuple[RecordChange, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.expected_root == self.actual_root

    def messages(self) -> list[str]:
        out = [c.message() for c in self.tensors]
        out += [c.message() for c in self.regions]
        out += [c.message() for c in self.records]
        out += [f"{self.path}: {n}" for n in self.notes]
        if not self.ok and not out:
            out.append(f"{self.path}: root differs from the seal")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "format": self.format,
            "ok": self.ok,
            "expected_root": self.expected_root.hex(),
            "actual_root": self.actual_root.hex(),
            "changes": self.messages(),
            "records": [dataclasses.asdict(r) for r in self.records],
            "regions": [
                {**dataclasses.asdict(r), "element_range": r.element_range} for r in self.regions
            ],
            "tensors": [dataclasses.asdict(t) for t in self.tensors],
        }


@dataclass(frozen=True)
class SignatureCheck:
    """Whether the seal is signed, and whether the signature holds (and by whose key).

    ``status``: ``unsigned`` (no signature, none required), ``valid``, ``invalid`` (the seal was
    altered after signing), ``wrong-key`` (valid or not, made by another key than the pinned
    one), ``missing`` (a key was pinned but the seal carries no signature). Only ``unsigned``
    and ``valid`` let a verification pass.
    """

    status: Literal["unsigned", "valid", "invalid", "wrong-key", "missing"]
    fingerprint: str | None = None
    pinned: bool = False
    expected: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("unsigned", "valid")

    def message(self) -> str:
        if self.status == "unsigned":
            return "seal is not signed"
        if self.status == "missing":
            return (
                f"seal is NOT SIGNED, but a signature by {self.expected} is required: the "
                "signature was stripped or the seal is not the published one"
            )
        if self.status == "wrong-key":
            return (
                f"seal is signed by ANOTHER KEY ({self.fingerprint}), not by the expected "
                f"{self.expected}: do not trust it"
            )
        who = "the expected key" if self.pinned else "the key embedded in the seal (not pinned)"
        if self.status == "valid":
            return f"signature valid, by {who} {self.fingerprint}"
        return f"signature INVALID for key {self.fingerprint}: the seal was altered after signing"


@dataclass(frozen=True)
class VerifyResult:
    """Everything verify found: per item, and for the signature."""

    seal: str
    root: bytes
    items: tuple[ItemVerification, ...]
    signature: SignatureCheck

    @property
    def ok(self) -> bool:
        return self.signature.ok and all(i.ok for i in self.items)

    def messages(self) -> list[str]:
        out = [] if self.signature.ok else [self.signature.message()]
        for it in self.items:
            out.extend(it.messages())
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "seal": self.seal,
            "ok": self.ok,
            "root": self.root.hex(),
            "signature": dataclasses.asdict(self.signature),
            "items": [i.to_json() for i in self.items],
        }


def _flips(
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


def _diff_chunks(
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
        flips = _flips(located, dtype, blob, start) if located else ()
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
            regions += _diff_chunks(
                path, name, a.dtype, a.shape, a.chunks, b.chunks, blobs[name], chunk_size
            )
    return regions, tchanges


class _Unreadable(Exception):
    """A sealed path vanished or cannot be read as what was sealed (a verification failure)."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


def _resolve(item: SealItem, base: Path, allow_outside: bool, source: str) -> Path:
    """The sealed path on disk; refuses one that leaves the seal's folder."""
    rel = Path(item.path)
    escapes = rel.is_absolute() or bool(rel.drive) or ".." in rel.parts
    p = base / rel
    if not allow_outside and (escapes or not _inside(p, base)):
        raise SealFileError(
            source,
            f"item path {item.path!r} leaves the seal's folder {base.resolve()} "
            "(absolute, '..' or a symlink out); edgeproof does not read outside it",
            f"pass {param('allow_outside', switch=True)} only if you trust the seal",
        )
    if not p.exists():
        raise _Unreadable(f"was sealed as a {item.kind} ({item.format}) but no longer exists")
    return p


def _failed(item: SealItem, root: bytes, note: str) -> ItemVerification:
    return ItemVerification(item.path, item.kind, item.format, root, b"", notes=(note,))


def _verify_model(
    item: ModelItem, root: bytes, base: Path, chunk_size: int, pool: Any, opts: _Where
) -> ItemVerification:
    if item.format not in ("safetensors", "onnx"):
        raise SealedPathError(
            item.path,
            f"was sealed from an in-memory model ({item.format}), not a file",
            "check it with edgeproof.integrity.WeightGuard instead",
        )
    p = _resolve(item, base, opts.allow_outside, opts.source)
    try:
        with _open_model(p, item.format) as ts:
            current = _model_item(item.path, ts, chunk_size, pool, _sidecar_meta(p))
            if current == item:  # every leaf as sealed
                return ItemVerification(item.path, item.kind, item.format, root, root)
            blobs = {b.name: b.data for b in ts.tensors}
            regions, tchanges = compare_tensors(item.path, item, current, blobs, chunk_size)
    except ModelFileError as exc:
        raise _Unreadable(
            f"was sealed as a {item.format} model but can no longer be read as one ({exc.problem})"
        ) from None
    return ItemVerification(
        item.path, item.kind, item.format, root, _root(current), tuple(regions), tuple(tchanges)
    )


def _verify_file(
    item: FileItem, root: bytes, base: Path, chunk_size: int, pool: Any, opts: _Where
) -> ItemVerification:
    p = _resolve(item, base, opts.allow_outside, opts.source)
    if not p.is_file():
        raise _Unreadable("was sealed as a file but is now a folder")
    notes: list[str] = []
    try:
        with read_file(p) as mv:
            current = FileItem(item.path, len(mv), tuple(digest_blob(mv, chunk_size, pool)))
            regions = _diff_chunks(
                item.path, None, None, None, item.chunks, current.chunks, mv, chunk_size
            )
    except OSError as exc:
        raise _Unreadable(f"cannot be read ({exc.strerror or exc})") from None
    if current.nbytes != item.nbytes:
        notes.append(f"size changed {item.nbytes} → {current.nbytes} bytes")
    return ItemVerification(
        item.path,
        item.kind,
        item.format,
        root,
        _root(current),
        tuple(regions),
        (),
        (),
        tuple(notes),
    )


def _verify_dataset(item: DatasetItem, root: bytes, base: Path, opts: _Where) -> ItemVerification:
    builtin = item.path.startswith("builtin:")
    source = item.path if builtin else str(_resolve(item, base, opts.allow_outside, opts.source))
    try:
        sealed_file = next((s.sha256 for s in item.sources if s.name == Path(source).name), None)
        current = _npz_item(item.path, source, item.loader, sealed_file)
        if current is None:
            current = _dataset_item(
                item.path, source, item.loader, _load_dataset(source, item.loader)
            )
    except UserError as exc:  # unreadable now: truncated, corrupt, invalid labels, ...
        changed = _source_notes(item.sources, _sources_if_readable(source, item.format))
        raise _Unreadable(
            f"was sealed as a {item.format} dataset but can no longer be read ({exc})"
            + (f"; {'; '.join(changed)}" if changed else "")
        ) from None
    if current.format != item.format:
        raise _Unreadable(
            f"was sealed as a {item.format} dataset but now reads as {current.format}"
        )
    if current == item:  # every field (and so every leaf) as sealed: nothing to localise
        return ItemVerification(item.path, item.kind, item.format, root, root)
    notes: list[str] = []
    if current.classes != item.classes:
        notes.append(f"class list changed {list(item.classes)} → {list(current.classes)}")
    if current.sample_shape != item.sample_shape:
        notes.append(
            f"sample shape changed {list(item.sample_shape)} → {list(current.sample_shape)}"
        )
    if current.content != item.content:
        notes.append(f"record content is now read as {current.content}, sealed as {item.content}")
    if current.input_kind != item.input_kind:
        notes.append(f"input kind changed {item.input_kind} → {current.input_kind}")
    if current.domain != item.domain:
        notes.append(f"value domain changed {item.domain} → {current.domain}")
    notes += _source_notes(item.sources, current.sources)
    records = _diff_records(item, current)
    old_pos = {rid: i for i, rid in enumerate(item.ids)}
    common = [rid for rid in current.ids if rid in old_pos]
    if any(old_pos[a] > old_pos[b] for a, b in itertools.pairwise(common)):
        notes.append("records are in a different order than when sealed")
    return ItemVerification(
        item.path,
        item.kind,
        item.format,
        root,
        _root(current),
        (),
        (),
        tuple(records),
        tuple(notes),
    )


def _sources_if_readable(source: str, fmt: str) -> tuple[SourceEntry, ...]:
    if fmt == "npz":  # a stored member whose CRC fails still has a digest: name it as changed
        from edgeproof.integrity.npzscan import npz_sources

        found = npz_sources(Path(source))
        if found is not None:
            return tuple(SourceEntry(m.name, m.nbytes, m.sha256) for m in found)
    try:
        return _dataset_sources(source, fmt)
    except (UserError, OSError):
        return ()


def _source_notes(sealed: Sequence[SourceEntry], current: Sequence[SourceEntry]) -> list[str]:
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


@dataclass(frozen=True)
class _Where:
    source: str
    allow_outside: bool


def _diff_records(old: DatasetItem, new: DatasetItem) -> list[RecordChange]:
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


def check_signature(seal: Seal, public_key: bytes | None) -> SignatureCheck:
    """Check the seal's signature, pinned to ``public_key`` if given.

    With ``public_key``, a seal that is unsigned (``missing``) or signed by another key
    (``wrong-key``) fails, like an altered one (``invalid``): all three are verification
    failures, never a pass.
    """
    sig = seal.signature
    if sig is None and public_key is None:
        return SignatureCheck("unsigned")  # without importing the signature code
    from edgeproof.integrity.signing import fingerprint

    expected = None if public_key is None else fingerprint(public_key)
    if sig is None:
        if public_key is not None:
            return SignatureCheck("missing", None, True, expected)
        return SignatureCheck("unsigned")
    if public_key is not None and sig.public_key != public_key:
        return SignatureCheck("wrong-key", sig.fingerprint, True, expected)
    from edgeproof.integrity.signing import signature_valid

    ok = signature_valid(sig, seal.message())
    return SignatureCheck(
        "valid" if ok else "invalid", sig.fingerprint, public_key is not None, expected
    )


def verify_seal(
    seal: Seal,
    *,
    base_dir: str | Path = ".",
    public_key: bytes | None = None,
    threads: int | None = None,
    source: str | None = None,
    allow_outside: bool = False,
) -> VerifyResult:
    """Recompute every item of ``seal`` from disk and localise every difference.

    Reads only; never writes. Paths resolve against ``base_dir`` (the seal file's folder) and
    may not leave it unless ``allow_outside``. A sealed path that vanished or can no longer be
    read is a failed item (``ok`` false, with a note), not an exception.

    Raises:
        SealFileError: an item path leaves ``base_dir`` (and ``allow_outside`` is false).
        SealedPathError: an item was sealed from an in-memory model, not a file.
        OptionError: ``threads`` is not a positive integer.
    """
    sig = check_signature(seal, public_key)
    base = Path(base_dir)
    source = seal.source if source is None else source
    where = _Where(str(source), allow_outside)
    results: list[ItemVerification] = []
    with hashing_pool(threads_or_default("threads", threads)) as pool:
        for item, root in zip(seal.items, seal.item_roots):
            try:
                if isinstance(item, ModelItem):
                    results.append(_verify_model(item, root, base, seal.chunk_size, pool, where))
                elif isinstance(item, FileItem):
                    results.append(_verify_file(item, root, base, seal.chunk_size, pool, where))
                else:
                    results.append(_verify_dataset(item, root, base, where))
            except _Unreadable as exc:
                results.append(_failed(item, root, exc.note))
    return VerifyResult(source, seal.root, tuple(results), sig)
