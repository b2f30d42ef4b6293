"""Sealing: :func:`seal_paths` (model files, datasets, raw files, relative to the seal's folder)
and :func:`model_item_from_weights` (in-memory weights)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.errors import OptionError, param
from edgeproof.integrity.chunks import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    digest_blob,
    hashing_pool,
)
from edgeproof.integrity.dataset_items import dataset_item
from edgeproof.integrity.items import LOADER_OPTIONS, FileItem, ModelItem, SealItem
from edgeproof.integrity.model_items import model_item, open_model, sidecar_meta
from edgeproof.integrity.seal_errors import SealedPathError
from edgeproof.integrity.sealfile import Seal
from edgeproof.integrity.sources import read_file, tensors_of_weights
from edgeproof.options import positive_int, threads_or_default

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATA_SUFFIXES",
    "MODEL_FORMATS",
    "is_inside",
    "model_item_from_weights",
    "seal_paths",
]

MODEL_FORMATS = {".safetensors": "safetensors", ".onnx": "onnx"}

DATA_SUFFIXES = {".npz", ".csv", ".tsv", ".idx"}


def model_item_from_weights(
    weights: Mapping[str, torch.Tensor],
    *,
    path: str = "<in-memory>",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    threads: int | None = None,
) -> ModelItem:
    """Seal in-memory weights (``LoadedModel.weights`` or a ``state_dict``) as a model item."""
    with hashing_pool(threads_or_default("threads", threads)) as pool:
        return model_item(path, tensors_of_weights(weights), _chunk_size(chunk_size), pool)


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


def is_inside(path: Path, base: Path) -> bool:
    """True if ``path`` (symlinks resolved) is ``base`` or lies under it."""
    try:
        path.resolve().relative_to(base.resolve())
    except ValueError:
        return False
    return True


def _rel(path: Path, base: Path, allow_outside: bool) -> str:
    if not allow_outside and not is_inside(path, base):
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
                items.append(dataset_item(text, text, opts))
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
                with open_model(p, MODEL_FORMATS[p.suffix.lower()]) as ts:
                    items.append(model_item(rel, ts, cs, pool, sidecar_meta(p)))
            else:
                items.append(dataset_item(_rel(p, base, allow_outside), str(p), opts))
    if not items:
        raise SealedPathError(str(paths), "nothing to seal", "give at least one file or folder")
    seal = Seal(tuple(items), cs, datetime.now(UTC).isoformat(timespec="seconds"))
    return seal.signed(key) if key is not None else seal
