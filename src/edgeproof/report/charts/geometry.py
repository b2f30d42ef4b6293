"""Pixel geometry: clipping to the plot rectangle and an occupancy grid of what is drawn.

Clipping is done here, in Python, instead of with SVG ``clipPath`` (which needs ids, and ids
collide when several charts share one HTML page). Lines: Liang–Barsky per segment; polygons:
Sutherland–Hodgman; rectangles: intersection.

The :class:`Occupancy` grid (2 px cells over the plot area) records where marks are drawn, so a
legend or a point label can be put where it covers nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Occupancy", "Rect", "clip_polygon", "clip_polyline", "clip_segment"]

Point = tuple[float, float]


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in pixels (``y0`` is the top)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def contains(self, other: Rect, tolerance: float = 0.5) -> bool:
        return (
            other.x0 >= self.x0 - tolerance
            and other.x1 <= self.x1 + tolerance
            and other.y0 >= self.y0 - tolerance
            and other.y1 <= self.y1 + tolerance
        )

    def intersects(self, other: Rect, tolerance: float = 0.0) -> bool:
        return (
            min(self.x1, other.x1) - max(self.x0, other.x0) > tolerance
            and min(self.y1, other.y1) - max(self.y0, other.y0) > tolerance
        )

    def intersection(self, other: Rect) -> Rect | None:
        r = Rect(
            max(self.x0, other.x0),
            max(self.y0, other.y0),
            min(self.x1, other.x1),
            min(self.y1, other.y1),
        )
        return r if r.x1 >= r.x0 and r.y1 >= r.y0 else None


def clip_segment(a: Point, b: Point, r: Rect) -> tuple[Point, Point] | None:
    """The part of segment ``a``–``b`` inside ``r`` (Liang–Barsky), or ``None``."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0 - r.x0), (dx, r.x1 - x0), (-dy, y0 - r.y0), (dy, r.y1 - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            if t > t1:
                return None
            t0 = max(t0, t)
        else:
            if t < t0:
                return None
            t1 = min(t1, t)
    return (x0 + t0 * dx, y0 + t0 * dy), (x0 + t1 * dx, y0 + t1 * dy)


def _finite(p: Point) -> bool:
    return math.isfinite(p[0]) and math.isfinite(p[1])


def clip_polyline(
    xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray, r: Rect
) -> list[list[Point]]:
    """The runs of a polyline inside ``r``; non-finite points break the line."""
    xa, ya = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    with np.errstate(invalid="ignore"):
        inside = (xa >= r.x0) & (xa <= r.x1) & (ya >= r.y0) & (ya <= r.y1)  # False for NaN
    if xa.size > 1 and inside.all():  # nothing to clip (the common case of a long series)
        return [list(zip(xa.tolist(), ya.tolist()))]
    runs: list[list[Point]] = []
    cur: list[Point] = []
    for i in range(len(xa) - 1):
        a, b = (float(xa[i]), float(ya[i])), (float(xa[i + 1]), float(ya[i + 1]))
        if inside[i] and inside[i + 1]:
            seg: tuple[Point, Point] | None = (a, b)
        else:
            seg = clip_segment(a, b, r) if _finite(a) and _finite(b) else None
        if seg is None:
            if len(cur) > 1:
                runs.append(cur)
            cur = []
            continue
        c, d = seg
        if cur and abs(cur[-1][0] - c[0]) < 1e-6 and abs(cur[-1][1] - c[1]) < 1e-6:
            cur.append(d)
        else:
            if len(cur) > 1:
                runs.append(cur)
            cur = [c, d]
        if d != b:  # left the rectangle
            runs.append(cur)
            cur = []
    if len(cur) > 1:
        runs.append(cur)
    return runs


def clip_polygon(points: Sequence[Point], r: Rect) -> list[Point]:
    """``points`` clipped to ``r`` (Sutherland–Hodgman; a convex clip region)."""

    def clip(pts: list[Point], inside: object, cross: object) -> list[Point]:
        out: list[Point] = []
        n = len(pts)
        for i in range(n):
            cur, prev = pts[i], pts[i - 1]
            cin, pin = inside(cur), inside(prev)  # type: ignore[operator]
            if cin:
                if not pin:
                    out.append(cross(prev, cur))  # type: ignore[operator]
                out.append(cur)
            elif pin:
                out.append(cross(prev, cur))  # type: ignore[operator]
        return out

    def at_x(x: float) -> object:
        def f(p: Point, q: Point) -> Point:
            t = (x - p[0]) / (q[0] - p[0])
            return x, p[1] + t * (q[1] - p[1])

        return f

    def at_y(y: float) -> object:
        def f(p: Point, q: Point) -> Point:
            t = (y - p[1]) / (q[1] - p[1])
            return p[0] + t * (q[0] - p[0]), y

        return f

    pts = [p for p in points if _finite(p)]
    for inside, cross in (
        (lambda p: p[0] >= r.x0, at_x(r.x0)),
        (lambda p: p[0] <= r.x1, at_x(r.x1)),
        (lambda p: p[1] >= r.y0, at_y(r.y0)),
        (lambda p: p[1] <= r.y1, at_y(r.y1)),
    ):
        if not pts:
            break
        pts = clip(pts, inside, cross)
    return pts


