"""The seal file: :class:`Seal` (items, top root, signature), written as one JSON document and
read back with every check: size and nesting (:mod:`edgeproof.limits`), the schema, and that every
stored digest list reproduces its item root and the items the top root."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof import limits
from edgeproof._version import __version__
from edgeproof.atomic import atomic_write_text
from edgeproof.integrity.chunks import DEFAULT_CHUNK_SIZE
from edgeproof.integrity.item_json import item_from_json, item_to_json
from edgeproof.integrity.items import (
    DatasetItem,
    ItemHeader,
    ModelItem,
    SealItem,
    item_root,
    seal_message,
)
from edgeproof.integrity.merkle import leaf_hash, merkle_root
from edgeproof.integrity.seal_errors import SealFileError
from edgeproof.structured import check_depth, parse_json, read_text

if TYPE_CHECKING:
    from edgeproof.integrity.signing import Signature

__all__ = ["SCHEMA_VERSION", "Seal", "load_schema"]

SCHEMA_VERSION = "2.0"


def _signature_from(obj: Any) -> Signature:
    from edgeproof.integrity.signing import Signature

    return Signature.from_json(obj)


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
        return tuple(item_root(it) for it in self.items)

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
            "items": [item_to_json(it, r) for it, r in zip(self.items, self.item_roots)],
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
                items=tuple(item_from_json(it) for it in obj["items"]),
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
