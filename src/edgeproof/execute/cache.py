"""Finished results on disk, keyed by everything that determines them.

A key is the SHA-256 of its parts (:meth:`ResultCache.key`: e.g. the model file's digest, the
data's digest, the settings as canonical JSON) and always the edgeproof version. Each entry is
one JSON file written atomically when its task finishes, so a run that is interrupted keeps what
it finished and the next run with the same inputs starts where it stopped.

Entries are JSON, never pickles: a result is encoded by :func:`encode` — dataclasses of an
allowlist the caller names (``types``), tuples, mappings with any keys, numpy arrays and scalars
(their bytes, so a NaN or a float32 comes back bit for bit), floats including NaN/±∞ — and
decoded only into those types. An entry that cannot be read or decoded is recomputed.

The folder has a ``cache.json`` naming the edgeproof version that wrote it; a cache written by
another version is ignored (:attr:`CacheStats.ignored_version` says so, once) and taken over.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof._version import __version__
from edgeproof.atomic import atomic_write_text

__all__ = ["CacheStats", "ResultCache", "decode", "encode", "file_digest"]

_FORMAT = "edgeproof-result-cache"


def file_digest(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class CacheStats:
    """What the cache did in one run: entries reused and written, and any entry or folder
    it ignored (with the reason)."""

    hits: int = 0
    written: int = 0
    unreadable: int = 0
    ignored_version: str | None = None

    def notes(self, folder: Path) -> list[str]:
        out = []
        if self.ignored_version is not None:
            out.append(
                f"the cache at {folder} was written by edgeproof {self.ignored_version}, "
                f"not {__version__}: ignored, every result recomputed"
            )
        if self.hits:
            out.append(f"{self.hits} result(s) from the cache at {folder} (inputs unchanged)")
        if self.unreadable:
            out.append(f"{self.unreadable} unreadable cache entr(ies) at {folder} recomputed")
        return out


class ResultCache:
    """A folder of results (module docstring); ``types``: the dataclasses an entry may hold."""

    def __init__(self, folder: str | Path, types: Iterable[type]) -> None:
        self.folder = Path(folder)
        self.types = {t.__name__: t for t in types}
        self.stats = CacheStats()
        self._check_version()

    def _check_version(self) -> None:
        manifest = self.folder / "cache.json"
        try:
            obj = json.loads(manifest.read_text(encoding="utf-8"))
            version = obj.get("version") if obj.get("format") == _FORMAT else "unknown"
        except FileNotFoundError:
            version = __version__
        except (OSError, ValueError, AttributeError):
            version = "unknown"
        if version != __version__:
            self.stats.ignored_version = str(version)
        if version != __version__ or not manifest.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                manifest, json.dumps({"format": _FORMAT, "version": __version__}) + "\n"
            )

    @staticmethod
    def key(*parts: Any) -> str:
        """The key of a result determined by ``parts`` (JSON-able) and the edgeproof version."""
        text = json.dumps([__version__, *parts], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """The result stored under ``key``, or ``None`` (absent, unreadable, other version)."""
        if self.stats.ignored_version is not None:
            return None
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
            if obj.get("key") != key or obj.get("version") != __version__:
                raise ValueError("key or version does not match")
            value = decode(obj["result"], self.types)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.stats.unreadable += 1
            return None
        self.stats.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (atomically)."""
        doc = {"key": key, "version": __version__, "result": encode(value, self.types)}
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(doc, allow_nan=False, separators=(",", ":")) + "\n")
        self.stats.written += 1


def encode(value: Any, types: Mapping[str, type]) -> Any:
    """``value`` as JSON types that :func:`decode` turns back into equal objects."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, np.integer):
        return value
    if isinstance(value, float) and not isinstance(value, np.floating):
        return value if math.isfinite(value) else {"$f": repr(value)}
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        return {
            "$nd": a.dtype.str,
            "shape": list(a.shape),
            "scalar": isinstance(value, np.generic),
            "b64": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode(),
        }
    if isinstance(value, tuple):
        return {"$t": [encode(v, types) for v in value]}
    if isinstance(value, list):
        return [encode(v, types) for v in value]
    if isinstance(value, Mapping):
        return {"$d": [[encode(k, types), encode(v, types)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if types.get(name) is not type(value):
            raise TypeError(f"{name} is not a cacheable result type")
        fields = {
            f.name: encode(getattr(value, f.name), types)
            for f in dataclasses.fields(value)
            if f.init
        }
        return {"$c": name, "f": fields}
    raise TypeError(f"{type(value).__name__} cannot be cached")


def decode(obj: Any, types: Mapping[str, type]) -> Any:
    """The inverse of :func:`encode`, into ``types`` only."""
    if obj is None or isinstance(obj, (bool, str, int, float)):
        return obj
    if isinstance(obj, list):
        return [decode(v, types) for v in obj]
    if not isinstance(obj, dict):
        raise TypeError(f"unexpected {type(obj).__name__}")
    if "$f" in obj:
        return float(obj["$f"])
    if "$nd" in obj:
        a = np.frombuffer(base64.b64decode(obj["b64"]), dtype=np.dtype(obj["$nd"]))
        a = a.reshape(obj["shape"]).copy()
        return a[()] if obj["scalar"] else a
    if "$t" in obj:
        return tuple(decode(v, types) for v in obj["$t"])
    if "$d" in obj:
        return {decode(k, types): decode(v, types) for k, v in obj["$d"]}
    if "$c" in obj:
        cls = types[obj["$c"]]  # KeyError: not an allowed type
        return cls(**{k: decode(v, types) for k, v in obj["f"].items()})
    raise TypeError("not an encoded value")
