"""One pass over an uncompressed ``.npz``: every digest a dataset seal needs, from one memory map.

A dataset item of an ``.npz`` commits three digests of (mostly) the same bytes: the SHA-256 of the
whole file, the SHA-256 of every archive member, and the SHA-256 of each record's float32 content
as :func:`edgeproof.data.loading.load_data` reads it. The straightforward way reads the file three
times (the file hash, the members through :mod:`zipfile` with its CRC check, and ``load_data``,
which inflates the inputs into a fresh copy). For an archive whose members are *stored*
(``numpy.savez``; not ``savez_compressed``) the members are plain byte ranges of the file, so
:func:`scan_npz` maps the file once and walks it block by block, each block of the inputs feeding
the file hash, the member hash, the member's CRC-32 and the per-record hashes while it is in cache;
the records are hashed straight from the map when the inputs are little-endian float32 in C order
(otherwise each block is converted as ``load_data`` converts it). Peak memory stays at one block.

It gives exactly what the straightforward reading gives, or ``None``: any archive it does not
handle this way (a compressed or encrypted member, a Fortran-order input array, overlapping
members, …) and any archive that ``load_data`` would refuse (a bad CRC, labels out of range,
NaN inputs, …) comes back as ``None``, and the caller takes the straightforward path, which also
raises the error with its usual message. ``tests/test_seal_npzscan.py`` checks the equality over
the layouts ``load_data`` accepts.

The label, class, kind and domain arrays are small; they are read through
:class:`edgeproof.zipfiles.ZipArchive` with the same helpers ``load_npz`` uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import mmap
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproof import limits

__all__ = ["MemberDigest", "ScannedNpz", "npz_sources", "scan_npz"]

_LOCAL = struct.Struct("<4s2B4HL2L2H")  # zipfile's local file header (30 bytes)
_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class MemberDigest:
    """The whole file or one archive member: name, size in bytes, SHA-256."""

    name: str
    nbytes: int
    sha256: bytes


@dataclass(frozen=True)
class ScannedNpz:
    """What ``load_data`` + the seal's hashing would give for an ``.npz``, from one pass."""

    sources: tuple[MemberDigest, ...]
    """The file (named by its file name), then every member (``<file>:<member>``), archive order."""
    ids: tuple[str, ...]
    content_sha256: tuple[bytes, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    sample_shape: tuple[int, ...]
    kind: str
    domain: tuple[float, float] | None


class _NotHere(Exception):
    """This archive takes the straightforward path."""


@dataclass(frozen=True)
class _Member:
    name: str
    start: int
    stop: int
    crc: int


@dataclass(frozen=True)
class _Fields:
    """The dataset fields besides the digests."""

    labels: tuple[int, ...]
    classes: tuple[str, ...]
    sample_shape: tuple[int, ...]
    kind: str
    domain: tuple[float, float] | None


@dataclass(frozen=True)
class _Inputs:
    """How to hash the records of the input member: where they are and how to read each block."""

    start: int  # first byte of the array data in the file
    rows: int
    row_bytes: int
    to_loaded: Callable[[memoryview, int], np.ndarray | None]
    """Block of raw rows → the rows as loaded (float32, C order), or ``None`` for "raw bytes"."""


def scan_npz(
    path: Path,
    *,
    x_key: str = "x",
    y_key: str = "y",
    kind: str | None = None,
    skip_crc_if: bytes | None = None,
) -> ScannedNpz | None:
    """Every digest of an uncompressed ``.npz`` dataset in one pass, or ``None`` (see module).

    ``skip_crc_if``: the file's SHA-256 at sealing time. When the file still has exactly that
    digest, its bytes are the sealed ones, whose CRCs were checked when it was sealed, so the
    CRC-32 pass is left out; when the digest differs the CRCs are checked after all (a second pass,
    only for a changed file).
    """
    from edgeproof.errors import UserError
    from edgeproof.zipfiles import ZIP_ERRORS

    try:
        with path.open("rb") as fh:
            if fh.read(4).startswith(b"\x93NUM") or path.stat().st_size == 0:
                return None
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError:
        return None
    not_here: tuple[type[BaseException], ...] = (_NotHere, UserError, *ZIP_ERRORS)
    try:
        return _scan(path, mm, x_key, y_key, kind, skip_crc_if)
    except not_here:
        return None
    finally:
        with contextlib.suppress(BufferError):  # a view still alive (after an unexpected
            mm.close()  # error only): the garbage collector closes the map


def npz_sources(path: Path) -> tuple[MemberDigest, ...] | None:
    """The file's and every stored member's digest, CRCs not checked (for naming what changed in
    an archive that no longer loads); ``None`` if the archive cannot be read this way."""
    from edgeproof.errors import DataFileError, UserError
    from edgeproof.zipfiles import ZIP_ERRORS, ZipArchive

    not_here: tuple[type[BaseException], ...] = (_NotHere, UserError, *ZIP_ERRORS)
    try:
        with path.open("rb") as fh, ZipArchive(path, DataFileError, what=".npz archive") as zf:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                names = zf.names()
                ranges = {n: _member(mm, zf.info(n)) for n in names}
                with memoryview(mm) as mv:
                    out = [MemberDigest(path.name, len(mm), hashlib.sha256(mv).digest())]
                    for n in names:
                        m = ranges[n]
                        digest = hashlib.sha256(mv[m.start : m.stop]).digest()
                        out.append(MemberDigest(f"{path.name}:{n}", m.stop - m.start, digest))
            finally:
                mm.close()
    except not_here:
        return None
    return tuple(out)


def _scan(
    path: Path,
    mm: mmap.mmap,
    x_key: str,
    y_key: str,
    kind: str | None,
    skip_crc_if: bytes | None,
) -> ScannedNpz:
    from edgeproof.data.formats.npz import NPZ_KEYS, read_npy_member
    from edgeproof.errors import DataFileError
    from edgeproof.zipfiles import ZipArchive

    with ZipArchive(path, DataFileError, what=".npz archive") as zf:
        names = zf.names()
        members = {n: _member(mm, zf.info(n)) for n in names}
        keys = {n.removesuffix(".npy"): n for n in names}  # as load_npz names them
        if x_key not in keys or y_key not in keys or x_key == y_key:
            raise _NotHere
        if x_key in NPZ_KEYS or y_key in NPZ_KEYS:
            raise _NotHere  # load_npz reads such a key twice; keep its reading
        small = {
            key: read_npy_member(zf, keys[key], path, key)
            for key in (y_key, *(k for k in NPZ_KEYS if k in keys))
            if key != x_key
        }
    x_member = members[keys[x_key]]
    mv = memoryview(mm)
    try:
        header = _npy_header(mv, x_member, path, x_key)
        meta, inputs = _dataset_meta(path, mv, x_member, header, small, kind, x_key, y_key)
        file_sha, member_sha, crcs, finite, records = _one_pass(
            mv,
            sorted(members.values(), key=lambda m: m.start),
            x_member,
            inputs,
            with_crc=skip_crc_if is None,
            done=_Release(mm),
        )
        if not finite:
            raise _NotHere  # load_data refuses NaN/Inf inputs: let it say so
        if skip_crc_if != file_sha and crcs is None:
            crcs = {m.name: zlib.crc32(mv[m.start : m.stop]) for m in members.values()}
    finally:
        mv.release()
    if crcs is not None and any(crcs[m.name] != m.crc for m in members.values()):
        raise _NotHere  # a corrupt member: load_data refuses the archive
    sources = (
        MemberDigest(path.name, len(mm), file_sha),
        *(
            MemberDigest(f"{path.name}:{n}", members[n].stop - members[n].start, member_sha[n])
            for n in names
        ),
    )
    name = path.name
    return ScannedNpz(
        sources,
        tuple(f"{name}#{i}" for i in range(len(meta.labels))),
        tuple(records),
        meta.labels,
        meta.classes,
        meta.sample_shape,
        meta.kind,
        meta.domain,
    )


def _member(mm: mmap.mmap, info: zipfile.ZipInfo) -> _Member:
    """The byte range of a stored member, its local header checked as :mod:`zipfile` checks it."""
    if info.flag_bits & 0x1 or info.compress_type != zipfile.ZIP_STORED:
        raise _NotHere
    if info.compress_size != info.file_size:
        raise _NotHere
    if info.file_size > limits.current().max_array_bytes:
        raise _NotHere
    off = info.header_offset
    if off < 0 or off + _LOCAL.size > len(mm):
        raise _NotHere
    fields = _LOCAL.unpack(mm[off : off + _LOCAL.size])
    if fields[0] != b"PK\x03\x04":
        raise _NotHere
    name_len, extra_len = fields[10], fields[11]
    raw_name = mm[off + _LOCAL.size : off + _LOCAL.size + name_len]
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if raw_name.decode(encoding, errors="replace") != info.orig_filename:
        raise _NotHere
    start = off + _LOCAL.size + name_len + extra_len
    stop = start + info.file_size
    if stop > len(mm):
        raise _NotHere
    return _Member(info.filename, start, stop, info.CRC)


def _npy_header(
    mv: memoryview, member: _Member, path: Path, key: str
) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    from edgeproof.data.formats.npz import _header

    head = bytes(mv[member.start : min(member.stop, member.start + (1 << 16))])
    return _header(io.BytesIO(head), path, key)


def _dataset_meta(
    path: Path,
    mv: memoryview,
    member: _Member,
    header: tuple[tuple[int, ...], bool, np.dtype, int],
    small: dict[str, np.ndarray],
    kind: str | None,
    x_key: str,
    y_key: str,
) -> tuple[_Fields, _Inputs]:
    """The dataset fields ``load_npz`` + ``Dataset.validate`` derive, without reading the inputs
    (their NaN/Inf check is done during the pass)."""
    from edgeproof.data.formats.labels import check_class_count, decode_names, encode_labels
    from edgeproof.data.formats.layout import arrange, check_kind
    from edgeproof.data.formats.npz import _domain, _stored_kind

    shape, fortran, dtype, header_len = header
    numel = math.prod(shape)
    nbytes = numel * dtype.itemsize
    if fortran or len(shape) < 2 or shape[0] == 0 or dtype.kind not in "biuf":
        raise _NotHere
    if member.stop - member.start != header_len + nbytes:
        raise _NotHere
    if nbytes > limits.current().max_array_bytes or numel * 4 > limits.current().max_array_bytes:
        raise _NotHere
    check_kind(kind)
    source = str(path)
    asked_kind = kind
    stored_kind, stored_classes = small.get("kind"), small.get("classes")
    if kind is None and stored_kind is not None:
        kind = _stored_kind(stored_kind, path)
    names = None
    if stored_classes is not None:
        check_class_count(stored_classes.size, source, "array 'classes'")
        names = decode_names(stored_classes, source=f"{source}: array 'classes'")
    y, class_names = encode_labels(small[y_key], names, source=source)
    start = member.start + header_len
    x_raw = np.frombuffer(mv, dtype=dtype, count=numel, offset=start).reshape(shape)
    arranged = arrange(x_raw, kind, source=source)
    out_kind, sample_shape = arranged.kind, tuple(int(s) for s in arranged.x.shape[1:])
    rows = shape[0]
    scaled = dtype == np.uint8 and out_kind == "image"
    domain = (0.0, 1.0) if scaled else None
    stored_domain = small.get("domain")
    if stored_domain is not None:
        domain = _domain(stored_domain, path)
    same_bytes = arranged.x.flags.c_contiguous and dtype.str == "<f4"
    del x_raw, arranged
    if asked_kind is not None and out_kind != asked_kind:
        raise _NotHere
    if y.ndim != 1 or y.shape[0] != rows or y.size == 0:
        raise _NotHere
    if int(y.min()) < 0 or int(y.max()) >= len(class_names):
        raise _NotHere
    row_shape = shape[1:]

    def to_loaded(block: memoryview, n: int) -> np.ndarray | None:
        if same_bytes:
            return None
        raw = np.frombuffer(block, dtype=dtype).reshape((n, *row_shape))
        x = arrange(raw, out_kind, source=source).x
        if scaled:
            x = x.astype(np.float32) / np.float32(255.0)
        return x

    fields = _Fields(
        tuple(int(v) for v in y), tuple(str(c) for c in class_names), sample_shape, out_kind, domain
    )
    return fields, _Inputs(start, rows, nbytes // rows, to_loaded)


def _one_pass(
    mv: memoryview,
    members: Sequence[_Member],
    x_member: _Member,
    inputs: _Inputs,
    *,
    with_crc: bool,
    done: Callable[[int], None] = lambda upto: None,
) -> tuple[bytes, dict[str, bytes], dict[str, int] | None, bool, list[bytes]]:
    """File digest, member digests, member CRCs (``None`` without ``with_crc``), "inputs all
    finite", record digests: each block is read from the map once and feeds all of them."""
    crc32: Callable[[memoryview, int], int] = zlib.crc32 if with_crc else _no_crc
    sha = hashlib.sha256
    whole = sha()
    digests: dict[str, bytes] = {}
    crcs: dict[str, int] = {}
    records: list[bytes] = []
    finite = True
    pos = 0
    for m in members:
        if m.start < pos:
            raise _NotHere  # overlapping members: not an archive numpy writes
        whole.update(mv[pos : m.start])
        h = sha()
        crc = 0
        if m is x_member:
            head = mv[m.start : inputs.start]
            whole.update(head)
            h.update(head)
            crc = crc32(head, 0)
            step = inputs.row_bytes
            per = max(1, _BLOCK_BYTES // max(1, step))
            for r in range(0, inputs.rows, per):
                n = min(per, inputs.rows - r)
                a = inputs.start + r * step
                block = mv[a : a + n * step]
                whole.update(block)
                h.update(block)
                crc = crc32(block, crc)
                loaded = inputs.to_loaded(block, n)
                if loaded is None:
                    finite = finite and bool(np.isfinite(np.frombuffer(block, "<f4")).all())
                    records += [sha(block[i : i + step]).digest() for i in range(0, n * step, step)]
                else:
                    finite = finite and bool(np.isfinite(loaded).all())
                    flat = np.ascontiguousarray(loaded, dtype="<f4").reshape(-1).view(np.uint8)
                    fmv = flat.data.cast("B")
                    size = len(fmv) // n
                    records += [sha(fmv[i : i + size]).digest() for i in range(0, n * size, size)]
                done(a + n * step)
        else:
            block = mv[m.start : m.stop]
            whole.update(block)
            h.update(block)
            crc = crc32(block, 0)
        digests[m.name] = h.digest()
        crcs[m.name] = crc
        pos = m.stop
    whole.update(mv[pos:])
    return whole.digest(), digests, crcs if with_crc else None, finite, records


class _Release:
    """Tell the kernel the pages before an offset are read (``MADV_DONTNEED``): they stay in
    the page cache but leave this process's resident set, so peak RSS stays at about one block
    rather than the whole mapped file. A no-op where ``madvise`` is unavailable."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        self.upto = 0
        self.advice = getattr(mmap, "MADV_DONTNEED", None)

    def __call__(self, upto: int) -> None:
        end = upto - upto % mmap.PAGESIZE
        if self.advice is None or end <= self.upto:
            return
        with contextlib.suppress(OSError, ValueError):
            self.mm.madvise(self.advice, self.upto, end - self.upto)
        self.upto = end


def _no_crc(block: memoryview, value: int) -> int:
    return 0
