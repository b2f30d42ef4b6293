"""NumPy ``.npz`` archives: inputs and labels under named keys, never unpickled.

Keys (names of ``x`` and ``y`` configurable):

* ``x`` — inputs ``(N, ...)``, any real dtype. ``uint8`` image data is scaled by 1/255 into
  ``[0, 1]``; other data is kept as stored.
* ``y`` — labels ``(N,)``: integer indices, integral floats, or class-name strings.
* ``classes`` (optional) — class names, index = label (UTF-8 if stored as bytes).
* ``kind`` (optional, 0-d string) — ``image``, ``timeseries`` or ``tabular``; decides how a
  2-D record ``(A, B)`` is read (``(H, W)`` image by default, ``(C, T)`` for time series).
* ``domain`` (optional, two finite numbers) — the value domain ``(lo, hi)`` the inputs live in.

Record ids are ``"<file name>#<row>"``, e.g. ``"val.npz#17"``.

The archive is read member by member (:class:`edgeproof.zipfiles.ZipArchive`), not with
``numpy.load``: each ``.npy`` header is parsed first (``numpy.lib.format``'s header reader, which
uses ``ast.literal_eval`` on at most 10 000 bytes), object dtypes are refused (a pickle), the
declared ``shape x itemsize`` must equal the member's declared size minus its header and stay
within ``max_array_bytes`` (:mod:`edgeproof.limits`) — all *before* the array is allocated — and
exactly that many bytes are then inflated.
"""

from __future__ import annotations

import math
import tokenize
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from edgeproof import limits
from edgeproof.data.dataset import Dataset
from edgeproof.data.formats.labels import check_class_count, decode_names, encode_labels
from edgeproof.data.formats.layout import KINDS, arrange
from edgeproof.errors import DataError, DataFileError
from edgeproof.zipfiles import ZIP_ERRORS, ZipArchive

__all__ = ["NPZ_KEYS", "load_npz", "read_npy_member"]

NPZ_KEYS = ("classes", "kind", "domain")
"""Optional arrays :func:`load_npz` reads besides the inputs and labels."""
_RESAVE = "Re-create it with numpy.savez(path, x=inputs, y=labels)"


def load_npz(
    path: Path,
    *,
    x_key: str = "x",
    y_key: str = "y",
    classes: Sequence[str] | None = None,
    kind: str | None = None,
) -> Dataset:
    """Read an ``.npz`` archive into a :class:`Dataset` (not yet validated)."""
    arrays = _read_archive(path, x_key, y_key)
    x_raw, y_raw = arrays[x_key], arrays[y_key]
    stored_classes = arrays.get("classes")
    stored_kind = arrays.get("kind")
    stored_domain = arrays.get("domain")

    source = str(path)
    if kind is None and stored_kind is not None:
        kind = _stored_kind(stored_kind, path)
    if x_raw.dtype.kind not in "biuf":
        raise DataError(
            f"{source}: array '{x_key}' has dtype {x_raw.dtype}; inputs must be numbers"
        )
    if x_raw.ndim == 0:
        raise DataError(f"{source}: array '{x_key}' is a scalar; inputs must be (N, ...)")
    names = None
    if classes is None and stored_classes is not None:
        check_class_count(stored_classes.size, source, "array 'classes'")
        names = decode_names(stored_classes, source=f"{source}: array 'classes'")
    y, class_names = encode_labels(y_raw, classes if classes is not None else names, source=source)

    limits.check(DataFileError, path, "max_array_bytes", "the inputs as float32", x_raw.size * 4)
    arranged = arrange(x_raw, kind, source=source)
    metadata: dict[str, object] = {"x_key": x_key, "y_key": y_key}
    if arranged.note:
        metadata["layout"] = arranged.note
    domain: tuple[float, float] | None = None
    x = arranged.x
    if x.dtype == np.uint8 and arranged.kind == "image":
        x = x.astype(np.float32) / np.float32(255.0)
        domain = (0.0, 1.0)
        metadata["scaled"] = "uint8/255"
    if stored_domain is not None:
        domain = _domain(stored_domain, path)
    return Dataset(
        x=x,
        y=y,
        classes=class_names,
        name=source,
        format="npz",
        ids=[f"{path.name}#{i}" for i in range(y.shape[0])],
        kind=arranged.kind,
        domain=domain,
        metadata=metadata,
    )


def _read_archive(path: Path, x_key: str, y_key: str) -> dict[str, np.ndarray]:
    """The arrays edgeproof uses from an .npz file (x, y and the optional ones)."""
    with _open(path) as zf:
        members = {n.removesuffix(".npy"): n for n in zf.names()}
        present = list(members)
        for key, option in ((x_key, "x_key"), (y_key, "y_key")):
            if key not in members:
                shown = ", ".join(present[:20]) or "none"
                raise DataFileError(
                    path,
                    f"has no array '{key}' (arrays present: {shown})",
                    f"Name the array with {option}=",
                )
        wanted = [x_key, y_key, *(k for k in NPZ_KEYS if k in members)]
        return {key: read_npy_member(zf, members[key], path, key) for key in wanted}


