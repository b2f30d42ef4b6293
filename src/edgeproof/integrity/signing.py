"""Ed25519 signatures over a seal's roots (RFC 8032, via ``cryptography``).

Keys are PEM files: the private key PKCS#8 unencrypted (written with mode 0600), the public key
SubjectPublicKeyInfo. A key's fingerprint is ``sha256:<hex>`` of its raw 32-byte public key.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgeproof.atomic import atomic_write_bytes
from edgeproof.errors import InputFileError, param
from edgeproof.serialize import JsonFields

__all__ = [
    "KeyFileError",
    "Signature",
    "fingerprint",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "public_bytes",
    "sign",
    "signature_valid",
]

_KEYGEN_FIX = "create a key pair with `edgeproof keygen --out KEY`"


class KeyFileError(InputFileError):
    """A key file is missing or is not an Ed25519 key."""


@dataclass(frozen=True)
class Signature(JsonFields):
    """An Ed25519 signature and the public key that made it."""

    public_key: bytes
    value: bytes
    algorithm: str = "ed25519"

    json_order = ("algorithm", "public_key", "fingerprint", ...)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Signature:
        """Parse; raises ``KeyError``/``TypeError``/``ValueError`` for a malformed signature."""
        algorithm = obj["algorithm"]
        if not isinstance(algorithm, str):
            raise TypeError("signature algorithm must be a string")
        return cls(bytes.fromhex(obj["public_key"]), bytes.fromhex(obj["value"]), algorithm)


def public_bytes(key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key: bytes) -> str:
    """``sha256:<hex>`` of a raw public key."""
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def generate_key(out: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new private key to ``out`` (mode 0600) and its public key to ``out.pub``."""
    priv_path = Path(out)
    pub_path = priv_path.with_name(priv_path.name + ".pub")
    if priv_path.exists() and not overwrite:
        raise KeyFileError(
            priv_path,
            "already exists; refusing to overwrite a private key",
            f"choose another {param('out')} path, or delete the old key first",
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write_bytes(priv_path, pem)
    os.chmod(priv_path, 0o600)
    atomic_write_bytes(
        pub_path,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return priv_path, pub_path


_MAX_KEY_BYTES = 64 * 1024


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


def _read(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise KeyFileError(path, "is a folder, not a key file", _KEYGEN_FIX)
        with path.open("rb") as fh:
            data = fh.read(_MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(path, "no such key file", _KEYGEN_FIX) from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot be read ({exc.strerror})") from None
    if len(data) > _MAX_KEY_BYTES:
        raise KeyFileError(path, "is too large to be a PEM key", _KEYGEN_FIX)
    return data


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file."""
    p = Path(path)
    try:
        key = serialization.load_pem_private_key(_read(p), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(
            p,
            f"is not an unencrypted PEM private key ({_line(exc)})",
            _KEYGEN_FIX,
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(p, f"is a {type(key).__name__}, not an Ed25519 key", _KEYGEN_FIX)
    return key


def load_public_key(path: str | Path) -> bytes:
    """The raw Ed25519 public key in a PEM file (public, or private from which it is derived)."""
    p = Path(path)
    data = _read(p)
    try:
        if b"PRIVATE KEY" in data:
            priv = serialization.load_pem_private_key(data, password=None)
            if not isinstance(priv, Ed25519PrivateKey):
                raise TypeError(type(priv).__name__)
            return public_bytes(priv.public_key())
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(p, f"is not an Ed25519 PEM key ({_line(exc)})", _KEYGEN_FIX) from None
    if not isinstance(pub, Ed25519PublicKey):
        raise KeyFileError(p, f"is a {type(pub).__name__}, not an Ed25519 key", _KEYGEN_FIX)
    return public_bytes(pub)


def sign(key: Ed25519PrivateKey, message: bytes) -> Signature:
    """Sign ``message``."""
    return Signature(public_bytes(key.public_key()), key.sign(message))


def signature_valid(signature: Signature, message: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` by its public key."""
    if signature.algorithm != "ed25519" or len(signature.public_key) != 32:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(signature.public_key).verify(signature.value, message)
    except (InvalidSignature, ValueError):
        return False
    return True
