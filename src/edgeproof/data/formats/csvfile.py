"""CSV tables: a header row, one label column, numeric feature columns.

The header row is required (it names the columns). Every column except the label column is a
feature and must hold numbers; the first cell that does not is reported by column name and line.
Labels may be integer indices or class names (classes are then the sorted unique names, unless
``classes`` is given). Blank lines are skipped. Records are ``tabular`` with shape ``(F,)``; ids are
``"<file name>#<record>"`` counting data rows from 0. The file may be at most ``max_text_bytes``
(:mod:`edgeproof.limits`): parsed cells take tens of times their text size in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeproof import limits
from edgeproof.data.dataset import Dataset
from edgeproof.data.formats.labels import encode_labels
from edgeproof.errors import DataFileError

__all__ = ["load_csv"]


def load_csv(
    path: Path, *, label_column: str = "label", classes: Sequence[str] | None = None
) -> Dataset:
    """Read a CSV file with a header row into a tabular :class:`Dataset` (not yet validated)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    limits.check(DataFileError, path, "max_text_bytes", "the CSV file", size)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows: list[list[str]] = []
            lines: list[int] = []
            if header is not None:
                for row in reader:
                    if row and any(cell.strip() for cell in row):
                        rows.append(row)
                        lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataFileError(path, "is not UTF-8 text", "Save the CSV as UTF-8") from exc
    except csv.Error as exc:
        raise DataFileError(path, f"is not valid CSV ({exc})", "Fix the quoting") from exc
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({exc.strerror or exc})") from exc

    if header is None:
        raise DataFileError(
            path, "is empty", f"Give a header row naming the columns (one of them '{label_column}')"
        )
    columns = [name.strip() for name in header]
    if label_column not in columns:
        if all(_is_number(name) for name in columns):
            raise DataFileError(
                path,
                "has no header row (the first row is numbers)",
                f"Add a first row naming the columns, one of them '{label_column}'",
            )
        raise DataFileError(
            path,
            f"has no label column '{label_column}' (columns: {', '.join(columns)})",
            "Name the label column with label_column= (--label-column)",
        )
    label_at = columns.index(label_column)
    features = [name for i, name in enumerate(columns) if i != label_at]
    if not features:
        raise DataFileError(
            path, f"has no feature columns besides '{label_column}'", "Add numeric feature columns"
        )
    for row, line in zip(rows, lines):
        if len(row) != len(columns):
            raise DataFileError(
                path,
                f"line {line} has {len(row)} fields but the header has {len(columns)}",
                "Give every row one value per column",
            )

    labels = np.array([row[label_at] for row in rows], dtype=str)
    cells = [row[:label_at] + row[label_at + 1 :] for row in rows]
    x = _numbers(cells, features, lines, path)
    y, class_names = encode_labels(labels, classes, source=str(path))
    return Dataset(
        x=x.reshape(len(rows), len(features)),
        y=y,
        classes=class_names,
        name=str(path),
        format="csv",
        ids=[f"{path.name}#{i}" for i in range(len(rows))],
        kind="tabular",
        metadata={"label_column": label_column, "features": features},
    )


def _numbers(
    cells: list[list[str]], features: list[str], lines: list[int], path: Path
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
                    f"column '{name}' has {shown} at line {line}",
                    "Feature columns must hold numbers; encode or drop the column, "
                    "or name it as the label column",
                )
    return np.array([[float(value) for value in row] for row in cells], dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
