"""Dataset items: every record's content digest and label, and every file (or ``.npz`` member)
the loader reads, hashed; an uncompressed ``.npz`` in one pass over its memory map."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.integrity.items import DatasetItem, SourceEntry
from edgeproof.integrity.seal_errors import SealedPathError

__all__ = ["dataset_item", "dataset_sources", "load_dataset", "npz_item"]

_HASH_BLOCK = 1 << 20


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


def load_dataset(source: str, loader: Mapping[str, str]) -> Any:
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


def dataset_sources(source: str, fmt: str) -> tuple[SourceEntry, ...]:
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


def npz_item(
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


def dataset_item(rel: str, source: str, loader: Mapping[str, str], ds: Any = None) -> DatasetItem:
    if ds is None:
        fast = npz_item(rel, source, loader)
        if fast is not None:
            return fast
        ds = load_dataset(source, loader)
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
        dataset_sources(source, ds.format),
    )
