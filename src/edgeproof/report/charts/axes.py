"""Axes: the :class:`Axis` a chart is given, the data-to-pixel mapping, the laid-out frame, and
the SVG of the axis lines, ticks, tick labels, axis labels and grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edgeproof.report.charts.geometry import Rect
from edgeproof.report.charts.svg import el, fmt, text_el
from edgeproof.report.charts.text import (
    ASCENT,
    DESCENT,
    baseline_for_centre,
    text_height,
    text_width,
    truncate,
)
from edgeproof.report.charts.ticks import Ticks

__all__ = ["Axis", "Scale"]

Scale = Literal["linear", "log", "category"]
ArrayLike = Sequence[float] | np.ndarray

TICK_SIZE = 11.0
LABEL_SIZE = 12.0
TITLE_SIZE = 13.0
LEGEND_SIZE = 11.0
TICK_LEN = 4.0
TICK_GAP = 3.0
PAD = 6.0
INK = "#222222"
AXIS_INK = "#444444"
GRID = "#e8e8e8"
ROTATED_MAX = 110.0  # px: rotated category names are shortened to this


@dataclass(frozen=True)
class Axis:
    """One axis: its label, scale and (optional) limits.

    ``limits``: ``(low, high)``; either may be ``None`` (from the data). ``integer``: ticks only
    at whole numbers (counts, severities). ``categories``: the names of a ``"category"`` axis in
    order (index 0 is the leftmost column, or the top row on the y axis). ``grid``: light lines
    at the ticks.
    """

    label: str = ""
    scale: Scale = "linear"
    limits: tuple[float | None, float | None] | None = None
    integer: bool = False
    categories: tuple[str, ...] = ()
    grid: bool = True

    def __post_init__(self) -> None:
        if self.scale not in ("linear", "log", "category"):
            raise ValueError(f"Axis.scale must be linear, log or category, got {self.scale!r}")
        if self.scale == "log" and self.limits is not None:
            for v in self.limits:
                if v is not None and not v > 0:
                    raise ValueError(f"log axis limits must be > 0, got {self.limits}")


@dataclass(frozen=True)
class AxisMap:
    """Data → pixels on one axis: ``lo`` maps to pixel ``p0``, ``hi`` to ``p1``; non-positive
    values on a log axis map to NaN."""

    kind: Scale
    lo: float
    hi: float
    p0: float
    p1: float

    def __call__(self, v: ArrayLike | float) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        if self.kind == "log":
            with np.errstate(divide="ignore", invalid="ignore"):
                la = np.where(a > 0, np.log10(np.where(a > 0, a, 1.0)), np.nan)
            t = (la - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (a - self.lo) / (self.hi - self.lo)
        return self.p0 + t * (self.p1 - self.p0)

    def one(self, v: float) -> float:
        return float(self(v))


@dataclass
class Options:
    """How a chart is laid out inside a page or a :class:`~.panels.Panels` stack."""

    x_limits: tuple[float, float] | None = None
    x_tick_labels: bool = True
    x_label: bool = True
    min_left: float = 0.0
    min_right: float = 0.0


@dataclass
class Frame:
    """A laid-out chart: its size, plot rectangle, mappings, ticks and legend position."""

    width: float
    height: float
    plot: Rect
    x: AxisMap
    y: AxisMap
    xticks: Ticks
    yticks: Ticks
    legend: Literal["inside", "right", "below", "none"]
    x_cat_rotated: bool = False
    x_cat_labels: list[tuple[int, str, str]] = field(default_factory=list)
    y_cat_labels: list[tuple[int, str, str]] = field(default_factory=list)
    cbar: tuple[Rect, Ticks] | None = None


def category_width(chart_width: float) -> float:
    """The widest a y-axis category name may be before it is shortened."""
    return max(60.0, 0.38 * chart_width)


def grid_svg(x: Axis, y: Axis, f: Frame) -> str:
    p = f.plot
    parts = []
    if y.grid and y.scale != "category":
        for v in f.yticks.values:
            py = f.y.one(v)
            if p.y0 - 0.5 <= py <= p.y1 + 0.5:
                parts.append(f"M{fmt(p.x0)} {fmt(py)}H{fmt(p.x1)}")
    if x.grid and x.scale != "category":
        for v in f.xticks.values:
            px = f.x.one(v)
            if p.x0 - 0.5 <= px <= p.x1 + 0.5:
                parts.append(f"M{fmt(px)} {fmt(p.y0)}V{fmt(p.y1)}")
    if not parts:
        return ""
    return el("path", d="".join(parts), stroke=GRID, stroke_width="1", fill="none")


def _tick_label(text: str, full: str | None = None, **attrs: object) -> str:
    return text_el(text, full if full and full != text else None, fill=INK, class_="tick-label",
                   **attrs)  # fmt: skip


def axes_svg(x: Axis, y: Axis, f: Frame, opts: Options) -> str:
    """Axis lines (left and bottom), ticks, tick labels and the two axis labels."""
    p = f.plot
    out: list[str] = []
    major: list[str] = []
    minor: list[str] = []
    label_top = p.y1 + TICK_LEN + TICK_GAP
    out.append(el("line", x1=p.x0, y1=p.y1, x2=p.x1, y2=p.y1, stroke=AXIS_INK,
                  stroke_width="1"))  # fmt: skip
    if x.scale == "category":
        for i, short, full in f.x_cat_labels:
            px = f.x.one(i)
            major.append(f"M{fmt(px)} {fmt(p.y1)}v{fmt(TICK_LEN)}")
            if not opts.x_tick_labels:
                continue
            if f.x_cat_rotated:  # reads upwards, ends just below the axis
                ax = px + (ASCENT - DESCENT) / 2 * TICK_SIZE
                out.append(
                    _tick_label(
                        short,
                        full,
                        x=ax,
                        y=label_top,
                        text_anchor="end",
                        transform=f"rotate(-90 {fmt(ax)} {fmt(label_top)})",
                    )
                )
            else:
                out.append(_tick_label(short, full, x=px, y=label_top + ASCENT * TICK_SIZE,
                                       text_anchor="middle"))  # fmt: skip
    else:
        for v, s in zip(f.xticks.values, f.xticks.labels):
            px = f.x.one(v)
            if p.x0 - 0.5 <= px <= p.x1 + 0.5:
                major.append(f"M{fmt(px)} {fmt(p.y1)}v{fmt(TICK_LEN)}")
                if opts.x_tick_labels:
                    out.append(_tick_label(s, x=px, y=label_top + ASCENT * TICK_SIZE,
                                           text_anchor="middle"))  # fmt: skip
        for v in f.xticks.minor:
            px = f.x.one(v)
            if p.x0 - 0.5 <= px <= p.x1 + 0.5:
                minor.append(f"M{fmt(px)} {fmt(p.y1)}v{fmt(TICK_LEN / 2)}")
    out.append(el("line", x1=p.x0, y1=p.y0, x2=p.x0, y2=p.y1, stroke=AXIS_INK,
                  stroke_width="1"))  # fmt: skip
    lab_x = p.x0 - TICK_LEN - TICK_GAP
    if y.scale == "category":
        for i, short, full in f.y_cat_labels:
            py = f.y.one(i)
            major.append(f"M{fmt(p.x0)} {fmt(py)}h{fmt(-TICK_LEN)}")
            out.append(_tick_label(short, full, x=lab_x, y=baseline_for_centre(py, TICK_SIZE),
                                   text_anchor="end"))  # fmt: skip
    else:
        for v, s in zip(f.yticks.values, f.yticks.labels):
            py = f.y.one(v)
            if p.y0 - 0.5 <= py <= p.y1 + 0.5:
                major.append(f"M{fmt(p.x0)} {fmt(py)}h{fmt(-TICK_LEN)}")
                out.append(_tick_label(s, x=lab_x, y=baseline_for_centre(py, TICK_SIZE),
                                       text_anchor="end"))  # fmt: skip
        for v in f.yticks.minor:
            py = f.y.one(v)
            if p.y0 - 0.5 <= py <= p.y1 + 0.5:
                minor.append(f"M{fmt(p.x0)} {fmt(py)}h{fmt(-TICK_LEN / 2)}")
    if major:
        out.append(el("path", d="".join(major), stroke=AXIS_INK, stroke_width="1"))
    if minor:
        out.append(el("path", d="".join(minor), stroke=AXIS_INK, stroke_width="0.7"))
    if x.label and opts.x_label:
        out.append(_x_label(x.label, f, opts))
    if y.label:
        px, py = PAD + ASCENT * LABEL_SIZE, (p.y0 + p.y1) / 2
        short = truncate(y.label, LABEL_SIZE, p.height)
        out.append(
            text_el(short, y.label if short != y.label else None, x=px, y=py,
                    text_anchor="middle", transform=f"rotate(-90 {fmt(px)} {fmt(py)})",
                    font_size=fmt(LABEL_SIZE), fill=INK, class_="axis-label")
        )  # fmt: skip
    return "".join(out)


def x_labels_height(f: Frame, opts: Options, x: Axis) -> float:
    """Height of what sits between the x axis line and the x axis label."""
    if not opts.x_tick_labels:
        return 0.0
    if x.scale == "category" and f.x_cat_rotated:
        return max((text_width(s, TICK_SIZE) for _, s, _ in f.x_cat_labels), default=0.0)
    return text_height(TICK_SIZE)


def _x_label(label: str, f: Frame, opts: Options) -> str:
    p = f.plot
    base = p.y1 + TICK_LEN + (TICK_GAP if opts.x_tick_labels else 0)
    if opts.x_tick_labels:
        base += (
            max((text_width(s, TICK_SIZE) for _, s, _ in f.x_cat_labels), default=0.0)
            if f.x_cat_rotated
            else text_height(TICK_SIZE)
        )
    short = truncate(label, LABEL_SIZE, p.width)
    return text_el(short, label if short != label else None, x=(p.x0 + p.x1) / 2,
                   y=base + 6 + ASCENT * LABEL_SIZE, text_anchor="middle",
                   font_size=fmt(LABEL_SIZE), fill=INK, class_="axis-label")  # fmt: skip