class Occupancy:
    """Which 2-px cells of a rectangle something is drawn on."""

    CELL = 2.0

    def __init__(self, area: Rect) -> None:
        self.area = area
        rows = max(1, math.ceil(area.height / self.CELL))
        cols = max(1, math.ceil(area.width / self.CELL))
        self.grid = np.zeros((rows, cols), dtype=bool)

    def _cells(self, r: Rect) -> tuple[int, int, int, int] | None:
        if not all(math.isfinite(v) for v in (r.x0, r.y0, r.x1, r.y1)):
            return None
        a = self.area
        c0 = math.floor((r.x0 - a.x0) / self.CELL)
        c1 = math.ceil((r.x1 - a.x0) / self.CELL)
        r0 = math.floor((r.y0 - a.y0) / self.CELL)
        r1 = math.ceil((r.y1 - a.y0) / self.CELL)
        rows, cols = self.grid.shape
        c0, c1, r0, r1 = max(0, c0), min(cols, c1), max(0, r0), min(rows, r1)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1

    def rect(self, r: Rect) -> None:
        cells = self._cells(r)
        if cells is not None:
            r0, r1, c0, c1 = cells
            self.grid[r0:r1, c0:c1] = True

    def segment(self, a: Point, b: Point, half: float = 1.0) -> None:
        self.polyline([a, b], half)

    def polyline(self, pts: Sequence[Point], half: float = 1.0) -> None:
        """Cells within ``half`` px of the polyline (sampled every cell along each segment)."""
        p = np.asarray(pts, dtype=float).reshape(-1, 2)
        if p.shape[0] == 0:
            return
        if p.shape[0] == 1:
            p = np.vstack([p, p])
        a, b = p[:-1], p[1:]
        ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
        a, b = a[ok], b[ok]
        if a.shape[0] == 0:
            return
        n = np.ceil(np.hypot(*(b - a).T) / self.CELL).astype(int) + 1
        seg = np.repeat(np.arange(a.shape[0]), n)
        start = np.repeat(np.cumsum(n) - n, n)
        t = (np.arange(seg.size) - start) / np.maximum(np.repeat(n, n) - 1, 1)
        xy = a[seg] + t[:, None] * (b[seg] - a[seg])
        self._mark(xy[:, 0], xy[:, 1], half)

    def points(self, xs: np.ndarray, ys: np.ndarray, half: float) -> None:
        """Square neighbourhoods of ``half`` px around points."""
        x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        self._mark(x[ok], y[ok], half)

    def _mark(self, x: np.ndarray, y: np.ndarray, half: float) -> None:
        rows, cols = self.grid.shape
        c = np.floor((x - self.area.x0) / self.CELL).astype(int)
        r = np.floor((y - self.area.y0) / self.CELL).astype(int)
        k = max(0, math.ceil(half / self.CELL))
        for dr in range(-k, k + 1):
            for dc in range(-k, k + 1):
                rr, cc = r + dr, c + dc
                keep = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
                self.grid[rr[keep], cc[keep]] = True

    def band(self, xs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """The region between two polylines over the same (ascending) pixel x."""
        x, a, b = (np.asarray(v, dtype=float) for v in (xs, lo, hi))
        ok = np.isfinite(x) & np.isfinite(a) & np.isfinite(b)
        x, a, b = x[ok], a[ok], b[ok]
        if x.size < 2:
            return
        rows, cols = self.grid.shape
        c0 = max(0, math.floor((x.min() - self.area.x0) / self.CELL))
        c1 = min(cols, math.ceil((x.max() - self.area.x0) / self.CELL))
        centres = self.area.x0 + (np.arange(c0, c1) + 0.5) * self.CELL
        ya, yb = np.interp(centres, x, a), np.interp(centres, x, b)
        top = np.floor((np.minimum(ya, yb) - self.area.y0) / self.CELL).astype(int)
        bot = np.ceil((np.maximum(ya, yb) - self.area.y0) / self.CELL).astype(int)
        for i, c in enumerate(range(c0, c1)):
            r0, r1 = max(0, top[i]), min(rows, bot[i])
            if r0 < r1:
                self.grid[r0:r1, c] = True

    def free(self, r: Rect) -> bool:
        cells = self._cells(r)
        if cells is None:
            return True
        r0, r1, c0, c1 = cells
        return not bool(self.grid[r0:r1, c0:c1].any())
