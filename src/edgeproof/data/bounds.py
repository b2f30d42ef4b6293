"""Per-feature value bounds from a file: one ``lo,hi`` row per feature (or channel).

Accepted: a CSV (``.csv``/``.txt``) of two numeric columns ``lo,hi``, or three ``name,lo,hi``;
an optional header row (a row whose ``lo``/``hi`` cells are not numbers); ``#`` comments and
blank lines ignored. The result feeds :attr:`edgeproof.spec.InputSpec.feature_bounds`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from edgeproof.errors import DataFileError

__all__ = ["read_feature_bounds"]

_MAX_BYTES = 8 << 20


def read_feature_bounds(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(lo, hi)`` per feature from ``path``; raises :class:`DataFileError` naming the row."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(p, "no such file", "give a CSV of lo,hi rows, one per feature")
    if p.stat().st_size > _MAX_BYTES:
        raise DataFileError(
            p, f"is larger than {_MAX_BYTES >> 20} MiB", "one lo,hi row per feature"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(
            p, f"cannot be read as UTF-8 text ({exc})", "save it as a CSV"
        ) from None
    lo: list[float] = []
    hi: list[float] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) not in (2, 3):
            raise DataFileError(
                p, f"row {n} has {len(cells)} cells", "give lo,hi or name,lo,hi per row"
            )
        a, b = cells[-2], cells[-1]
        try:
            low, high = float(a), float(b)
        except ValueError:
            if not lo:  # a header row
                continue
            raise DataFileError(
                p, f"row {n}: {a!r}, {b!r} are not numbers", "use e.g. 0,1"
            ) from None
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise DataFileError(
                p, f"row {n}: lo {low:g} is not below hi {high:g}", "every row needs finite lo < hi"
            )
        lo.append(low)
        hi.append(high)
    if not lo:
        raise DataFileError(p, "holds no lo,hi row", "give one lo,hi row per feature")
    return tuple(lo), tuple(hi)
