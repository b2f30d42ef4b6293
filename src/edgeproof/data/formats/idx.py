"""IDX files, the MNIST format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS").

Layout, all big-endian: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short,
0x0C int, 0x0D float, 0x0E double), the number of dimensions ``d``, then ``d`` 32-bit sizes,
then the data. Files may be gzip-compressed (``.gz``).

:func:`load_idx` takes the *images* file and finds the labels file by the MNIST naming
convention: ``*-images-idx3-ubyte`` → ``*-labels-idx1-ubyte`` (also ``*-images.idx3-ubyte``),
with or without ``.gz``. ``uint8`` images are scaled by 1/255 into ``[0, 1]``. Record ids are
``"<images file name without .gz>#<index>"``, e.g. ``"t10k-images-idx3-ubyte#5"``, so gzipping
the file does not change them.

The header is read first and the data size it declares is checked against ``max_array_bytes``
(:mod:`edgeproof.limits`) before anything else is read; a gzip file is inflated only up to that
size (plus one byte, to tell trailing data), so a gzip bomb costs its declared size at most.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgeproof import limits
from edgeproof.data.dataset import Dataset
from edgeproof.data.formats.labels import encode_labels
from edgeproof.data.formats.layout import arrange
from edgeproof.errors import DataError, DataFileError

__all__ = ["labels_path_for", "load_idx", "read_idx"]

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_REFETCH = "Re-download or re-extract the file"


def read_idx(path: Path) -> np.ndarray:
    """Return the array stored in one IDX file (gzip-compressed if the name ends in ``.gz``)."""
    with _open(path) as fh:
        head = _read(fh, path, 4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _TYPES:
            raise DataFileError(
                path,
                f"is not an IDX file (first bytes {head[:4].hex() or 'missing'}; "
                "expected 0000, a type code 08/09/0b/0c/0d/0e and the number of dimensions)",
                "Give an MNIST-format IDX file such as t10k-images-idx3-ubyte",
            )
        dtype = _TYPES[head[2]]
        ndim = head[3]
        header = 4 + 4 * ndim
        raw_dims = _read(fh, path, 4 * ndim)
        if len(raw_dims) < 4 * ndim:
            raise DataFileError(
                path,
                f"is truncated: its header needs {header} bytes but the file has "
                f"{4 + len(raw_dims)}",
                _REFETCH,
            )
        dims = struct.unpack(f">{ndim}I", raw_dims)
        count = math.prod(dims)
        nbytes = count * dtype.itemsize
        limits.check(DataFileError, path, "max_array_bytes", f"data of shape {tuple(dims)}", nbytes)
        data = _read(fh, path, nbytes + 1)
    expected = header + nbytes
    if len(data) != nbytes:
        problem = "is truncated" if len(data) < nbytes else "has trailing bytes"
        size = f"{header + len(data)} bytes" if len(data) <= nbytes else "more"
        raise DataFileError(
            path,
            f"{problem}: the header declares {dtype.name} data of shape {tuple(dims)}, i.e. "
            f"{expected} bytes, but the file has {size}",
            _REFETCH,
        )
    return np.frombuffer(bytearray(data), dtype=dtype, count=count).reshape(dims)


def labels_path_for(images: Path) -> Path:
    """The labels file that goes with an MNIST images file; raises if it cannot be found."""
    name = images.name.removesuffix(".gz")
    for pattern, labels in (("-images-idx3-", "-labels-idx1-"), ("-images.idx3-", "-labels.idx1-")):
        if pattern in name:
            stem = name.replace(pattern, labels)
            candidates = [images.with_name(stem), images.with_name(stem + ".gz")]
            for candidate in candidates:
                if candidate.is_file():
                    return candidate
            raise DataFileError(
                images,
                f"has no labels file next to it (looked for {candidates[0].name} and "
                f"{candidates[1].name})",
                "Put the matching labels file in the same folder",
            )
    if "-labels-idx1-" in name or "-labels.idx1-" in name:
        raise DataFileError(
            images,
            "is an IDX labels file",
            "Pass the images file (…-images-idx3-ubyte); its labels file is found by name",
        )
    raise DataFileError(
        images,
        "does not follow the MNIST naming convention, so its labels file cannot be found",
        "Name the pair <prefix>-images-idx3-ubyte and <prefix>-labels-idx1-ubyte",
    )


def load_idx(
    path: Path, *, classes: Sequence[str] | None = None, kind: str | None = None
) -> Dataset:
    """Read an MNIST-style images/labels IDX pair into a :class:`Dataset` (not yet validated)."""
    labels_path = labels_path_for(path)
    images = read_idx(path)
    labels = read_idx(labels_path)
    source = str(path)
    if images.ndim < 1 or labels.ndim != 1:
        raise DataFileError(
            labels_path,
            f"holds an array of shape {labels.shape}; a labels file is 1-D",
            "Pass the images file; the labels file must be the matching …-labels-idx1-ubyte",
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{source}: {images.shape[0]} images but {labels_path.name} has {labels.shape[0]} "
            "labels; use the labels file of the same split"
        )
    y, class_names = encode_labels(labels, classes, source=source)
    limits.check(DataFileError, path, "max_array_bytes", "the inputs as float32", images.size * 4)
    arranged = arrange(images, kind, source=source)
    scaled = arranged.x.dtype == np.uint8
    x = arranged.x.astype(np.float32)
    if scaled:
        x /= np.float32(255.0)
    metadata: dict[str, object] = {"labels_file": labels_path.name}
    if arranged.note:
        metadata["layout"] = arranged.note
    if scaled:
        metadata["scaled"] = "uint8/255"
    stem = path.name.removesuffix(".gz")
    return Dataset(
        x=x,
        y=y,
        classes=class_names,
        name=source,
        format="idx",
        ids=[f"{stem}#{i}" for i in range(y.shape[0])],
        kind=arranged.kind,
        domain=(0.0, 1.0) if scaled else None,
        metadata=metadata,
    )


def _open(path: Path) -> BinaryIO:
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({exc.strerror or exc})") from None


def _read(fh: BinaryIO, path: Path, n: int) -> bytes:
    try:
        return fh.read(n)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        what = "a readable gzip file" if path.name.endswith(".gz") else "readable"
        raise DataFileError(path, f"is not {what} (truncated or corrupt)", _REFETCH) from exc
