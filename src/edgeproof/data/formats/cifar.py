"""CIFAR-10 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version").

Each record is 1 label byte followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row
by row), so a batch file holds ``N * 3073`` bytes. Input: one batch file, or a directory holding
``data_batch_<n>.bin`` / ``test_batch.bin`` files (all of them are read, training batches in
order, then the test batch — point at ``test_batch.bin`` to audit on the test split only).
Class names come from ``batches.meta.txt`` next to the batches (UTF-8, one name per line), else
the standard CIFAR-10 names. Images are ``(3, 32, 32)`` in ``[0, 1]``; ids are
``"<batch stem>#<index>"``, e.g. ``"data_batch_1#9999"``. The python-pickle version of CIFAR is
not read (unpickling is unsafe). The record count follows from the file sizes, which are
checked against ``max_array_bytes`` (as stored and as float32) before any file is read; a
sparse 30 GB file is refused, not read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeproof import limits
from edgeproof.data.dataset import Dataset
from edgeproof.data.formats.labels import check_class_count
from edgeproof.errors import DataFileError
from edgeproof.structured import read_text

__all__ = ["CIFAR10_CLASSES", "batch_files", "load_cifar10"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_PIXELS = 3 * 32 * 32
_RECORD = 1 + _PIXELS
_BATCH = re.compile(r"^(?:data_batch_(\d+)|test_batch)\.bin$")


def batch_files(directory: Path) -> list[Path]:
    """CIFAR-10 batches in ``directory``: ``data_batch_<n>.bin`` by n, then ``test_batch.bin``."""
    found = [p for p in directory.iterdir() if p.is_file() and _BATCH.match(p.name)]

    def order(p: Path) -> tuple[int, int]:
        match = _BATCH.match(p.name)
        number = match.group(1) if match else None
        return (1, 0) if number is None else (0, int(number))

    return sorted(found, key=order)


def load_cifar10(path: Path, *, classes: Sequence[str] | None = None) -> Dataset:
    """Read one CIFAR-10 binary batch, or every batch in a directory (not yet validated)."""
    files = batch_files(path) if path.is_dir() else [path]
    if not files:
        raise DataFileError(
            path,
            "has no CIFAR-10 batch files (data_batch_<n>.bin or test_batch.bin)",
            "Extract cifar-10-binary.tar.gz and point at its cifar-10-batches-bin folder",
        )
    counts = [_record_count(file) for file in files]
    total = sum(counts)
    limits.check(DataFileError, path, "max_array_bytes", "the batches", total * _RECORD)
    limits.check(
        DataFileError, path, "max_array_bytes", "the images as float32", total * _PIXELS * 4
    )
    x = np.empty((total, 3, 32, 32), dtype=np.float32)
    y = np.empty(sum(counts), dtype=np.int64)
    ids: list[str] = []
    start = 0
    for file, count in zip(files, counts):
        records = np.frombuffer(_read(file, count * _RECORD), dtype=np.uint8).reshape(
            count, _RECORD
        )
        stop = start + count
        y[start:stop] = records[:, 0]
        np.divide(records[:, 1:].reshape(count, 3, 32, 32), np.float32(255), out=x[start:stop])
        ids.extend(f"{file.stem}#{i}" for i in range(count))
        start = stop
    folder = path if path.is_dir() else path.parent
    names = list(classes) if classes is not None else _meta_classes(folder)
    return Dataset(
        x=x,
        y=y,
        classes=[str(c) for c in names],
        name=str(path),
        format="cifar10",
        ids=ids,
        kind="image",
        domain=(0.0, 1.0),
        metadata={"files": [f.name for f in files]},
    )


def _record_count(file: Path) -> int:
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise DataFileError(file, f"cannot be read ({exc.strerror or exc})") from None
    count, extra = divmod(size, _RECORD)
    if extra:
        raise DataFileError(
            file,
            f"has {size} bytes, not a whole number of CIFAR-10 records of {_RECORD} bytes "
            f"(1 label byte + {_PIXELS} pixel bytes; {count} records leave {extra} bytes over)",
            "Re-extract the batch; CIFAR-100 (2 label bytes) and the python version are not read",
        )
    return count


def _read(file: Path, size: int) -> bytes:
    try:
        with file.open("rb") as fh:
            data = fh.read(size + 1)
    except OSError as exc:
        raise DataFileError(file, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) != size:
        raise DataFileError(file, "changed size while being read", "Re-extract the batch")
    return data


def _meta_classes(folder: Path) -> list[str]:
    meta = folder / "batches.meta.txt"
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    text = read_text(meta, error=DataFileError, what="class-name list", limit="max_document_bytes")
    names = [n for n in (line.strip() for line in text.splitlines()) if n]
    check_class_count(len(names), str(meta), "the class-name list")
    return names or list(CIFAR10_CLASSES)
