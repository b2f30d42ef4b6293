"""What :func:`~edgeproof.integrity.verify.verify_seal` found: per item
(:class:`ItemVerification`), for the signature (:class:`SignatureCheck`), and in all
(:class:`VerifyResult`), with their messages and JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from edgeproof.integrity.changes import RecordChange, RegionChange, TensorChange

__all__ = ["ItemVerification", "SignatureCheck", "VerifyResult"]


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
