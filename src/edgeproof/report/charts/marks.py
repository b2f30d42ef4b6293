"""The marks a chart draws, each in data units: its extent (for the limits), where it is drawn
(for the occupancy grid), its legend entry and its SVG."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Literal

import numpy as np

from edgeproof.report.charts.axes import (
    Frame,
)
from edgeproof.report.charts.colors import GREY
from edgeproof.report.charts.geometry import (
    Occupancy,
    Rect,
    clip_polygon,
    clip_polyline,
    clip_segment,
)
from edgeproof.report.charts.svg import el, fmt, text_el
from edgeproof.report.charts.text import (
    Anchor,
    TextBox,
    baseline_for_centre,
    text_box,
)

__all__ = ["Entry", "Mark", "Marker"]

Marker = Literal["circle", "square", "triangle", "diamond"]
EntryKind = Literal["line", "rect", "band", "point"]
_NAN_RECT = Rect(math.nan, math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Entry:
    """One legend entry: its label and the swatch that stands for the mark."""

    label: str
    kind: EntryKind
    color: str
    dash: str | None = None
    marker: Marker | None = None
    width: float = 1.5
    opacity: float = 1.0


def tooltip(text: str | None) -> str | None:
    return None if not text else f"<title>{escape(text, quote=False)}</title>"


def _inside(p: Rect, x: float, y: float) -> bool:
    return (
        math.isfinite(x)
        and math.isfinite(y)
        and p.x0 - 0.5 <= x <= p.x1 + 0.5
        and p.y0 - 0.5 <= y <= p.y1 + 0.5
    )


def _points(xy: list[tuple[float, float]]) -> str:
    return " ".join(f"{fmt(a)},{fmt(b)}" for a, b in xy)


def marker_svg(kind: Marker, x: float, y: float, r: float, color: str) -> str:
    """A point marker of radius ``r`` centred on ``(x, y)``."""
    if kind == "square":
        return el("rect", x=x - r, y=y - r, width=2 * r, height=2 * r, fill=color)
    if kind == "triangle":
        tri = [(x, y - 1.2 * r), (x - 1.1 * r, y + 0.8 * r), (x + 1.1 * r, y + 0.8 * r)]
        return el("polygon", points=_points(tri), fill=color)
    if kind == "diamond":
        dia = [(x, y - 1.3 * r), (x + 1.3 * r, y), (x, y + 1.3 * r), (x - 1.3 * r, y)]
        return el("polygon", points=_points(dia), fill=color)
    return el("circle", cx=x, cy=y, r=fmt(r), fill=color)


def swatch_svg(e: Entry, x: float, cy: float) -> str:
    """The 18 px legend swatch of ``e``, vertically centred on ``cy``."""
    if e.kind == "line":
        s = el(
            "line",
            x1=x,
            y1=cy,
            x2=x + 18,
            y2=cy,
            stroke=e.color,
            stroke_width=fmt(max(e.width, 1.2)),
            stroke_dasharray=e.dash,
        )
        if e.marker:
            s += marker_svg(e.marker, x + 9, cy, 3.0, e.color)
        return s
    if e.kind == "point":
        return el("circle", cx=x + 9, cy=cy, r="3", fill=e.color)
    op = None if e.opacity >= 1 else fmt(max(e.opacity, 0.25))
    return el("rect", x=x + 1, y=cy - 5, width=16, height=10, fill=e.color, fill_opacity=op)


@dataclass
class Mark:
    """Base of every mark: a legend label, extents, occupancy, SVG."""

    label: str | None

    def xs(self) -> np.ndarray:
        return np.empty(0)

    def ys(self) -> np.ndarray:
        return np.empty(0)

    def sticky(self, axis: Literal["x", "y"]) -> list[float]:
        """Values the automatic limits do not pad beyond (a bar's baseline)."""
        return []

    def entry(self) -> Entry | None:
        return None

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        """Mark the cells this mark draws on (``pts``: only the points of scatters)."""

    def svg(self, f: Frame) -> str:
        return ""


@dataclass
class Line(Mark):
    x: np.ndarray
    y: np.ndarray
    color: str
    width: float
    dash: str | None
    marker: Marker | None
    marker_size: float
    opacity: float

    def xs(self) -> np.ndarray:
        return self.x

    def ys(self) -> np.ndarray:
        return self.y

    def entry(self) -> Entry | None:
        if not self.label:
            return None
        return Entry(self.label, "line", self.color, self.dash, self.marker, self.width)

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        px, py = f.x(self.x), f.y(self.y)
        for run in clip_polyline(px, py, f.plot):
            occ.polyline(run, self.width / 2 + 1)
        if self.marker:
            occ.points(px, py, self.marker_size + 1)

    def svg(self, f: Frame) -> str:
        px, py = f.x(self.x), f.y(self.y)
        parts = [
            el(
                "polyline",
                points=_points(run),
                fill="none",
                stroke=self.color,
                stroke_width=fmt(self.width),
                stroke_dasharray=self.dash,
                stroke_linejoin="round",
                stroke_opacity=None if self.opacity >= 1 else fmt(self.opacity),
            )
            for run in clip_polyline(px, py, f.plot)
        ]
        if self.marker:
            parts += [
                marker_svg(self.marker, x, y, self.marker_size, self.color)
                for x, y in zip(px, py)
                if _inside(f.plot, x, y)
            ]
        return "".join(parts)


@dataclass
class Scatter(Mark):
    x: np.ndarray
    y: np.ndarray
    color: str
    size: float
    opacity: float
    point_labels: list[str | None] | None

    def xs(self) -> np.ndarray:
        return self.x

    def ys(self) -> np.ndarray:
        return self.y

    def entry(self) -> Entry | None:
        return None if not self.label else Entry(self.label, "point", self.color)

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        px, py = f.x(self.x), f.y(self.y)
        occ.points(px, py, self.size + 1)
        pts.points(px, py, self.size + 1)

    def svg(self, f: Frame) -> str:
        px, py = f.x(self.x), f.y(self.y)
        labels = self.point_labels or [None] * px.size
        circles = [
            el("circle", tooltip(labels[i]), cx=float(x), cy=float(y), r=fmt(self.size))
            for i, (x, y) in enumerate(zip(px, py))
            if _inside(f.plot, x, y)
        ]
        op = None if self.opacity >= 1 else fmt(self.opacity)
        return el("g", "".join(circles), fill=self.color, fill_opacity=op)


@dataclass
class Rects(Mark):
    """Bars: ``x0..x1`` × ``y0..y1`` in data units; a NaN ``y0`` (``x0``) is the axis floor."""

    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    color: str | list[str]
    stroke: str | None
    opacity: float
    tooltips: list[str] | None
    horizontal: bool

    def xs(self) -> np.ndarray:
        return np.concatenate([self.x0[np.isfinite(self.x0)], self.x1])

    def ys(self) -> np.ndarray:
        return np.concatenate([self.y0[np.isfinite(self.y0)], self.y1])

    def sticky(self, axis: Literal["x", "y"]) -> list[float]:
        base = self.x0 if self.horizontal else self.y0
        if (axis == "x") != self.horizontal:
            return []
        return sorted({float(v) for v in base if np.isfinite(v)})

    def entry(self) -> Entry | None:
        if not self.label:
            return None
        c = self.color if isinstance(self.color, str) else (self.color[0] if self.color else GREY)
        return Entry(self.label, "rect", c, opacity=self.opacity)

    def rects(self, f: Frame) -> list[Rect]:
        """Pixel rectangles, clipped to the plot (NaN where nothing is drawn)."""
        out = []
        for i in range(self.x0.size):
            x0 = f.plot.x0 if not np.isfinite(self.x0[i]) else f.x.one(self.x0[i])
            y0 = f.plot.y1 if not np.isfinite(self.y0[i]) else f.y.one(self.y0[i])
            x1, y1 = f.x.one(self.x1[i]), f.y.one(self.y1[i])
            if not all(math.isfinite(v) for v in (x0, x1, y0, y1)):
                out.append(_NAN_RECT)
                continue
            r = Rect(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            out.append(r.intersection(f.plot) or _NAN_RECT)
        return out

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        for r in self.rects(f):
            occ.rect(r)

    def svg(self, f: Frame) -> str:
        parts = []
        for i, r in enumerate(self.rects(f)):
            if not math.isfinite(r.x0):
                continue
            color = self.color if isinstance(self.color, str) else self.color[i]
            tip = tooltip(self.tooltips[i] if self.tooltips is not None else None)
            parts.append(
                el("rect", tip, x=r.x0, y=r.y0, width=r.width, height=r.height, fill=color)
            )
        return el(
            "g",
            "".join(parts),
            stroke=self.stroke,
            stroke_width=None if self.stroke is None else "0.8",
            fill_opacity=None if self.opacity >= 1 else fmt(self.opacity),
        )


def _runs(ok: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True."""
    out: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(ok):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(ok)))
    return out


@dataclass
class Band(Mark):
    x: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    color: str
    opacity: float

    def xs(self) -> np.ndarray:
        return self.x

    def ys(self) -> np.ndarray:
        return np.concatenate([self.lo, self.hi])

    def entry(self) -> Entry | None:
        if not self.label:
            return None
        return Entry(self.label, "band", self.color, opacity=self.opacity)

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        px = f.x(self.x)
        order = np.argsort(px, kind="stable")
        occ.band(px[order], f.y(self.lo)[order], f.y(self.hi)[order])

    def svg(self, f: Frame) -> str:
        px, lo, hi = f.x(self.x), f.y(self.lo), f.y(self.hi)
        parts = []
        for a, b in _runs(np.isfinite(px) & np.isfinite(lo) & np.isfinite(hi)):
            idx = range(a, b)
            ring = [(float(px[i]), float(lo[i])) for i in idx]
            ring += [(float(px[i]), float(hi[i])) for i in reversed(idx)]
            poly = clip_polygon(ring, f.plot)
            if len(poly) >= 3:
                parts.append(
                    el(
                        "polygon",
                        points=_points(poly),
                        fill=self.color,
                        fill_opacity=fmt(self.opacity),
                        stroke="none",
                    )
                )
        return "".join(parts)


@dataclass
class ErrorBars(Mark):
    x: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    color: str
    cap: float
    width: float

    def xs(self) -> np.ndarray:
        return self.x

    def ys(self) -> np.ndarray:
        return np.concatenate([self.lo, self.hi])

    def entry(self) -> Entry | None:
        return None if not self.label else Entry(self.label, "line", self.color, width=self.width)

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        for x, a, b in zip(f.x(self.x), f.y(self.lo), f.y(self.hi)):
            if math.isfinite(x + a + b):
                occ.rect(Rect(x - self.cap - 1, min(a, b) - 1, x + self.cap + 1, max(a, b) + 1))

    def svg(self, f: Frame) -> str:
        d = []
        for x, a, b in zip(f.x(self.x), f.y(self.lo), f.y(self.hi)):
            seg = clip_segment((x, a), (x, b), f.plot) if math.isfinite(a + b + x) else None
            if seg is None:
                continue
            (x0, y0), (_, y1) = seg
            d.append(f"M{fmt(x0)} {fmt(y0)}V{fmt(y1)}")
            for yy, orig in ((y0, a), (y1, b)):
                if abs(yy - orig) < 0.01:  # a cap only where the bar was not clipped
                    d.append(f"M{fmt(x - self.cap)} {fmt(yy)}H{fmt(x + self.cap)}")
        if not d:
            return ""
        return el(
            "path", d="".join(d), stroke=self.color, stroke_width=fmt(self.width), fill="none"
        )


@dataclass
class RefLine(Mark):
    horizontal: bool
    value: float
    color: str
    width: float
    dash: str | None

    def xs(self) -> np.ndarray:
        return np.empty(0) if self.horizontal else np.array([self.value])

    def ys(self) -> np.ndarray:
        return np.array([self.value]) if self.horizontal else np.empty(0)

    def entry(self) -> Entry | None:
        if not self.label:
            return None
        return Entry(self.label, "line", self.color, self.dash, None, self.width)

    def segment(self, f: Frame) -> tuple[tuple[float, float], tuple[float, float]] | None:
        p = f.plot
        if self.horizontal:
            y = f.y.one(self.value)
            if not math.isfinite(y) or not p.y0 - 0.5 <= y <= p.y1 + 0.5:
                return None
            return (p.x0, y), (p.x1, y)
        x = f.x.one(self.value)
        if not math.isfinite(x) or not p.x0 - 0.5 <= x <= p.x1 + 0.5:
            return None
        return (x, p.y0), (x, p.y1)

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        seg = self.segment(f)
        if seg is not None:
            occ.segment(*seg, half=self.width / 2 + 1)

    def svg(self, f: Frame) -> str:
        seg = self.segment(f)
        if seg is None:
            return ""
        (x0, y0), (x1, y1) = seg
        return el(
            "line",
            x1=x0,
            y1=y0,
            x2=x1,
            y2=y1,
            stroke=self.color,
            stroke_width=fmt(self.width),
            stroke_dasharray=self.dash,
        )


@dataclass
class Text(Mark):
    """Text centred vertically on a data point, offset by ``(dx, dy)`` px."""

    x: float
    y: float
    text: str
    anchor: Anchor
    dx: float
    dy: float
    color: str
    size: float

    def box(self, f: Frame) -> TextBox:
        x = f.x.one(self.x) + self.dx
        y = baseline_for_centre(f.y.one(self.y) + self.dy, self.size)
        return text_box(self.text, x, y, self.size, self.anchor, role="annotation")

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        b = self.box(f)
        occ.rect(Rect(b.x0, b.y0, b.x1, b.y1))

    def svg(self, f: Frame) -> str:
        x, y = f.x.one(self.x) + self.dx, f.y.one(self.y) + self.dy
        if not (math.isfinite(x) and math.isfinite(y)):
            return ""
        return text_el(
            self.text,
            x=x,
            y=baseline_for_centre(y, self.size),
            text_anchor=self.anchor,
            font_size=fmt(self.size),
            fill=self.color,
            class_="annotation",
        )


@dataclass
class Key(Mark):
    """A legend entry that draws nothing (what a colour means when bars are coloured singly)."""

    kind: EntryKind
    color: str
    dash: str | None

    def entry(self) -> Entry | None:
        return None if not self.label else Entry(self.label, self.kind, self.color, self.dash)
