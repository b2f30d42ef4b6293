"""Labels: raw values (integers, integral floats, numeric or free-form strings) → class indices.

Integer-valued labels are used as class indices directly; the class names are the ``classes``
given, else ``"0" .. str(max)``. String labels that are not all integers are classes by name:
indices follow the ``classes`` given, else the sorted unique names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeproof import limits
from edgeproof.errors import DataError

__all__ = ["check_class_count", "decode_names", "encode_labels"]


def encode_labels(
    raw: np.ndarray, classes: Sequence[str] | None, *, source: str
) -> tuple[np.ndarray, list[str]]:
    """Return ``(y, class_names)`` with ``y`` int64 of shape ``(N,)``.

    Args:
        raw: the labels as stored (``(N,)`` or ``(N, 1)``).
        classes: class names to use (index = label), or ``None`` to derive them.
        source: the file or dataset name, for error messages.

    Raises:
        DataError: the labels are not 1-D, not integral, or a string label is not in ``classes``.
    """
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(
            f"{source}: labels must be a 1-D array of class indices, got shape {arr.shape}; "
            "for one-hot labels save y.argmax(axis=1)"
        )
    if arr.dtype.kind == "S":
        arr = np.asarray(decode_names(arr, source=f"{source}: labels"))
    if arr.dtype.kind == "U":
        names = np.char.strip(arr)
        try:
            numeric = names.astype(np.float64)
        except ValueError:
            return _encode_names(names, classes, source=source)
        if not _integral(numeric):
            return _encode_names(names, classes, source=source)
        arr = numeric
    if arr.dtype.kind in "biu":
        y = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not _integral(arr):
            bad = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
            raise DataError(
                f"{source}: labels must be integer class indices; record {bad} has label "
                f"{arr[bad].item()!r}"
            )
        y = arr.astype(np.int64)
    else:
        raise DataError(
            f"{source}: labels have dtype {arr.dtype}; store integer class indices or class names"
        )
    if classes is not None:
        return y, [str(c) for c in classes]
    top = int(y.max()) if y.size else -1
    check_class_count(top + 1, source, "the largest label")
    return y, [str(i) for i in range(top + 1)]


def decode_names(values: np.ndarray, *, source: str) -> list[str]:
    """Class names (or label strings) from a ``bytes`` (UTF-8) or ``str`` array, flattened.

    Raises:
        DataError: the bytes are not UTF-8, or the array is not strings/numbers.
    """
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind == "S":
        out = []
        for i, raw in enumerate(flat.tolist()):
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(
                    f"{source}: entry {i} is not UTF-8 text ({raw[:20]!r}); store the names as "
                    "UTF-8 strings"
                ) from None
        return out
    if flat.dtype.kind not in "USiuf":
        raise DataError(f"{source}: has dtype {flat.dtype}; store the names as strings")
    return [str(v) for v in flat.tolist()]


def check_class_count(count: int, source: str, what: str) -> None:
    """Refuse a class count over ``max_classes`` (before a class list is built)."""
    cap = limits.current().max_classes
    if count > cap:
        raise DataError(
            f"{source}: {what} implies {count:,} classes, over the limit max_classes={cap:,}; "
            f"fix the labels, or {limits.how_to_raise('max_classes')}"
        )


def _integral(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


def _encode_names(
    names: np.ndarray, classes: Sequence[str] | None, *, source: str
) -> tuple[np.ndarray, list[str]]:
    class_names = [str(c) for c in classes] if classes is not None else sorted(set(names.tolist()))
    check_class_count(len(class_names), source, "the distinct label names")
    index = {name: i for i, name in enumerate(class_names)}
    y = np.empty(names.shape[0], dtype=np.int64)
    for i, name in enumerate(names.tolist()):
        label = index.get(name)
        if label is None:
            raise DataError(
                f"{source}: record {i} has label {name!r}, which is not one of the classes "
                f"{class_names}; add it to the class list or fix the label"
            )
        y[i] = label
    return y, class_names
