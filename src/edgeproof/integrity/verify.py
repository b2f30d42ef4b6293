"""Verifying: :func:`verify_seal` recomputes every sealed item from disk and localises every
difference (:mod:`edgeproof.integrity.changes`); :func:`check_signature` checks the signature,
pinned to a key if given."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeproof.errors import ModelFileError, UserError, param
from edgeproof.integrity.changes import compare_tensors, diff_chunks, diff_records, source_notes
from edgeproof.integrity.chunks import digest_blob, hashing_pool
from edgeproof.integrity.dataset_items import dataset_item, dataset_sources, load_dataset, npz_item
from edgeproof.integrity.items import (
    DatasetItem,
    FileItem,
    ModelItem,
    SealItem,
    SourceEntry,
    item_root,
)
from edgeproof.integrity.model_items import model_item, model_unchanged, open_model, sidecar_meta
from edgeproof.integrity.seal_errors import SealedPathError, SealFileError
from edgeproof.integrity.sealfile import Seal
from edgeproof.integrity.sealing import is_inside
from edgeproof.integrity.sources import file_sha256, read_file
from edgeproof.integrity.verify_result import ItemVerification, SignatureCheck, VerifyResult
from edgeproof.options import threads_or_default

__all__ = ["check_signature", "verify_seal"]


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
    if not allow_outside and (escapes or not is_inside(p, base)):
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
        with open_model(p, item.format) as ts:
            extra = sidecar_meta(p)
            if model_unchanged(item, ts, chunk_size, pool, extra):  # SHA-256s only
                return ItemVerification(item.path, item.kind, item.format, root, root)
            current = model_item(item.path, ts, chunk_size, pool, extra)
            if current == item:  # every leaf as sealed
                return ItemVerification(item.path, item.kind, item.format, root, root)
            blobs = {b.name: b.data for b in ts.tensors}
            regions, tchanges = compare_tensors(item.path, item, current, blobs, chunk_size)
    except ModelFileError as exc:
        raise _Unreadable(
            f"was sealed as a {item.format} model but can no longer be read as one ({exc.problem})"
        ) from None
    return ItemVerification(
        item.path, item.kind, item.format, root, item_root(current), tuple(regions), tuple(tchanges)
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
            regions = diff_chunks(
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
        item_root(current),
        tuple(regions),
        (),
        (),
        tuple(notes),
    )


def _verify_dataset(item: DatasetItem, root: bytes, base: Path, opts: _Where) -> ItemVerification:
    builtin = item.path.startswith("builtin:")
    source = item.path if builtin else str(_resolve(item, base, opts.allow_outside, opts.source))
    if not builtin and _files_unchanged(item, Path(source)):
        return ItemVerification(item.path, item.kind, item.format, root, root)
    try:
        sealed_file = next((s.sha256 for s in item.sources if s.name == Path(source).name), None)
        current = npz_item(item.path, source, item.loader, sealed_file)
        if current is None:
            current = dataset_item(
                item.path, source, item.loader, load_dataset(source, item.loader)
            )
    except UserError as exc:  # unreadable now: truncated, corrupt, invalid labels, ...
        changed = source_notes(item.sources, _sources_if_readable(source, item.format))
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
    notes += source_notes(item.sources, current.sources)
    records = diff_records(item, current)
    old_pos = {rid: i for i, rid in enumerate(item.ids)}
    common = [rid for rid in current.ids if rid in old_pos]
    if any(old_pos[a] > old_pos[b] for a, b in itertools.pairwise(common)):
        notes.append("records are in a different order than when sealed")
    return ItemVerification(
        item.path,
        item.kind,
        item.format,
        root,
        item_root(current),
        (),
        (),
        tuple(records),
        tuple(notes),
    )


#: dataset formats read from exactly one file, the one a seal lists as its source (an ``.npz``
#: also lists its members, which the file's digest covers)
_WHOLE_FILE_FORMATS = frozenset({"npz", "csv", "tsv"})


def _files_unchanged(item: DatasetItem, source: Path) -> bool:
    """Whether every file the dataset was read from still has its sealed size and SHA-256.

    Then its bytes are the sealed ones, and so are its records, labels and every other committed
    field (the loader options are the seal's own): one hashing pass per file instead of reading
    and re-hashing every record. Any difference (or a format read from a folder) returns
    ``False`` and the dataset is read again to say what changed.
    """
    files = [s for s in item.sources if ":" not in s.name]
    if item.format not in _WHOLE_FILE_FORMATS or [s.name for s in files] != [source.name]:
        return False
    try:
        sealed = files[0]
        return (
            source.is_file()
            and source.stat().st_size == sealed.nbytes
            and file_sha256(source) == sealed.sha256
        )
    except OSError:
        return False


def _sources_if_readable(source: str, fmt: str) -> tuple[SourceEntry, ...]:
    if fmt == "npz":  # a stored member whose CRC fails still has a digest: name it as changed
        from edgeproof.integrity.npzscan import npz_sources

        found = npz_sources(Path(source))
        if found is not None:
            return tuple(SourceEntry(m.name, m.nbytes, m.sha256) for m in found)
    try:
        return dataset_sources(source, fmt)
    except (UserError, OSError):
        return ()


@dataclass(frozen=True)
class _Where:
    source: str
    allow_outside: bool


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