def _open(path: Path) -> ZipArchive:
    if not path.is_file():
        raise DataFileError(path, "is not a file", _RESAVE)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if head.startswith(b"\x93NUM"):
        raise DataFileError(
            path, "holds a single .npy array, not an .npz archive with inputs and labels", _RESAVE
        )
    try:
        return ZipArchive(path, DataFileError, what=".npz archive")
    except DataFileError:
        raise DataFileError(
            path, "is not a readable .npz archive (truncated, corrupt or not a zip file)", _RESAVE
        ) from None


def read_npy_member(zf: ZipArchive, member: str, path: Path, key: str) -> np.ndarray:
    """One ``.npy`` member as an array: header checked, then exactly its data inflated."""
    try:
        with zf.open(member) as fh:
            shape, fortran, dtype, header_len = _header(fh, path, key)
            declared = zf.size(member)
            itemsize = dtype.itemsize
            numel = math.prod(shape)
            nbytes = numel * itemsize
            limits.check(DataFileError, path, "max_array_bytes", f"array '{key}'", nbytes)
            if declared != header_len + nbytes:
                problem = "is truncated" if declared < header_len + nbytes else "has extra bytes"
                raise DataFileError(
                    path,
                    f"array '{key}' {problem}: its header declares {dtype} data of shape "
                    f"{tuple(shape)} ({nbytes} bytes) but the member holds "
                    f"{declared - header_len} bytes",
                    _RESAVE,
                )
            buf = bytearray(nbytes)
            view = memoryview(buf)
            got = 0
            while got < nbytes:
                n = fh.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    break
                got += n
    except DataFileError:
        raise
    except ZIP_ERRORS as exc:
        raise DataFileError(
            path, f"array '{key}' cannot be read (truncated or corrupt archive: {exc})", _RESAVE
        ) from None
    if got != nbytes:
        raise DataFileError(path, f"array '{key}' is truncated", _RESAVE)
    arr = np.frombuffer(buf, dtype=dtype, count=numel)
    return arr.reshape(shape, order="F" if fortran else "C")


_read_v3 = getattr(
    getattr(np.lib, "_format_impl", np.lib.format), "_read_array_header", None
)  # numpy's reader for the rare version-3.0 (UTF-8) header; absent in some numpy versions

_HEADER_ERRORS: tuple[type[BaseException], ...] = (
    *ZIP_ERRORS,
    tokenize.TokenError,  # numpy tokenizes the header dict before literal_eval
    SyntaxError,
    TypeError,
    MemoryError,
    RecursionError,
)


def _header(fh: IO[bytes], path: Path, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header length)`` of an ``.npy`` stream."""
    fmt = np.lib.format
    try:
        major, minor = fmt.read_magic(fh)
        if (major, minor) == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif (major, minor) == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        elif (major, minor) == (3, 0) and _read_v3 is not None:
            shape, fortran, dtype = _read_v3(fh, (3, 0))
        else:
            raise ValueError(f"unsupported .npy format version {major}.{minor}")
        header_len = fh.tell()
    except _HEADER_ERRORS as exc:
        raise DataFileError(
            path, f"array '{key}' is not a valid .npy array ({str(exc)[:120]})", _RESAVE
        ) from None
    if dtype.hasobject:
        raise DataFileError(
            path,
            f"array '{key}' holds Python objects, which edgeproof never unpickles",
            "Save numeric arrays, e.g. x.astype('float32') and y.astype('int64')",
        )
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise DataFileError(path, f"array '{key}' has an invalid shape {shape!r}", _RESAVE)
    return shape, bool(fortran), dtype, int(header_len)


def _domain(stored: np.ndarray, path: Path) -> tuple[float, float]:
    values = stored.reshape(-1)
    if (
        values.size != 2
        or values.dtype.kind not in "iuf"
        or not np.all(np.isfinite(values))
        or not values[0] < values[1]
    ):
        raise DataFileError(
            path,
            f"array 'domain' must hold two finite numbers lo < hi, got {values.tolist()[:4]!r}",
            "Store it as numpy.array([lo, hi]) or drop it",
        )
    return float(values[0]), float(values[1])


def _stored_kind(stored: np.ndarray, path: Path) -> str:
    if stored.size == 1 and stored.dtype.kind in "SU":
        value = decode_names(stored, source=f"{path}: array 'kind'")[0]
    else:
        value = repr(stored.reshape(-1)[:4].tolist())
    if value not in KINDS:
        raise DataFileError(
            path,
            f"array 'kind' is {value!r}, not a known kind",
            f"Store one of {', '.join(KINDS)}, e.g. kind=numpy.array('timeseries')",
        )
    return value
