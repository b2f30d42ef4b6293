"""CSV tables (``.csv``, or gzip-compressed ``.csv.gz``): one label column, numeric features.

The first row is a header naming the columns, unless it is not: with ``header=None`` (the
default) a first row whose every cell parses as a number is taken as data, and so is one whose
only non-numbers lie in columns that hold words below too (class names as labels, as in the UCI
``iris.data``); a non-number over a column of numbers makes it a header. The columns of a
headerless file are known by position only (named ``"0"``, ``"1"``, ... in
``metadata["features"]``). ``header=True``/``False`` says it explicitly.

The label column is given by name (a header column) or by position (an ``int``, or a ``str``
holding an integer that names no header column; negative positions count from the end, ``-1`` is
the last column). A headerless file has no column names, so its label column must be given by
position.

Every column except the label column is a feature and must hold numbers; the first cell that
does not is reported by column and line. Labels may be integer indices or class names (classes
are then the sorted unique names, unless ``classes`` is given). Blank lines are skipped. Records
are ``tabular`` with shape ``(F,)``; ids are ``"<file name>#<record>"`` counting data rows from 0.
The text may be at most ``max_text_bytes`` (:mod:`edgeproof.limits`), measured after
decompression for ``.csv.gz``: parsed cells take tens of times their text size in memory.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeproof import limits
from edgeproof.data.dataset import Dataset
from edgeproof.data.formats.labels import encode_labels
from edgeproof.errors import DataFileError, param

__all__ = ["load_csv"]

_INTEGER = re.compile(r"[+-]?\d+")
_SNIFF_ROWS = 100


def load_csv(
    path: Path,
    *,
    label_column: str | int = "label",
    header: bool | None = None,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """Read a CSV (or ``.csv.gz``) file into a tabular :class:`Dataset` (not yet validated).

    Args:
        path: the file; a name ending in ``.gz`` is read through gzip.
        label_column: the label column's header name, or its position (``int``, negative from
            the end; a ``str`` such as ``"-1"`` that names no header column is a position too).
        header: whether the first row names the columns; ``None`` detects it (see above).
        classes: class names, index = label (see
            :func:`~edgeproof.data.formats.labels.encode_labels`).

    Raises:
        DataFileError: unreadable/not UTF-8/not CSV/over the size limit, empty, no such label
            column, a ragged row, or a non-numeric feature cell.
    """
    rows, lines = _read_rows(path)
    if not rows:
        raise DataFileError(path, "is empty", "Give at least one row of numbers and a label")
    first = [cell.strip() for cell in rows[0]]
    has_header = header if header is not None else _looks_like_header(first, rows[1:])
    if has_header:
        columns = first
        rows, lines = rows[1:], lines[1:]
        shape_of = "the header has"
    else:
        columns = [str(i) for i in range(len(first))]
        shape_of = "the first row has"
    guessed = first if header is None and not has_header else None
    label_at = _label_index(
        path, label_column, columns if has_header else None, len(columns), guessed
    )
    named = has_header
    features = [name for i, name in enumerate(columns) if i != label_at]
    if not features:
        raise DataFileError(
            path,
            f"has no feature columns besides the label column {_show(columns[label_at], named)}",
            "Add numeric feature columns",
        )
    for row, line in zip(rows, lines):
        if len(row) != len(columns):
            raise DataFileError(
                path,
                f"line {line} has {len(row)} fields but {shape_of} {len(columns)}",
                "Give every row one value per column",
            )

    labels = np.array([row[label_at] for row in rows], dtype=str)
    cells = [row[:label_at] + row[label_at + 1 :] for row in rows]
    x = _numbers(cells, features, named, lines, path)
    y, class_names = encode_labels(labels, classes, source=str(path))
    return Dataset(
        x=x.reshape(len(rows), len(features)),
        y=y,
        classes=class_names,
        name=str(path),
        format="csv",
        ids=[f"{path.name}#{i}" for i in range(len(rows))],
        kind="tabular",
        metadata={
            "label_column": columns[label_at] if named else label_at,
            "header": has_header,
            "features": features,
        },
    )


def _read_rows(path: Path) -> tuple[list[list[str]], list[int]]:
    """The non-blank rows of the file and the line each ends on (1-based)."""
    text = _read_text(path)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataFileError(path, f"is not valid CSV ({exc})", "Fix the quoting") from exc
    return rows, lines


def _read_text(path: Path) -> str:
    """The file's text, gunzipped for ``*.gz``, at most ``max_text_bytes`` of it."""
    cap = limits.current().max_text_bytes
    compressed = path.name.lower().endswith(".gz")
    try:
        if compressed:
            with gzip.open(path, "rb") as fh:
                raw = fh.read(cap + 1)
        else:
            limits.check(DataFileError, path, "max_text_bytes", "the CSV file", path.stat().st_size)
            raw = path.read_bytes()
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise DataFileError(
            path,
            f"is not a readable gzip file ({exc})",
            "Compress it with gzip, or drop the .gz from its name if it is plain text",
        ) from None
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if compressed:
        limits.check(DataFileError, path, "max_text_bytes", "the decompressed CSV", len(raw))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(path, "is not UTF-8 text", "Save the CSV as UTF-8") from exc


