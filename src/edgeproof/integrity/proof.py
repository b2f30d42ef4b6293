"""Inclusion proofs: show one record (or tensor chunk) is in a seal, without the rest of it.

A proof carries the leaf's fields, its index, the item's tree size and audit path (RFC 6962
§2.1.1), the header of every sealed item, the seal root and the seal's signature. Checking it
(:func:`verify_proof`) needs nothing else: re-encode the leaf, walk the path to the item root
(RFC 9162 §2.1.3.2), rebuild the top root from the item headers, and check the signature over
:func:`edgeproof.integrity.seal.seal_message`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeproof.atomic import atomic_write_text
from edgeproof.errors import InputFileError, OptionError
from edgeproof.integrity.items import DatasetItem, ItemHeader, ModelItem, seal_message
from edgeproof.integrity.merkle import MerkleTree, leaf_hash, merkle_root, root_from_inclusion
from edgeproof.integrity.records import record_leaf, tensor_chunk_leaf
from edgeproof.integrity.sealfile import Seal
from edgeproof.integrity.signing import Signature, fingerprint, signature_valid
from edgeproof.serialize import JsonFields
from edgeproof.structured import check_depth, read_json

__all__ = ["InclusionProof", "ProofCheck", "ProofFileError", "prove", "verify_proof"]

PROOF_VERSION = "1.0"


class ProofFileError(InputFileError):
    """A proof file is missing or malformed."""


@dataclass(frozen=True)
class InclusionProof(JsonFields):
    """A self-contained proof that one leaf is in a sealed item.

    ``leaf`` holds the fields of a record (``record_id``, ``content_sha256``, ``label``) or of a
    tensor chunk (``tensor``, ``dtype``, ``shape``, ``chunk``, ``sha256``).
    """

    leaf_kind: str
    leaf: Mapping[str, Any]
    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...] = field(metadata={"key": "audit_path"})
    item_index: int
    items: tuple[ItemHeader, ...]
    seal_root: bytes
    signature: Signature | None

    json_header: ClassVar[Mapping[str, Any]] = {"proof_version": PROOF_VERSION}

    def leaf_bytes(self) -> bytes:
        f = self.leaf
        if self.leaf_kind == "record":
            return record_leaf(f["record_id"], bytes.fromhex(f["content_sha256"]), f["label"])
        return tensor_chunk_leaf(
            f["tensor"], f["dtype"], tuple(f["shape"]), int(f["chunk"]), bytes.fromhex(f["sha256"])
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str | Path = "<proof>") -> InclusionProof:
        """Parse a proof, checking every field's type (hex digests, integer ranges, the leaf's
        fields for its kind) so a malformed proof fails here, with the file named."""
        check_depth(obj, source, error=ProofFileError, what="proof")
        if not isinstance(obj, Mapping) or obj.get("proof_version") != PROOF_VERSION:
            got = obj.get("proof_version") if isinstance(obj, Mapping) else None
            raise ProofFileError(
                source,
                f"proof version {got!r} is not supported (this edgeproof reads {PROOF_VERSION})",
                "re-create it with `edgeproof prove`",
            )
        try:
            kind = _field(obj, "leaf_kind", str)
            if kind not in _LEAF_FIELDS:
                raise ValueError(f"leaf_kind {kind!r} is not one of {', '.join(_LEAF_FIELDS)}")
            leaf = _field(obj, "leaf", dict)
            for name, check in _LEAF_FIELDS[kind].items():
                if name not in leaf:
                    raise KeyError(f"leaf.{name}")
                if not check(leaf[name]):
                    raise ValueError(f"leaf.{name} = {str(leaf[name])[:40]!r} is malformed")
            path = _field(obj, "audit_path", list)
            if len(path) > _MAX_PATH or not all(_is_hex32(h) for h in path):
                raise ValueError("audit_path must be at most 64 hex SHA-256 digests")
            items = _field(obj, "items", list)
            headers = tuple(_header(h) for h in items)
            root = _field(obj, "seal_root", str)
            if not _is_hex32(root):
                raise ValueError("seal_root is not a hex SHA-256 digest")
            leaf_index = _nonneg(obj, "leaf_index")
            tree_size = _nonneg(obj, "tree_size")
            if leaf_index >= tree_size:
                raise ValueError(f"leaf_index {leaf_index} is not below tree_size {tree_size}")
            sig = obj.get("signature")
            if sig is not None and not isinstance(sig, Mapping):
                raise TypeError("signature must be an object or null")
            return cls(
                kind,
                dict(leaf),
                leaf_index,
                tree_size,
                tuple(bytes.fromhex(h) for h in path),
                _nonneg(obj, "item_index"),
                headers,
                bytes.fromhex(root),
                None if sig is None else Signature.from_json(dict(sig)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProofFileError(
                source,
                f"is not a valid proof ({type(exc).__name__}: {str(exc)[:160]})",
                "re-create it with `edgeproof prove`",
            ) from None

    def write(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> InclusionProof:
        p = Path(path)
        obj = read_json(p, error=ProofFileError, what="proof file", allow_nan=False)
        return cls.from_json(obj, p)


_MAX_PATH = 64


def _is_hex32(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_int(v: Any, minimum: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


_LEAF_FIELDS: dict[str, dict[str, Any]] = {
    "record": {
        "record_id": lambda v: isinstance(v, str),
        "content_sha256": _is_hex32,
        "label": lambda v: isinstance(v, str),
    },
    "tensor-chunk": {
        "tensor": lambda v: isinstance(v, str),
        "dtype": lambda v: isinstance(v, str),
        "shape": lambda v: isinstance(v, list) and all(_is_int(d) for d in v),
        "chunk": _is_int,
        "sha256": _is_hex32,
    },
}
"""The fields each leaf kind must carry, with their checks."""


def _field(obj: Mapping[str, Any], key: str, typ: type) -> Any:
    value = obj[key]
    if not isinstance(value, typ):
        raise TypeError(f"{key} must be a {typ.__name__}")
    return value


def _nonneg(obj: Mapping[str, Any], key: str) -> int:
    value = obj[key]
    if not _is_int(value):
        raise ValueError(f"{key} must be a non-negative integer")
    return int(value)


def _header(h: Any) -> ItemHeader:
    if not isinstance(h, Mapping):
        raise TypeError("items must be objects")
    if h.get("kind") not in ("model", "dataset", "file"):
        raise ValueError(f"item kind {str(h.get('kind'))[:20]!r} is unknown")
    if not isinstance(h.get("path"), str) or not isinstance(h.get("format"), str):
        raise TypeError("item path and format must be strings")
    if not _is_hex32(h.get("root")) or not _is_int(h.get("leaves")):
        raise ValueError("item root must be a hex SHA-256 digest and leaves an integer")
    return ItemHeader.from_json(h)


@dataclass(frozen=True)
class ProofCheck:
    """The outcome of checking a proof: ``ok`` and the reason when not."""

    ok: bool
    reason: str
    signature: str  # "unsigned", "valid", "invalid"
    fingerprint: str | None = None


def prove(seal: Seal, record_id: str, *, item: str | None = None) -> InclusionProof:
    """An inclusion proof for a dataset record id, or a tensor chunk ``<tensor>#<chunk>``.

    Built from the seal alone (its stored digests), without reading the data.
    """
    for idx, it in enumerate(seal.items):
        if item is not None and it.path != item:
            continue
        found = _find_leaf(it, record_id)
        if found is None:
            continue
        kind, fields, leaf_index = found
        tree = MerkleTree([leaf_hash(x) for x in it.leaves()])
        return InclusionProof(
            kind,
            fields,
            leaf_index,
            tree.size,
            tuple(tree.inclusion_proof(leaf_index)),
            idx,
            seal.headers,
            seal.root,
            seal.signature,
        )
    where = f" in item {item!r}" if item else ""
    raise OptionError(
        "RECORD_ID",
        f"{record_id!r} is not a record id or <tensor>#<chunk> of the seal{where}",
        "record ids look like 'val.npz#17' or 'cat/001.png'; list them in the seal's records.ids",
    )


def _find_leaf(it: Any, key: str) -> tuple[str, dict[str, Any], int] | None:
    if isinstance(it, DatasetItem):
        try:
            i = it.ids.index(key)
        except ValueError:
            return None
        return (
            "record",
            {
                "record_id": key,
                "content_sha256": it.content_sha256[i].hex(),
                "label": it.classes[it.labels[i]],
            },
            it.first_record_leaf + i,
        )  # the header and the sources come first
    if isinstance(it, ModelItem) and "#" in key:
        name, _, chunk_text = key.rpartition("#")
        if not chunk_text.isdigit():
            return None
        chunk = int(chunk_text)
        offset = len(it.metadata)
        for t in it.tensors:
            if t.name == name and chunk < len(t.chunks):
                return (
                    "tensor-chunk",
                    {
                        "tensor": name,
                        "dtype": t.dtype,
                        "shape": list(t.shape),
                        "chunk": chunk,
                        "sha256": t.chunks[chunk].sha256.hex(),
                    },
                    offset + chunk,
                )
            offset += len(t.chunks)
    return None


def verify_proof(proof: InclusionProof, public_key: bytes | None = None) -> ProofCheck:
    """Check a proof on its own; with ``public_key``, also that the seal was signed by it."""
    sig_state = "unsigned"
    fp = None
    if proof.signature is not None:
        fp = proof.signature.fingerprint
        msg = seal_message(proof.seal_root, proof.items)
        sig_state = "valid" if signature_valid(proof.signature, msg) else "invalid"
    if not 0 <= proof.item_index < len(proof.items):
        return ProofCheck(False, "item index outside the item list", sig_state, fp)
    header = proof.items[proof.item_index]
    if header.leaves != proof.tree_size:
        return ProofCheck(
            False,
            f"tree size {proof.tree_size} differs from the item's {header.leaves} leaves",
            sig_state,
            fp,
        )
    got = root_from_inclusion(
        leaf_hash(proof.leaf_bytes()), proof.leaf_index, proof.tree_size, proof.path
    )
    if got != header.root:
        return ProofCheck(
            False, "the audit path does not lead from the leaf to the item root", sig_state, fp
        )
    if merkle_root([leaf_hash(h.leaf()) for h in proof.items]) != proof.seal_root:
        return ProofCheck(False, "the item headers do not give the seal root", sig_state, fp)
    if public_key is not None:
        if proof.signature is None:
            return ProofCheck(
                False, "the proof's seal is not signed but a public key was given", sig_state, fp
            )
        if proof.signature.public_key != public_key:
            return ProofCheck(
                False,
                f"the seal was signed by {fp}, not by the given key {fingerprint(public_key)}",
                sig_state,
                fp,
            )
    if sig_state == "invalid":
        return ProofCheck(False, "the seal signature does not verify", sig_state, fp)
    return ProofCheck(True, "leaf is included in the sealed item", sig_state, fp)
