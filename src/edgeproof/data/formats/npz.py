"""NumPy ``.npz`` archives: inputs and labels under named keys, read with ``allow_pickle=False``.

Keys (names of ``x`` and ``y`` configurable):

* ``x`` — inputs ``(N, ...)``, any real dtype. ``uint8`` image data is scaled by 1/255 into
  ``[0, 1]``; other data is kept as stored.
* ``y`` — labels ``(N,)``: integer indices, integral floats, or class-name strings.
* ``classes`` (optional) — class names, index = label.
* ``kind`` (optional, 0-d string) — ``image``, ``timeseries`` or ``tabular``; decides how a
  2-D record ``(A, B)`` is read (``(H, W)`` image by default, ``(C, T)`` for time series).
* ``domain`` (optional, two numbers) — the value domain ``(lo, hi)`` the inputs live in.

Record ids are ``"<file name>#<row>"``, e.g. ``"val.npz#17"``.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgeproof.data.dataset import Dataset
from edgeproof.data.formats.labels import encode_labels
from edgeproof.data.formats.layout import KINDS, arrange
from edgeproof.errors import DataError, DataFileError

__all__ = ["load_npz"]

_OPTIONAL = ("classes", "kind", "domain")
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
    with path.open("rb") as handle:  # np.load leaks its own handle when the zip is corrupt
        arrays = _read_archive(handle, path, x_key, y_key)
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
        decoded = (
            np.char.decode(stored_classes, "utf-8")
            if stored_classes.dtype.kind == "S"
            else stored_classes
        )
        names = [str(c) for c in decoded.reshape(-1)]
    y, class_names = encode_labels(y_raw, classes if classes is not None else names, source=source)

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


def _read_archive(handle: BinaryIO, path: Path, x_key: str, y_key: str) -> dict[str, np.ndarray]:
    """The arrays edgeproof uses from an open .npz file (x, y and the optional ones)."""
    try:
        archive = np.load(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFileError(
            path, "is not a readable .npz archive (truncated, corrupt or not a zip file)", _RESAVE
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataFileError(
            path, "holds a single .npy array, not an .npz archive with inputs and labels", _RESAVE
        )
    with archive:
        present = list(archive.files)
        for key, option in ((x_key, "x_key (--x-key)"), (y_key, "y_key (--y-key)")):
            if key not in present:
                raise DataFileError(
                    path,
                    f"has no array '{key}' (arrays present: {', '.join(present) or 'none'})",
                    f"Name the array with {option}",
                )
        wanted = [x_key, y_key, *(k for k in _OPTIONAL if k in present)]
        return {key: _read(archive, key, path) for key in wanted}


def _read(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataFileError(
                path,
                f"array '{key}' holds Python objects, which edgeproof never unpickles",
                "Save numeric arrays, e.g. x.astype('float32') and y.astype('int64')",
            ) from exc
        raise DataFileError(path, f"array '{key}' is corrupt", _RESAVE) from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataFileError(
            path, f"array '{key}' cannot be read (truncated or corrupt archive)", _RESAVE
        ) from exc


def _domain(stored: np.ndarray, path: Path) -> tuple[float, float]:
    values = stored.reshape(-1)
    if values.size != 2 or values.dtype.kind not in "iuf" or not values[0] < values[1]:
        raise DataFileError(
            path,
            f"array 'domain' must hold two numbers lo < hi, got {values.tolist()!r}",
            "Store it as numpy.array([lo, hi]) or drop it",
        )
    return float(values[0]), float(values[1])


def _stored_kind(stored: np.ndarray, path: Path) -> str:
    value = str(stored.reshape(-1)[0]) if stored.size == 1 else repr(stored.tolist())
    if value not in KINDS:
        raise DataFileError(
            path,
            f"array 'kind' is {value!r}, not a known kind",
            f"Store one of {', '.join(KINDS)}, e.g. kind=numpy.array('timeseries')",
        )
    return value