def _looks_like_header(first: list[str], rest: list[list[str]]) -> bool:
    """Whether the first row names the columns: some cell of it is not a number, in a column
    whose cells below (the next ``_SNIFF_ROWS`` rows) are all numbers. A first row whose only
    non-numbers sit in columns of words (class names as labels) is data."""
    words = [i for i, cell in enumerate(first) if not _is_number(cell)]
    if not words:
        return False
    below = rest[:_SNIFF_ROWS]
    if not below:
        return True
    for i in words:
        column = [row[i] for row in below if i < len(row)]
        if all(_is_number(cell) for cell in column):
            return True
    return False


def _label_index(
    path: Path,
    label_column: str | int,
    names: list[str] | None,
    count: int,
    guessed: list[str] | None,
) -> int:
    """Position of the label column among ``count`` columns (``names``: the header, if any;
    ``guessed``: the first row, where it was detected as data rather than told)."""
    if isinstance(label_column, str) and names is not None and label_column.strip() in names:
        return names.index(label_column.strip())
    position: int | None = None
    if isinstance(label_column, int):
        position = label_column
    elif _INTEGER.fullmatch(label_column.strip()):
        position = int(label_column)
    if position is not None:
        if -count <= position < count:
            return position % count
        fix = f"Give {param('label_column')} a position in that range, e.g. -1 for the last column"
        if guessed is not None and str(label_column).strip() in guessed:
            fix += (
                f", or pass {param('header', switch=True)} if the first row (numbers only, "
                "so read as data) names the columns"
            )
        raise DataFileError(
            path,
            f"has {count} columns, so there is no label column at position {position} "
            f"(positions 0..{count - 1}, or -{count}..-1 from the end)",
            fix,
        )
    if names is None:
        raise DataFileError(
            path,
            f"has no header row (its first row is numbers), so no column is named "
            f"'{label_column}' ({count} columns)",
            f"Give the label column by position with {param('label_column')} (-1 for the last "
            f"column), or {param('header', switch=True)} if the first row names the columns",
        )
    raise DataFileError(
        path,
        f"has no label column '{label_column}' (columns: {', '.join(names)})",
        f"Name the label column with {param('label_column')}, by name or by position "
        "(-1 for the last)",
    )


def _show(name: str, named: bool) -> str:
    return f"'{name}'" if named else name


def _numbers(
    cells: list[list[str]], features: list[str], named: bool, lines: list[int], path: Path
) -> np.ndarray:
    if not cells:
        return np.zeros((0, len(features)), dtype=np.float32)
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        pass
    for row, line in zip(cells, lines):
        for value, name in zip(row, features):
            if not _is_number(value):
                shown = "an empty value" if not value.strip() else f"non-numeric value {value!r}"
                raise DataFileError(
                    path,
                    f"column {_show(name, named)} has {shown} at line {line}",
                    "Feature columns must hold numbers; encode or drop the column, "
                    f"or make it the label column ({param('label_column')})",
                )
    return np.array([[float(value) for value in row] for row in cells], dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
