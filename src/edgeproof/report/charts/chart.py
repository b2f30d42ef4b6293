"""One chart: axes, marks, layout, legend, and its SVG.

A :class:`Chart` collects marks in data units (``line``, ``scatter``, ``bars``, ``barh``,
``step``, ``band``, ``errorbars``, ``hline``/``vline``, ``heatmap``, ``image``, ``text``) and lays
itself out when :meth:`Chart.svg` is called:

1. limits: the axis' own, else the data's range plus 4 % on each side (none beyond a bar's
   baseline); log axes pad in decades; category axes span their categories;
2. ticks (:mod:`.ticks`), as many as fit without their labels touching;
3. margins sized to the tick labels, axis labels, title, colour bar and an outside legend;
4. per-point labels, greedily: each label tries 8 directions around its point at growing
   distances and takes the first box that covers no drawn mark, no other text and stays inside
   the plot; moved labels get a leader line; a label that fits nowhere is left out (its text
   stays in the point's tooltip);
5. the legend: inside the plot at the first corner or edge where it covers nothing drawn, else
   outside, right of the plot (when it is narrow) or below.

Text is 11–13 px; every text element carries a ``class`` naming its role, and
:meth:`Chart.text_boxes` returns the estimated box of each (:mod:`.text`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from html import escape
from typing import Literal

import numpy as np

from edgeproof.report.charts.colors import (
    BLACK,
    GREY,
    ramp,
    ramp_rgb,
    series_color,
    text_color_on,
)
from edgeproof.report.charts.geometry import (
    Occupancy,
    Rect,
    clip_polygon,
    clip_polyline,
    clip_segment,
)
from edgeproof.report.charts.svg import el, fmt, png_data_uri, text_el
from edgeproof.report.charts.text import (
    FONT_FAMILY,
    Anchor,
    TextBox,
    baseline_for_centre,
    svg_text_boxes,
    text_box,
    text_height,
    text_width,
    truncate,
)
from edgeproof.report.charts.ticks import Ticks, linear_ticks, log_ticks

__all__ = ["Axis", "Chart", "LegendPosition", "Marker", "Scale"]

Scale = Literal["linear", "log", "category"]
Marker = Literal["circle", "square", "triangle", "diamond"]
LegendPosition = Literal["auto", "inside", "right", "below", "none"]
Dash = Literal["solid", "dashed", "dotted"] | str | None
ArrayLike = Sequence[float] | np.ndarray

TICK_SIZE = 11.0
LABEL_SIZE = 12.0
TITLE_SIZE = 13.0
LEGEND_SIZE = 11.0
TICK_LEN = 4.0
PAD = 6.0
INK = "#222222"
AXIS_INK = "#444444"
GRID = "#e8e8e8"
_DASH = {"solid": None, "dashed": "6 3", "dotted": "1.5 2.5"}


@dataclass(frozen=True)
class Axis:
    """One axis: its label, scale and (optional) limits.

    ``limits``: ``(low, high)``; either may be ``None`` (from the data). ``integer``: ticks only
    at whole numbers (counts, severities). ``categories``: the names of a ``"category"`` axis in
    order (index 0 is the leftmost column, or the top row on the y axis).
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


# ---------------------------------------------------------------- scales


@dataclass(frozen=True)
class _Scale:
    kind: Scale
    lo: float
    hi: float
    p0: float  # pixel of lo
    p1: float  # pixel of hi

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


# ---------------------------------------------------------------- marks


@dataclass
class _Mark:
    label: str | None

    def xs(self) -> np.ndarray:
        return np.empty(0)

    def ys(self) -> np.ndarray:
        return np.empty(0)

    def sticky_y(self) -> list[float]:
        return []

    def sticky_x(self) -> list[float]:
        return []


@dataclass
class _Line(_Mark):
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


@dataclass
class _Scatter(_Mark):
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


@dataclass
class _Rects(_Mark):
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

    def sticky_y(self) -> list[float]:
        return [] if self.horizontal else sorted({float(v) for v in self.y0 if np.isfinite(v)})

    def sticky_x(self) -> list[float]:
        return sorted({float(v) for v in self.x0 if np.isfinite(v)}) if self.horizontal else []


@dataclass
class _Band(_Mark):
    x: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    color: str
    opacity: float

    def xs(self) -> np.ndarray:
        return self.x

    def ys(self) -> np.ndarray:
        return np.concatenate([self.lo, self.hi])


@dataclass
class _ErrorBars(_Mark):
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


@dataclass
class _RefLine(_Mark):
    horizontal: bool
    value: float
    color: str
    width: float
    dash: str | None

    def xs(self) -> np.ndarray:
        return np.empty(0) if self.horizontal else np.array([self.value])

    def ys(self) -> np.ndarray:
        return np.array([self.value]) if self.horizontal else np.empty(0)


@dataclass
class _Heatmap(_Mark):
    values: np.ndarray
    vmin: float
    vmax: float
    ramp: str
    annotations: list[list[str]] | None
    colorbar: str | None
    tooltips: list[list[str]] | None


@dataclass
class _Image(_Mark):
    values: np.ndarray
    extent: tuple[float, float, float, float]  # x0, x1, y0, y1 in data units
    vmin: float
    vmax: float
    ramp: str
    mode: Literal["rects", "png"]

    def xs(self) -> np.ndarray:
        return np.array(self.extent[:2])

    def ys(self) -> np.ndarray:
        return np.array(self.extent[2:])


@dataclass
class _Text(_Mark):
    x: float
    y: float
    text: str
    anchor: Anchor
    dx: float
    dy: float
    color: str
    size: float


@dataclass
class _Key(_Mark):
    """A legend entry that draws nothing (a colour's meaning, e.g. bars coloured by class)."""

    kind: Literal["line", "rect", "band", "point"]
    color: str
    dash: str | None


@dataclass(frozen=True)
class _Entry:
    label: str
    kind: Literal["line", "rect", "band", "point"]
    color: str
    dash: str | None = None
    marker: Marker | None = None
    width: float = 1.5
    opacity: float = 1.0


# ---------------------------------------------------------------- layout


@dataclass
class _Options:
    """How a chart is laid out inside a page or a :class:`~.panels.Panels` stack."""

    x_limits: tuple[float, float] | None = None
    x_tick_labels: bool = True
    x_label: bool = True
    min_left: float = 0.0
    min_right: float = 0.0


@dataclass
class _Frame:
    width: float
    height: float
    plot: Rect
    x: _Scale
    y: _Scale
    xticks: Ticks
    yticks: Ticks
    left: float
    right: float
    legend: Literal["inside", "right", "below", "none"]
    x_cat_rotated: bool = False
    x_cat_labels: list[tuple[int, str, str]] = field(default_factory=list)
    y_cat_labels: list[tuple[int, str, str]] = field(default_factory=list)
    cbar: tuple[Rect, Ticks] | None = None


def _dash(d: Dash) -> str | None:
    if d is None:
        return None
    return _DASH.get(d, d)


def _arr(v: ArrayLike | float, n: int | None = None) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.ndim == 0 and n is not None:
        return np.full(n, float(a))
    return a.reshape(-1)


class Chart:
    """A chart of ``width`` × ``height`` pixels with axes ``x`` and ``y``.

    Marks are drawn in the order they are added (later on top); the legend lists every mark
    given a ``label``, in that order unless :meth:`legend` says otherwise.
    """

    def __init__(
        self,
        width: float = 560,
        height: float = 320,
        *,
        x: Axis | None = None,
        y: Axis | None = None,
        title: str = "",
    ) -> None:
        if width < 120 or height < 80:
            raise ValueError(f"a chart needs at least 120×80 px, got {width}×{height}")
        self.width = float(width)
        self.height = float(height)
        self.x = x or Axis()
        self.y = y or Axis()
        self.title = title
        self._marks: list[_Mark] = []
        self._legend: LegendPosition = "auto"
        self._legend_order: tuple[str, ...] = ()
        self._series = 0
        self._tick_cache: dict[tuple[Axis, float, float, float, bool], Ticks] = {}

    # ------------------------------------------------------------ marks

    def _color(self, color: str | None) -> str:
        if color is not None:
            return color
        c = series_color(self._series)
        self._series += 1
        return c

    def _pos(self, axis: Axis, v: ArrayLike | Sequence[str] | float) -> np.ndarray:
        """Data positions; category names become their indices."""
        if axis.scale == "category":
            items = [v] if isinstance(v, str | float | int) else list(v)  # type: ignore[arg-type]
            out = []
            for it in items:
                if isinstance(it, str):
                    if it not in axis.categories:
                        raise ValueError(f"{it!r} is not a category of this axis")
                    out.append(float(axis.categories.index(it)))
                else:
                    out.append(float(it))  # type: ignore[arg-type]
            return np.asarray(out, dtype=float)
        return _arr(v)  # type: ignore[arg-type]

    def line(
        self,
        x: ArrayLike,
        y: ArrayLike,
        *,
        label: str | None = None,
        color: str | None = None,
        width: float = 1.5,
        dash: Dash = None,
        marker: Marker | None = None,
        marker_size: float = 3.0,
        opacity: float = 1.0,
    ) -> Chart:
        """A polyline through ``(x, y)``; NaN breaks it; ``marker`` draws each point."""
        xs, ys = self._pos(self.x, x), self._pos(self.y, y)
        self._check_len(xs, ys, "line")
        self._marks.append(
            _Line(
                label, xs, ys, self._color(color), width, _dash(dash), marker, marker_size, opacity
            )
        )
        return self

    def step(
        self,
        x: ArrayLike,
        y: ArrayLike,
        *,
        where: Literal["pre", "post", "mid"] = "post",
        label: str | None = None,
        color: str | None = None,
        width: float = 1.5,
        dash: Dash = None,
    ) -> Chart:
        """A step function: ``post`` holds ``y[i]`` on ``[x[i], x[i+1])`` (matplotlib's
        ``where`` convention)."""
        xs, ys = self._pos(self.x, x), self._pos(self.y, y)
        self._check_len(xs, ys, "step")
        if xs.size:
            if where == "post":
                px = np.repeat(xs, 2)[1:]
                py = np.repeat(ys, 2)[:-1]
            elif where == "pre":
                px = np.repeat(xs, 2)[:-1]
                py = np.repeat(ys, 2)[1:]
            else:
                mids = (xs[:-1] + xs[1:]) / 2
                px = np.concatenate([[xs[0]], np.repeat(mids, 2), [xs[-1]]])
                py = np.repeat(ys, 2)
        else:
            px, py = xs, ys
        self._marks.append(
            _Line(label, px, py, self._color(color), width, _dash(dash), None, 0.0, 1.0)
        )
        return self

    def scatter(
        self,
        x: ArrayLike,
        y: ArrayLike,
        *,
        label: str | None = None,
        color: str | None = None,
        size: float = 2.5,
        opacity: float = 0.75,
        point_labels: Sequence[str | None] | None = None,
    ) -> Chart:
        """Points of radius ``size``; ``point_labels`` (one per point, ``None`` for none) are
        placed without overlap, in the given order (put the important ones first)."""
        xs, ys = self._pos(self.x, x), self._pos(self.y, y)
        self._check_len(xs, ys, "scatter")
        labels = None if point_labels is None else list(point_labels)
        if labels is not None and len(labels) != xs.size:
            raise ValueError(f"point_labels has {len(labels)} entries for {xs.size} points")
        self._marks.append(
            _Scatter(label, xs, ys, self._color(color), size, opacity, labels)
        )
        return self

    def bars(
        self,
        x: ArrayLike | Sequence[str],
        height: ArrayLike,
        *,
        width: ArrayLike | float = 0.8,
        align: Literal["center", "edge"] = "center",
        bottom: ArrayLike | float | None = 0.0,
        label: str | None = None,
        color: str | Sequence[str] | None = None,
        stroke: str | None = "#ffffff",
        opacity: float = 1.0,
        tooltips: Sequence[str] | None = None,
    ) -> Chart:
        """Vertical bars at ``x`` (centres, or left edges with ``align="edge"``) from ``bottom``
        to ``bottom + height``; ``bottom=None`` starts them at the axis floor (log axes)."""
        xs = self._pos(self.x, x)
        h = _arr(height)
        self._check_len(xs, h, "bars")
        w = _arr(width, xs.size)
        x0 = xs if align == "edge" else xs - w / 2
        b = np.full(xs.size, np.nan) if bottom is None else _arr(bottom, xs.size)
        top = h if bottom is None else b + h
        self._add_rects(
            label, x0, x0 + w, b, top, color, stroke, opacity, tooltips, horizontal=False
        )
        return self

    def histogram(
        self,
        edges: ArrayLike,
        heights: ArrayLike,
        *,
        bottom: ArrayLike | float | None = 0.0,
        label: str | None = None,
        color: str | Sequence[str] | None = None,
        stroke: str | None = "#ffffff",
        opacity: float = 1.0,
        tooltips: Sequence[str] | None = None,
    ) -> Chart:
        """Bars between consecutive ``edges`` (``len(heights) + 1`` of them)."""
        e = _arr(edges)
        h = _arr(heights)
        if e.size != h.size + 1:
            raise ValueError(f"histogram: {e.size} edges for {h.size} bins")
        return self.bars(
            e[:-1],
            h,
            width=np.diff(e),
            align="edge",
            bottom=bottom,
            label=label,
            color=color,
            stroke=stroke,
            opacity=opacity,
            tooltips=tooltips,
        )

    def barh(
        self,
        y: ArrayLike | Sequence[str],
        length: ArrayLike,
        *,
        thickness: ArrayLike | float = 0.7,
        left: ArrayLike | float | None = 0.0,
        label: str | None = None,
        color: str | Sequence[str] | None = None,
        stroke: str | None = None,
        opacity: float = 1.0,
        tooltips: Sequence[str] | None = None,
    ) -> Chart:
        """Horizontal bars centred on ``y`` (category names or positions) from ``left`` to
        ``left + length``."""
        ys = self._pos(self.y, y)
        ln = _arr(length)
        self._check_len(ys, ln, "barh")
        t = _arr(thickness, ys.size)
        lf = np.full(ys.size, np.nan) if left is None else _arr(left, ys.size)
        right = ln if left is None else lf + ln
        self._add_rects(
            label, lf, right, ys - t / 2, ys + t / 2, color, stroke, opacity, tooltips, True
        )
        return self

    def _add_rects(
        self,
        label: str | None,
        x0: np.ndarray,
        x1: np.ndarray,
        y0: np.ndarray,
        y1: np.ndarray,
        color: str | Sequence[str] | None,
        stroke: str | None,
        opacity: float,
        tooltips: Sequence[str] | None,
        horizontal: bool,
    ) -> None:
        if isinstance(color, str) or color is None:
            colors: str | list[str] = self._color(color)
        else:
            colors = list(color)
            if len(colors) != x0.size:
                raise ValueError(f"{len(colors)} colours for {x0.size} bars")
        tips = None if tooltips is None else list(tooltips)
        self._marks.append(
            _Rects(label, x0, x1, y0, y1, colors, stroke, opacity, tips, horizontal)
        )

    def band(
        self,
        x: ArrayLike,
        low: ArrayLike,
        high: ArrayLike,
        *,
        label: str | None = None,
        color: str = GREY,
        opacity: float = 0.2,
    ) -> Chart:
        """The region between ``low`` and ``high`` over ``x`` (an interval, a ±sd band)."""
        xs, lo, hi = self._pos(self.x, x), _arr(low), _arr(high)
        self._check_len(xs, lo, "band")
        self._check_len(xs, hi, "band")
        self._marks.append(_Band(label, xs, lo, hi, color, opacity))
        return self

    def errorbars(
        self,
        x: ArrayLike,
        low: ArrayLike,
        high: ArrayLike,
        *,
        label: str | None = None,
        color: str = BLACK,
        cap: float = 3.0,
        width: float = 1.0,
    ) -> Chart:
        """Vertical error bars from ``low`` to ``high`` (absolute values, not offsets)."""
        xs, lo, hi = self._pos(self.x, x), _arr(low), _arr(high)
        self._check_len(xs, lo, "errorbars")
        self._check_len(xs, hi, "errorbars")
        self._marks.append(_ErrorBars(label, xs, lo, hi, color, cap, width))
        return self

    def hline(
        self,
        y: float,
        *,
        label: str | None = None,
        color: str = GREY,
        width: float = 1.0,
        dash: Dash = "dashed",
    ) -> Chart:
        """A horizontal reference line across the plot."""
        self._marks.append(_RefLine(label, True, float(y), color, width, _dash(dash)))
        return self

    def vline(
        self,
        x: float,
        *,
        label: str | None = None,
        color: str = GREY,
        width: float = 1.0,
        dash: Dash = "dashed",
    ) -> Chart:
        """A vertical reference line across the plot."""
        self._marks.append(_RefLine(label, False, float(x), color, width, _dash(dash)))
        return self

    def heatmap(
        self,
        values: np.ndarray,
        *,
        rows: Sequence[str],
        cols: Sequence[str],
        vmin: float = 0.0,
        vmax: float = 1.0,
        color_ramp: str = "blues",
        annotations: Sequence[Sequence[str]] | None = None,
        colorbar: str | None = None,
        tooltips: Sequence[Sequence[str]] | None = None,
    ) -> Chart:
        """A matrix of cells (row 0 at the top) coloured by value; square cells. ``annotations``
        (strings per cell, ``""`` for none) are written in the cells when they fit; the axes
        become category axes named ``rows`` and ``cols``; ``colorbar`` labels a colour bar."""
        v = np.asarray(values, dtype=float)
        if v.ndim != 2 or v.shape != (len(rows), len(cols)):
            raise ValueError(f"heatmap values {v.shape} do not match {len(rows)}×{len(cols)}")
        self.x = replace(self.x, scale="category", categories=tuple(cols), grid=False)
        self.y = replace(self.y, scale="category", categories=tuple(rows), grid=False)
        ann = None if annotations is None else [list(r) for r in annotations]
        tips = None if tooltips is None else [list(r) for r in tooltips]
        self._marks.append(_Heatmap(None, v, vmin, vmax, color_ramp, ann, colorbar, tips))
        return self

    def image(
        self,
        values: np.ndarray,
        *,
        extent: tuple[float, float, float, float] | None = None,
        vmin: float | None = None,
        vmax: float | None = None,
        color_ramp: str = "viridis",
        mode: Literal["auto", "rects", "png"] = "auto",
    ) -> Chart:
        """A small 2-D array drawn as cells (row 0 at the top of ``extent = (x0, x1, y0, y1)``,
        default ``(-0.5, W-0.5, -0.5, H-0.5)``): SVG rectangles up to 32×32 cells, else one
        PNG as a ``data:image/png`` URI (which the report's sanitiser allows)."""
        v = np.asarray(values, dtype=float)
        if v.ndim != 2 or v.size == 0:
            raise ValueError(f"image needs a non-empty 2-D array, got shape {v.shape}")
        h, w = v.shape
        ext = extent or (-0.5, w - 0.5, -0.5, h - 0.5)
        finite = v[np.isfinite(v)]
        lo = float(finite.min()) if vmin is None and finite.size else (vmin or 0.0)
        hi = float(finite.max()) if vmax is None and finite.size else (vmax or 1.0)
        m: Literal["rects", "png"] = (
            ("rects" if v.size <= 1024 else "png") if mode == "auto" else mode
        )
        self._marks.append(_Image(None, v, ext, lo, hi, color_ramp, m))
        return self

    def text(
        self,
        x: float | str,
        y: float | str,
        text: str,
        *,
        anchor: Anchor = "start",
        dx: float = 0.0,
        dy: float = 0.0,
        color: str = INK,
        size: float = TICK_SIZE,
    ) -> Chart:
        """Text centred vertically on the data point ``(x, y)``, offset by ``(dx, dy)`` px."""
        px = float(self._pos(self.x, [x])[0]) if isinstance(x, str) else float(x)
        py = float(self._pos(self.y, [y])[0]) if isinstance(y, str) else float(y)
        self._marks.append(_Text(None, px, py, text, anchor, dx, dy, color, max(size, 11.0)))
        return self

    def key(
        self,
        label: str,
        color: str,
        *,
        kind: Literal["line", "rect", "band", "point"] = "rect",
        dash: Dash = None,
    ) -> Chart:
        """A legend entry only: what a colour means when the marks are coloured one by one."""
        self._marks.append(_Key(label, kind, color, _dash(dash)))
        return self

    def legend(self, position: LegendPosition = "auto", order: Sequence[str] = ()) -> Chart:
        """Where the legend goes (``auto``: inside where it covers nothing, else outside) and
        which labels come first."""
        self._legend = position
        self._legend_order = tuple(order)
        return self

    @staticmethod
    def _check_len(a: np.ndarray, b: np.ndarray, what: str) -> None:
        if a.shape != b.shape:
            raise ValueError(f"{what}: x has {a.size} values, y has {b.size}")

    # ------------------------------------------------------------ limits and ticks

    def _limits(self, axis: Axis, which: Literal["x", "y"]) -> tuple[float, float]:
        if axis.scale == "category":
            n = max(1, len(axis.categories))
            return -0.5, n - 0.5
        vals: list[np.ndarray] = []
        sticky: list[float] = []
        for m in self._marks:
            vals.append(m.xs() if which == "x" else m.ys())
            sticky += m.sticky_x() if which == "x" else m.sticky_y()
        data = np.concatenate(vals) if vals else np.empty(0)
        data = data[np.isfinite(data)]
        if axis.scale == "log":
            data = data[data > 0]
        given = axis.limits or (None, None)
        if data.size == 0:
            lo, hi = (1.0, 10.0) if axis.scale == "log" else (0.0, 1.0)
        else:
            lo, hi = float(data.min()), float(data.max())
        if axis.scale == "log":
            la, lb = math.log10(lo), math.log10(hi)
            if lb - la < 1e-9:
                la, lb = la - 0.5, lb + 0.5
            pad = 0.04 * (lb - la)
            auto = (10.0 ** (la - (0 if lo in sticky else pad)), 10.0 ** (lb + pad))
        else:
            if hi - lo < 1e-12 * max(1.0, abs(hi)):
                d = abs(lo) * 0.5 or 0.5
                lo, hi = lo - d, hi + d
            pad = 0.04 * (hi - lo)
            auto = (lo - (0 if lo in sticky else pad), hi + (0 if hi in sticky else pad))
        out = (
            auto[0] if given[0] is None else float(given[0]),
            auto[1] if given[1] is None else float(given[1]),
        )
        if not out[1] > out[0]:
            out = (out[0], out[0] + (abs(out[0]) or 1.0))
        return out

    def _ticks(
        self, axis: Axis, lo: float, hi: float, length: float, horizontal: bool
    ) -> Ticks:
        key = (axis, lo, hi, round(length, 2), horizontal)
        if key not in self._tick_cache:
            self._tick_cache[key] = self._compute_ticks(axis, lo, hi, length, horizontal)
        return self._tick_cache[key]

    def _compute_ticks(
        self, axis: Axis, lo: float, hi: float, length: float, horizontal: bool
    ) -> Ticks:
        if axis.scale == "category":
            n = len(axis.categories)
            return Ticks(tuple(float(i) for i in range(n)), tuple(axis.categories))
        scale = _Scale(axis.scale, lo, hi, 0.0, length)

        def fits(t: Ticks) -> bool:
            px = scale(t.values)
            if horizontal:
                w = [text_width(s, TICK_SIZE) for s in t.labels]
                return all(
                    px[i + 1] - px[i] >= (w[i] + w[i + 1]) / 2 + 10 for i in range(len(w) - 1)
                )
            gap = text_height(TICK_SIZE) + 6
            return all(abs(px[i + 1] - px[i]) >= gap for i in range(len(px) - 1))

        max_count = max(2, int(length // (60 if horizontal else 32)))
        if axis.scale == "log":
            return log_ticks(lo, hi, max_count, fits=fits)
        return linear_ticks(lo, hi, max_count, integer=axis.integer, fits=fits)

    # ------------------------------------------------------------ layout

    def _heatmap(self) -> _Heatmap | None:
        return next((m for m in self._marks if isinstance(m, _Heatmap)), None)

    def _entries(self) -> list[_Entry]:
        out: list[_Entry] = []
        seen: set[str] = set()
        for m in self._marks:
            if not m.label or m.label in seen:
                continue
            seen.add(m.label)
            if isinstance(m, _Line):
                out.append(_Entry(m.label, "line", m.color, m.dash, m.marker, m.width))
            elif isinstance(m, _RefLine):
                out.append(_Entry(m.label, "line", m.color, m.dash, None, m.width))
            elif isinstance(m, _Scatter):
                out.append(_Entry(m.label, "point", m.color, opacity=m.opacity))
            elif isinstance(m, _Rects):
                c = m.color if isinstance(m.color, str) else (m.color[0] if m.color else GREY)
                out.append(_Entry(m.label, "rect", c, opacity=m.opacity))
            elif isinstance(m, _Band):
                out.append(_Entry(m.label, "band", m.color, opacity=m.opacity))
            elif isinstance(m, _ErrorBars):
                out.append(_Entry(m.label, "line", m.color, None, None, m.width))
            elif isinstance(m, _Key):
                out.append(_Entry(m.label, m.kind, m.color, m.dash))
        if self._legend_order:
            rank = {name: i for i, name in enumerate(self._legend_order)}
            out.sort(key=lambda e: rank.get(e.label, len(rank)))
        return out

    def _legend_size(self, entries: list[_Entry], max_width: float | None) -> tuple[float, float]:
        """(width, height) of the legend block: one column, or rows of entries when
        ``max_width`` is given (below the plot)."""
        if not entries:
            return 0.0, 0.0
        row_h = 17.0
        if max_width is None:
            w = max(28 + text_width(e.label, LEGEND_SIZE) for e in entries) + 8
            return w, row_h * len(entries) + 6
        rows = self._legend_rows(entries, max_width)
        w = max(sum(28 + text_width(e.label, LEGEND_SIZE) + 14 for e in r) for r in rows)
        return min(w, max_width), row_h * len(rows) + 6

    @staticmethod
    def _legend_rows(entries: list[_Entry], max_width: float) -> list[list[_Entry]]:
        rows: list[list[_Entry]] = [[]]
        used = 0.0
        for e in entries:
            w = 28 + text_width(e.label, LEGEND_SIZE) + 14
            if rows[-1] and used + w > max_width:
                rows.append([])
                used = 0.0
            rows[-1].append(e)
            used += w
        return rows

    def _y_cat_width(self) -> float:
        return max(60.0, 0.38 * self.width)

    def _frame(self, opts: _Options, legend: Literal["inside", "right", "below", "none"]) -> _Frame:
        entries = self._entries()
        hm = self._heatmap()
        xlim = opts.x_limits or self._limits(self.x, "x")
        ylim = self._limits(self.y, "y")
        th = text_height(TICK_SIZE)
        top = PAD + (text_height(TITLE_SIZE) + 6 if self.title else 2)
        # first guess of the left margin, refined below
        left, right = 48.0, 14.0
        bottom = 0.0
        cbar_w = 0.0
        cbar_ticks = Ticks((), ())
        if hm is not None and hm.colorbar is not None:
            cbar_ticks = linear_ticks(hm.vmin, hm.vmax, 6)
            cbar_w = (
                16 + 14 + TICK_LEN + 3
                + max((text_width(s, TICK_SIZE) for s in cbar_ticks.labels), default=0)
                + 6 + text_height(LABEL_SIZE)
            )  # fmt: skip
        leg_w, leg_h = self._legend_size(entries, None) if legend == "right" else (0.0, 0.0)
        x_cat_rot = False
        xt = yt = Ticks((), ())
        for _ in range(4):
            before = (left, right, bottom)
            plot_w = self.width - left - right - cbar_w - (leg_w + 12 if leg_w else 0)
            xt = self._ticks(self.x, *xlim, max(plot_w, 40), True)
            # bottom margin: tick labels (or rotated category names) and the axis label
            bottom = PAD
            if opts.x_tick_labels:
                if self.x.scale == "category":
                    cell = max(plot_w, 40) / max(1, len(self.x.categories))
                    widths = [text_width(s, TICK_SIZE) for s in self.x.categories]
                    x_cat_rot = bool(widths) and max(widths) > cell - 4
                    if x_cat_rot:
                        longest = max(
                            text_width(truncate(s, TICK_SIZE, 110), TICK_SIZE)
                            for s in self.x.categories
                        )
                        bottom += TICK_LEN + 3 + longest
                    else:
                        bottom += TICK_LEN + 3 + th
                else:
                    bottom += TICK_LEN + 3 + th
            else:
                bottom += TICK_LEN
            if opts.x_label and self.x.label:
                bottom += 6 + text_height(LABEL_SIZE)
            if legend == "below":
                _, leg_h = self._legend_size(entries, self.width - 2 * PAD)
                bottom += leg_h + 8
            plot_h = self.height - top - bottom
            yt = self._ticks(self.y, *ylim, max(plot_h, 30), False)
            if self.y.scale == "category":
                ylab_w = max(
                    (
                        text_width(truncate(s, TICK_SIZE, self._y_cat_width()), TICK_SIZE)
                        for s in self.y.categories
                    ),
                    default=0.0,
                )
            else:
                ylab_w = max((text_width(s, TICK_SIZE) for s in yt.labels), default=0.0)
            left = PAD + ylab_w + TICK_LEN + 3
            if self.y.label:
                left += text_height(LABEL_SIZE) + 6
            left = max(left, opts.min_left)
            # the last x tick label may stick out to the right of the plot
            right = 14.0
            if opts.x_tick_labels and xt.values and self.x.scale != "category":
                sc = _Scale(self.x.scale, *xlim, 0.0, max(plot_w, 40))
                overhang = text_width(xt.labels[-1], TICK_SIZE) / 2 - (
                    max(plot_w, 40) - float(sc(xt.values[-1]))
                )
                right = max(right, overhang + PAD)
                overhang0 = text_width(xt.labels[0], TICK_SIZE) / 2 - float(sc(xt.values[0]))
                left = max(left, overhang0 + PAD)
            right = max(right, opts.min_right - cbar_w - (leg_w + 12 if leg_w else 0))
            if all(abs(u - v) < 0.01 for u, v in zip(before, (left, right, bottom))):
                break
        plot_w = self.width - left - right - cbar_w - (leg_w + 12 if leg_w else 0)
        plot_h = self.height - top - bottom
        if plot_w < 40 or plot_h < 30:
            raise ValueError(
                f"the chart is too small for its labels ({self.width:.0f}×{self.height:.0f} px "
                f"leaves a {plot_w:.0f}×{plot_h:.0f} plot); make it larger"
            )
        plot = Rect(left, top, left + plot_w, top + plot_h)
        if hm is not None:  # square cells, the plot shrinks to fit them
            nr, nc = hm.values.shape
            cell = min(plot_w / nc, plot_h / nr)
            plot = Rect(left, top, left + cell * nc, top + cell * nr)
        xs = _Scale(self.x.scale, *xlim, plot.x0, plot.x1)
        if self.y.scale == "category":
            ys = _Scale("category", *ylim, plot.y0, plot.y1)  # index 0 at the top
        else:
            ys = _Scale(self.y.scale, *ylim, plot.y1, plot.y0)
        width, height = self.width, self.height
        cbar = None
        if hm is not None:
            if hm.colorbar is not None:
                cb = Rect(plot.x1 + 16, plot.y0, plot.x1 + 30, plot.y1)
                cbar = (cb, cbar_ticks)
            width = plot.x1 + right + cbar_w + (leg_w + 12 if leg_w else 0)
            height = plot.y1 + bottom
        frame = _Frame(
            width, height, plot, xs, ys, xt, yt, left, right, legend, x_cat_rot, cbar=cbar
        )
        self._category_labels(frame)
        if legend == "right":
            frame.height = max(frame.height, plot.y0 + leg_h + PAD)
        return frame

    def _category_labels(self, f: _Frame) -> None:
        """Which category names are written (every n-th when they do not fit), shortened."""
        if self.x.scale == "category" and self.x.categories:
            n = len(self.x.categories)
            cell = f.plot.width / n
            need = (text_height(TICK_SIZE) if f.x_cat_rotated else 0) + 2
            stride = 1
            if f.x_cat_rotated:
                while cell * stride < need:
                    stride += 1
            for i in range(0, n, stride):
                full = self.x.categories[i]
                short = truncate(full, TICK_SIZE, 110 if f.x_cat_rotated else cell - 4)
                f.x_cat_labels.append((i, short, full))
        if self.y.scale == "category" and self.y.categories:
            n = len(self.y.categories)
            cell = f.plot.height / n
            stride = 1
            while cell * stride < text_height(TICK_SIZE) + 1:
                stride += 1
            for i in range(0, n, stride):
                full = self.y.categories[i]
                short = truncate(full, TICK_SIZE, self._y_cat_width())
                f.y_cat_labels.append((i, short, full))

    # ------------------------------------------------------------ occupancy

    def _occupancy(self, f: _Frame) -> tuple[Occupancy, Occupancy]:
        """(everything drawn, only the points of scatters) over the plot area."""
        occ, pts = Occupancy(f.plot), Occupancy(f.plot)
        for m in self._marks:
            if isinstance(m, _Line):
                px, py = f.x(m.x), f.y(m.y)
                for run in clip_polyline(px, py, f.plot):
                    occ.polyline(run, m.width / 2 + 1)
                if m.marker:
                    occ.points(px, py, m.marker_size + 1)
            elif isinstance(m, _Scatter):
                px, py = f.x(m.x), f.y(m.y)
                occ.points(px, py, m.size + 1)
                pts.points(px, py, m.size + 1)
            elif isinstance(m, _Rects):
                for rect in self._bar_rects(m, f):
                    occ.rect(rect)
            elif isinstance(m, _Band):
                order = np.argsort(f.x(m.x), kind="stable")
                occ.band(
                    list(f.x(m.x)[order]), list(f.y(m.lo)[order]), list(f.y(m.hi)[order])
                )
            elif isinstance(m, _ErrorBars):
                for x, a, b in zip(f.x(m.x), f.y(m.lo), f.y(m.hi)):
                    if math.isfinite(x) and math.isfinite(a) and math.isfinite(b):
                        occ.rect(Rect(x - m.cap - 1, min(a, b) - 1, x + m.cap + 1, max(a, b) + 1))
            elif isinstance(m, _RefLine):
                seg = self._ref_segment(m, f)
                if seg is not None:
                    occ.segment(*seg, half=m.width / 2 + 1)
            elif isinstance(m, _Heatmap | _Image):
                occ.rect(f.plot)
            elif isinstance(m, _Text):
                b = self._text_mark_box(m, f)
                occ.rect(Rect(b.x0, b.y0, b.x1, b.y1))
        return occ, pts

    def _bar_rects(self, m: _Rects, f: _Frame) -> list[Rect]:
        out = []
        for i in range(m.x0.size):
            x0 = f.plot.x0 if not np.isfinite(m.x0[i]) else f.x.one(m.x0[i])
            x1 = f.x.one(m.x1[i])
            y0 = f.plot.y1 if not np.isfinite(m.y0[i]) else f.y.one(m.y0[i])
            y1 = f.y.one(m.y1[i])
            if not all(math.isfinite(v) for v in (x0, x1, y0, y1)):
                out.append(Rect(math.nan, math.nan, math.nan, math.nan))
                continue
            r = Rect(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            out.append(r.intersection(f.plot) or Rect(math.nan, math.nan, math.nan, math.nan))
        return out

    def _ref_segment(
        self, m: _RefLine, f: _Frame
    ) -> tuple[tuple[float, float], tuple[float, float]] | None:
        if m.horizontal:
            y = f.y.one(m.value)
            if not math.isfinite(y) or not f.plot.y0 - 0.5 <= y <= f.plot.y1 + 0.5:
                return None
            return (f.plot.x0, y), (f.plot.x1, y)
        x = f.x.one(m.value)
        if not math.isfinite(x) or not f.plot.x0 - 0.5 <= x <= f.plot.x1 + 0.5:
            return None
        return (x, f.plot.y0), (x, f.plot.y1)

    def _text_mark_box(self, m: _Text, f: _Frame) -> TextBox:
        x = f.x.one(m.x) + m.dx
        y = baseline_for_centre(f.y.one(m.y) + m.dy, m.size)
        return text_box(m.text, x, y, m.size, m.anchor, role="annotation")

    # ------------------------------------------------------------ point labels and legend

    def _place_point_labels(
        self, f: _Frame, occ: Occupancy, pts: Occupancy
    ) -> list[tuple[TextBox, tuple[float, float] | None, tuple[float, float]]]:
        """Greedy placement: (box, leader start or None, point) per placed label."""
        placed: list[tuple[TextBox, tuple[float, float] | None, tuple[float, float]]] = []
        boxes: list[TextBox] = [
            self._text_mark_box(m, f) for m in self._marks if isinstance(m, _Text)
        ]
        dirs = ((1, 0), (-1, 0), (1, -1), (-1, -1), (1, 1), (-1, 1), (0, -1), (0, 1))
        for m in self._marks:
            if not isinstance(m, _Scatter) or m.point_labels is None:
                continue
            px, py = f.x(m.x), f.y(m.y)
            for i, lab in enumerate(m.point_labels):
                if not lab or not (math.isfinite(px[i]) and math.isfinite(py[i])):
                    continue
                p = (float(px[i]), float(py[i]))
                w = text_width(lab, TICK_SIZE)
                h = text_height(TICK_SIZE)
                chosen = None
                for strict in (True, False):
                    grid = occ if strict else pts
                    for ring, d in enumerate((m.size + 3, m.size + 14, m.size + 28, m.size + 44)):
                        for dx, dy in dirs:
                            cx = p[0] + dx * (d + w / 2)
                            cy = p[1] + dy * (d + h / 2)
                            if dx == 0:
                                cx = p[0]
                            if dy == 0:
                                cy = p[1]
                            r = Rect(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                            if not f.plot.contains(r, tolerance=0):
                                continue
                            own = Rect(p[0] - m.size, p[1] - m.size, p[0] + m.size, p[1] + m.size)
                            if r.intersects(own) or not grid.free(r):
                                continue
                            tb = text_box(
                                lab,
                                cx,
                                baseline_for_centre(cy, TICK_SIZE),
                                TICK_SIZE,
                                "middle",
                                role="point-label",
                            )
                            if any(tb.overlaps(b, tolerance=-1.0) for b in boxes):
                                continue
                            lead = None
                            if ring > 0:
                                nx = min(max(p[0], r.x0), r.x1)
                                ny = min(max(p[1], r.y0), r.y1)
                                lead = (nx, ny)
                            chosen = (tb, lead, p)
                            break
                        if chosen:
                            break
                    if chosen:
                        break
                if chosen is not None:
                    placed.append(chosen)
                    boxes.append(chosen[0])
                    occ.rect(Rect(chosen[0].x0, chosen[0].y0, chosen[0].x1, chosen[0].y1))
        return placed

    def _inside_legend(
        self, f: _Frame, occ: Occupancy, texts: list[TextBox]
    ) -> tuple[float, float] | None:
        entries = self._entries()
        w, h = self._legend_size(entries, None)
        if w > f.plot.width - 8 or h > f.plot.height - 8:
            return None
        p = f.plot
        xs = (p.x1 - w - 4, p.x0 + 4, (p.x0 + p.x1 - w) / 2)
        ys = (p.y0 + 4, p.y1 - h - 4, (p.y0 + p.y1 - h) / 2)
        order = ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (0, 2), (1, 2))
        for i, j in order:
            r = Rect(xs[i], ys[j], xs[i] + w, ys[j] + h)
            if occ.free(r) and not any(
                r.intersects(Rect(b.x0, b.y0, b.x1, b.y1)) for b in texts
            ):
                return xs[i], ys[j]
        return None

    # ------------------------------------------------------------ rendering

    def _layout(
        self, opts: _Options
    ) -> tuple[
        _Frame,
        list[tuple[TextBox, tuple[float, float] | None, tuple[float, float]]],
        tuple[float, float] | None,
    ]:
        entries = self._entries()
        want = self._legend if entries else "none"
        if want in ("right", "below", "none"):
            f = self._frame(opts, want)  # type: ignore[arg-type]
            occ, pts = self._occupancy(f)
            return f, self._place_point_labels(f, occ, pts), None
        f = self._frame(opts, "inside")
        occ, pts = self._occupancy(f)
        labels = self._place_point_labels(f, occ, pts)
        spot = self._inside_legend(f, occ, [b for b, _, _ in labels])
        if spot is not None or want == "inside":
            return f, labels, spot
        lw, _ = self._legend_size(entries, None)
        outside: Literal["right", "below"] = "right" if lw <= 0.3 * self.width else "below"
        f = self._frame(opts, outside)
        occ, pts = self._occupancy(f)
        return f, self._place_point_labels(f, occ, pts), None

    def _body(self, opts: _Options) -> tuple[str, float, float, _Frame]:
        f, point_labels, legend_at = self._layout(opts)
        p = f.plot
        out: list[str] = []
        out.append(self._grid_svg(f))
        for m in self._marks:
            out.append(self._mark_svg(m, f))
        out.append(self._axes_svg(f, opts))
        for tb, lead, pt in point_labels:
            if lead is not None:
                out.append(
                    el(
                        "line",
                        x1=pt[0],
                        y1=pt[1],
                        x2=lead[0],
                        y2=lead[1],
                        stroke=GREY,
                        stroke_width="0.8",
                    )
                )
            out.append(
                text_el(
                    tb.text,
                    x=(tb.x0 + tb.x1) / 2,
                    y=tb.y1 - 0.236 * TICK_SIZE,
                    text_anchor="middle",
                    fill=INK,
                    class_="point-label",
                )
            )
        entries = self._entries()
        if f.legend == "inside" and legend_at is not None:
            out.append(self._legend_svg(entries, legend_at[0], legend_at[1], None, True))
        elif f.legend == "right":
            out.append(self._legend_svg(entries, p.x1 + 12 + self._cbar_space(f), p.y0, None, False))
        elif f.legend == "below":
            _, lh = self._legend_size(entries, self.width - 2 * PAD)
            out.append(
                self._legend_svg(entries, PAD, f.height - PAD - lh, self.width - 2 * PAD, False)
            )
        if self.title:
            out.append(
                text_el(
                    truncate(self.title, TITLE_SIZE, f.width - 2 * PAD, "end"),
                    x=p.x0,
                    y=PAD + 0.928 * TITLE_SIZE,
                    font_size=fmt(TITLE_SIZE),
                    fill=INK,
                    class_="title",
                )
            )
        return "".join(out), f.width, f.height, f

    def _cbar_space(self, f: _Frame) -> float:
        if f.cbar is None:
            return 0.0
        cb, t = f.cbar
        return (
            (cb.x1 - f.plot.x1) + TICK_LEN + 3
            + max((text_width(s, TICK_SIZE) for s in t.labels), default=0)
            + 6 + text_height(LABEL_SIZE)
        )  # fmt: skip

    def _grid_svg(self, f: _Frame) -> str:
        p = f.plot
        parts = []
        if self.y.grid and self.y.scale != "category":
            for v in f.yticks.values:
                y = f.y.one(v)
                if p.y0 - 0.5 <= y <= p.y1 + 0.5:
                    parts.append(f"M{fmt(p.x0)} {fmt(y)}H{fmt(p.x1)}")
        if self.x.grid and self.x.scale != "category":
            for v in f.xticks.values:
                x = f.x.one(v)
                if p.x0 - 0.5 <= x <= p.x1 + 0.5:
                    parts.append(f"M{fmt(x)} {fmt(p.y0)}V{fmt(p.y1)}")
        if not parts:
            return ""
        return el("path", d="".join(parts), stroke=GRID, stroke_width="1", fill="none")

    def _mark_svg(self, m: _Mark, f: _Frame) -> str:
        p = f.plot
        if isinstance(m, _Line):
            px, py = f.x(m.x), f.y(m.y)
            parts = []
            for run in clip_polyline(px, py, p):
                parts.append(
                    el(
                        "polyline",
                        points=" ".join(f"{fmt(a)},{fmt(b)}" for a, b in run),
                        fill="none",
                        stroke=m.color,
                        stroke_width=fmt(m.width),
                        stroke_dasharray=m.dash,
                        stroke_linejoin="round",
                        stroke_opacity=None if m.opacity >= 1 else fmt(m.opacity),
                    )
                )
            if m.marker:
                for x, y in zip(px, py):
                    if _inside(p, x, y):
                        parts.append(_marker(m.marker, x, y, m.marker_size, m.color))
            return "".join(parts)
        if isinstance(m, _Scatter):
            px, py = f.x(m.x), f.y(m.y)
            parts = []
            for i, (x, y) in enumerate(zip(px, py)):
                if not _inside(p, x, y):
                    continue
                tip = None
                if m.point_labels is not None and m.point_labels[i]:
                    tip = m.point_labels[i]
                body = None if tip is None else f"<title>{_esc(tip)}</title>"
                parts.append(el("circle", body, cx=float(x), cy=float(y), r=fmt(m.size)))
            return el(
                "g",
                "".join(parts),
                fill=m.color,
                fill_opacity=None if m.opacity >= 1 else fmt(m.opacity),
            )
        if isinstance(m, _Rects):
            parts = []
            for i, r in enumerate(self._bar_rects(m, f)):
                if not math.isfinite(r.x0):
                    continue
                color = m.color if isinstance(m.color, str) else m.color[i]
                tip = m.tooltips[i] if m.tooltips is not None else None
                parts.append(
                    el(
                        "rect",
                        None if tip is None else f"<title>{_esc(tip)}</title>",
                        x=r.x0,
                        y=r.y0,
                        width=r.width,
                        height=r.height,
                        fill=color,
                    )
                )
            return el(
                "g",
                "".join(parts),
                stroke=m.stroke,
                stroke_width=None if m.stroke is None else "0.8",
                fill_opacity=None if m.opacity >= 1 else fmt(m.opacity),
            )
        if isinstance(m, _Band):
            px, lo, hi = f.x(m.x), f.y(m.lo), f.y(m.hi)
            ok = np.isfinite(px) & np.isfinite(lo) & np.isfinite(hi)
            parts = []
            for run in _runs(ok):
                idx = np.arange(run[0], run[1])
                pts = [(float(px[i]), float(lo[i])) for i in idx]
                pts += [(float(px[i]), float(hi[i])) for i in idx[::-1]]
                poly = clip_polygon(pts, p)
                if len(poly) >= 3:
                    parts.append(
                        el(
                            "polygon",
                            points=" ".join(f"{fmt(a)},{fmt(b)}" for a, b in poly),
                            fill=m.color,
                            fill_opacity=fmt(m.opacity),
                            stroke="none",
                        )
                    )
            return "".join(parts)
        if isinstance(m, _ErrorBars):
            d = []
            for x, a, b in zip(f.x(m.x), f.y(m.lo), f.y(m.hi)):
                seg = clip_segment((x, a), (x, b), p) if math.isfinite(a + b + x) else None
                if seg is None:
                    continue
                (x0, y0), (x1, y1) = seg
                d.append(f"M{fmt(x0)} {fmt(y0)}V{fmt(y1)}")
                for yy, orig in ((y0, a), (y1, b)):
                    if abs(yy - orig) < 0.01:  # a cap only where the bar was not clipped
                        d.append(f"M{fmt(x - m.cap)} {fmt(yy)}H{fmt(x + m.cap)}")
            if not d:
                return ""
            return el("path", d="".join(d), stroke=m.color, stroke_width=fmt(m.width), fill="none")
        if isinstance(m, _RefLine):
            seg = self._ref_segment(m, f)
            if seg is None:
                return ""
            (x0, y0), (x1, y1) = seg
            return el(
                "line",
                x1=x0,
                y1=y0,
                x2=x1,
                y2=y1,
                stroke=m.color,
                stroke_width=fmt(m.width),
                stroke_dasharray=m.dash,
            )
        if isinstance(m, _Heatmap):
            return self._heatmap_svg(m, f)
        if isinstance(m, _Image):
            return self._image_svg(m, f)
        if isinstance(m, _Text):
            x, y = f.x.one(m.x) + m.dx, f.y.one(m.y) + m.dy
            if not (math.isfinite(x) and math.isfinite(y)):
                return ""
            return text_el(
                m.text,
                x=x,
                y=baseline_for_centre(y, m.size),
                text_anchor=m.anchor,
                font_size=fmt(m.size),
                fill=m.color,
                class_="annotation",
            )
        return ""

    def _heatmap_svg(self, m: _Heatmap, f: _Frame) -> str:
        p = f.plot
        nr, nc = m.values.shape
        cw, ch = p.width / nc, p.height / nr
        span = (m.vmax - m.vmin) or 1.0
        cells, texts = [], []
        ann = m.annotations
        fits = True
        if ann is not None:
            widest = max((text_width(s, TICK_SIZE) for r in ann for s in r), default=0.0)
            fits = widest <= cw - 3 and text_height(TICK_SIZE) <= ch - 1
        for i in range(nr):
            for j in range(nc):
                v = m.values[i, j]
                fill = ramp(m.ramp, (v - m.vmin) / span) if math.isfinite(v) else "#ffffff"
                tip = m.tooltips[i][j] if m.tooltips is not None else None
                cells.append(
                    el(
                        "rect",
                        None if tip is None else f"<title>{_esc(tip)}</title>",
                        x=p.x0 + j * cw,
                        y=p.y0 + i * ch,
                        width=cw,
                        height=ch,
                        fill=fill,
                    )
                )
                if ann is not None and fits and ann[i][j]:
                    texts.append(
                        text_el(
                            ann[i][j],
                            x=p.x0 + (j + 0.5) * cw,
                            y=baseline_for_centre(p.y0 + (i + 0.5) * ch, TICK_SIZE),
                            text_anchor="middle",
                            fill=text_color_on(fill),
                            class_="annotation",
                        )
                    )
        out = el("g", "".join(cells), stroke="#ffffff", stroke_width="0.5") + "".join(texts)
        if f.cbar is not None and m.colorbar is not None:
            out += self._colorbar_svg(m, f.cbar[0], f.cbar[1])
        return out

    def _colorbar_svg(self, m: _Heatmap, cb: Rect, ticks: Ticks) -> str:
        n = 48
        hseg = cb.height / n
        rects = []
        for k in range(n):
            t = (k + 0.5) / n
            rects.append(
                el(
                    "rect",
                    x=cb.x0,
                    y=cb.y1 - (k + 1) * hseg,
                    width=cb.width,
                    height=hseg + 0.3,
                    fill=ramp(m.ramp, t),
                )
            )
        out = [el("g", "".join(rects), stroke="none")]
        out.append(el("rect", x=cb.x0, y=cb.y0, width=cb.width, height=cb.height,
                      fill="none", stroke=AXIS_INK, stroke_width="0.8"))  # fmt: skip
        span = (m.vmax - m.vmin) or 1.0
        d = []
        widest = 0.0
        for v, s in zip(ticks.values, ticks.labels):
            y = cb.y1 - (v - m.vmin) / span * cb.height
            d.append(f"M{fmt(cb.x1)} {fmt(y)}h{fmt(TICK_LEN)}")
            out.append(
                text_el(
                    s,
                    x=cb.x1 + TICK_LEN + 3,
                    y=baseline_for_centre(y, TICK_SIZE),
                    fill=INK,
                    class_="tick-label",
                )
            )
            widest = max(widest, text_width(s, TICK_SIZE))
        out.append(el("path", d="".join(d), stroke=AXIS_INK, stroke_width="1"))
        label = m.colorbar or ""
        if label:
            x = cb.x1 + TICK_LEN + 3 + widest + 6 + 0.928 * LABEL_SIZE
            y = (cb.y0 + cb.y1) / 2
            out.append(
                text_el(
                    truncate(label, LABEL_SIZE, cb.height),
                    label,
                    x=x,
                    y=y,
                    text_anchor="middle",
                    transform=f"rotate(90 {fmt(x)} {fmt(y)})",
                    font_size=fmt(LABEL_SIZE),
                    fill=INK,
                    class_="axis-label",
                )
            )
        return "".join(out)

    def _image_svg(self, m: _Image, f: _Frame) -> str:
        h, w = m.values.shape
        x0, x1 = f.x.one(m.extent[0]), f.x.one(m.extent[1])
        ya, yb = f.y.one(m.extent[2]), f.y.one(m.extent[3])
        top, bot = min(ya, yb), max(ya, yb)
        left, right = min(x0, x1), max(x0, x1)
        span = (m.vmax - m.vmin) or 1.0
        norm = (m.values - m.vmin) / span
        if m.mode == "png":
            rgb = np.zeros((h, w, 3), dtype=np.uint8)
            for i in range(h):
                for j in range(w):
                    rgb[i, j] = ramp_rgb(m.ramp, float(norm[i, j]))
            return el(
                "image",
                href=png_data_uri(rgb),
                x=left,
                y=top,
                width=right - left,
                height=bot - top,
                preserveAspectRatio="none",
                style="image-rendering:pixelated",
            )
        cw, ch = (right - left) / w, (bot - top) / h
        cells = [
            el(
                "rect",
                x=left + j * cw,
                y=top + i * ch,
                width=cw + 0.3,
                height=ch + 0.3,
                fill=ramp(m.ramp, float(norm[i, j])),
            )
            for i in range(h)
            for j in range(w)
        ]
        return el("g", "".join(cells), stroke="none")

    def _axes_svg(self, f: _Frame, opts: _Options) -> str:
        p = f.plot
        out: list[str] = []
        ticks_d: list[str] = []
        minor_d: list[str] = []
        th = text_height(TICK_SIZE)
        # x axis
        out.append(el("line", x1=p.x0, y1=p.y1, x2=p.x1, y2=p.y1, stroke=AXIS_INK,
                      stroke_width="1"))  # fmt: skip
        if self.x.scale == "category":
            for i, short, full in f.x_cat_labels:
                x = f.x.one(i)
                ticks_d.append(f"M{fmt(x)} {fmt(p.y1)}v{fmt(TICK_LEN)}")
                if not opts.x_tick_labels:
                    continue
                if f.x_cat_rotated:
                    ax = x + 0.346 * TICK_SIZE
                    ay = p.y1 + TICK_LEN + 3
                    out.append(
                        text_el(
                            short,
                            full if short != full else None,
                            x=ax,
                            y=ay,
                            text_anchor="end",
                            transform=f"rotate(-90 {fmt(ax)} {fmt(ay)})",
                            fill=INK,
                            class_="tick-label",
                        )
                    )
                else:
                    out.append(
                        text_el(
                            short,
                            full if short != full else None,
                            x=x,
                            y=p.y1 + TICK_LEN + 3 + 0.928 * TICK_SIZE,
                            text_anchor="middle",
                            fill=INK,
                            class_="tick-label",
                        )
                    )
        else:
            for v, s in zip(f.xticks.values, f.xticks.labels):
                x = f.x.one(v)
                if not p.x0 - 0.5 <= x <= p.x1 + 0.5:
                    continue
                ticks_d.append(f"M{fmt(x)} {fmt(p.y1)}v{fmt(TICK_LEN)}")
                if opts.x_tick_labels:
                    out.append(
                        text_el(
                            s,
                            x=x,
                            y=p.y1 + TICK_LEN + 3 + 0.928 * TICK_SIZE,
                            text_anchor="middle",
                            fill=INK,
                            class_="tick-label",
                        )
                    )
            for v in f.xticks.minor:
                x = f.x.one(v)
                if p.x0 - 0.5 <= x <= p.x1 + 0.5:
                    minor_d.append(f"M{fmt(x)} {fmt(p.y1)}v{fmt(TICK_LEN / 2)}")
        # y axis
        out.append(el("line", x1=p.x0, y1=p.y0, x2=p.x0, y2=p.y1, stroke=AXIS_INK,
                      stroke_width="1"))  # fmt: skip
        lab_x = p.x0 - TICK_LEN - 3
        if self.y.scale == "category":
            for i, short, full in f.y_cat_labels:
                y = f.y.one(i)
                ticks_d.append(f"M{fmt(p.x0)} {fmt(y)}h{fmt(-TICK_LEN)}")
                out.append(
                    text_el(
                        short,
                        full if short != full else None,
                        x=lab_x,
                        y=baseline_for_centre(y, TICK_SIZE),
                        text_anchor="end",
                        fill=INK,
                        class_="tick-label",
                    )
                )
        else:
            for v, s in zip(f.yticks.values, f.yticks.labels):
                y = f.y.one(v)
                if not p.y0 - 0.5 <= y <= p.y1 + 0.5:
                    continue
                ticks_d.append(f"M{fmt(p.x0)} {fmt(y)}h{fmt(-TICK_LEN)}")
                out.append(
                    text_el(
                        s,
                        x=lab_x,
                        y=baseline_for_centre(y, TICK_SIZE),
                        text_anchor="end",
                        fill=INK,
                        class_="tick-label",
                    )
                )
            for v in f.yticks.minor:
                y = f.y.one(v)
                if p.y0 - 0.5 <= y <= p.y1 + 0.5:
                    minor_d.append(f"M{fmt(p.x0)} {fmt(y)}h{fmt(-TICK_LEN / 2)}")
        if ticks_d:
            out.append(el("path", d="".join(ticks_d), stroke=AXIS_INK, stroke_width="1"))
        if minor_d:
            out.append(el("path", d="".join(minor_d), stroke=AXIS_INK, stroke_width="0.7"))
        # axis labels
        if self.x.label and opts.x_label:
            if self.x.scale == "category" and f.x_cat_rotated:
                longest = max(
                    (text_width(s, TICK_SIZE) for _, s, _ in f.x_cat_labels), default=0.0
                )
                base = p.y1 + TICK_LEN + 3 + longest
            else:
                base = p.y1 + TICK_LEN + 3 + (th if opts.x_tick_labels else 0)
            short = truncate(self.x.label, LABEL_SIZE, p.width)
            out.append(
                text_el(
                    short,
                    self.x.label if short != self.x.label else None,
                    x=(p.x0 + p.x1) / 2,
                    y=base + 6 + 0.928 * LABEL_SIZE,
                    text_anchor="middle",
                    font_size=fmt(LABEL_SIZE),
                    fill=INK,
                    class_="axis-label",
                )
            )
        if self.y.label:
            x = PAD + 0.928 * LABEL_SIZE
            y = (p.y0 + p.y1) / 2
            short = truncate(self.y.label, LABEL_SIZE, p.height)
            out.append(
                text_el(
                    short,
                    self.y.label if short != self.y.label else None,
                    x=x,
                    y=y,
                    text_anchor="middle",
                    transform=f"rotate(-90 {fmt(x)} {fmt(y)})",
                    font_size=fmt(LABEL_SIZE),
                    fill=INK,
                    class_="axis-label",
                )
            )
        return "".join(out)

    def _ytick_width(self, f: _Frame) -> float:
        if self.y.scale == "category":
            return max((text_width(s, TICK_SIZE) for _, s, _ in f.y_cat_labels), default=0.0)
        return max((text_width(s, TICK_SIZE) for s in f.yticks.labels), default=0.0)

    def _legend_svg(
        self, entries: list[_Entry], x: float, y: float, max_width: float | None, boxed: bool
    ) -> str:
        if not entries:
            return ""
        row_h = 17.0
        out: list[str] = []
        w, h = self._legend_size(entries, max_width)
        if boxed:
            out.append(
                el(
                    "rect",
                    x=x,
                    y=y,
                    width=w,
                    height=h,
                    fill="#ffffff",
                    fill_opacity="0.9",
                    stroke="#d0d0d0",
                    stroke_width="0.8",
                    rx="3",
                )
            )
        rows = [[e] for e in entries] if max_width is None else self._legend_rows(entries, max_width)
        for r, row in enumerate(rows):
            cx = x + 6
            cy = y + 3 + r * row_h + row_h / 2
            for e in row:
                out.append(_swatch(e, cx, cy))
                out.append(
                    text_el(
                        e.label,
                        x=cx + 24,
                        y=baseline_for_centre(cy, LEGEND_SIZE),
                        fill=INK,
                        class_="legend",
                    )
                )
                cx += 28 + text_width(e.label, LEGEND_SIZE) + 14
        return el("g", "".join(out))

    # ------------------------------------------------------------ public output

    def _render(self, opts: _Options | None = None) -> tuple[str, float, float]:
        body, w, h, _ = self._body(opts or _Options())
        return body, w, h

    def svg(self) -> str:
        """The chart as a self-contained SVG document (no XML prolog, no ids, no links)."""
        body, w, h = self._render()
        return wrap_svg(body, w, h, self.title or self.y.label or "chart")

    def text_boxes(self) -> list[TextBox]:
        """The estimated box of every text element of :meth:`svg`."""
        return svg_text_boxes(self.svg())


def wrap_svg(body: str, width: float, height: float, label: str) -> str:
    """An ``<svg>`` root around ``body``: white background, the charts' font, 11 px text."""
    w, h = fmt(math.ceil(width)), fmt(math.ceil(height))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}" font-size="{fmt(TICK_SIZE)}" '
        f'role="img" aria-label="{_esc(label)}">'
        f'<rect width="{w}" height="{h}" fill="#ffffff"/>{body}</svg>'
    )


def _esc(text: str) -> str:
    return escape(text, quote=True)


def _inside(p: Rect, x: float, y: float) -> bool:
    return (
        math.isfinite(x)
        and math.isfinite(y)
        and p.x0 - 0.5 <= x <= p.x1 + 0.5
        and p.y0 - 0.5 <= y <= p.y1 + 0.5
    )


def _runs(ok: np.ndarray) -> list[tuple[int, int]]:
    out, start = [], None
    for i, v in enumerate(ok):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(ok)))
    return out


def _marker(kind: Marker, x: float, y: float, r: float, color: str) -> str:
    if kind == "square":
        return el("rect", x=x - r, y=y - r, width=2 * r, height=2 * r, fill=color)
    if kind == "triangle":
        pts = f"{fmt(x)},{fmt(y - 1.2 * r)} {fmt(x - 1.1 * r)},{fmt(y + 0.8 * r)} " \
              f"{fmt(x + 1.1 * r)},{fmt(y + 0.8 * r)}"  # fmt: skip
        return el("polygon", points=pts, fill=color)
    if kind == "diamond":
        pts = f"{fmt(x)},{fmt(y - 1.3 * r)} {fmt(x + 1.3 * r)},{fmt(y)} " \
              f"{fmt(x)},{fmt(y + 1.3 * r)} {fmt(x - 1.3 * r)},{fmt(y)}"  # fmt: skip
        return el("polygon", points=pts, fill=color)
    return el("circle", cx=x, cy=y, r=fmt(r), fill=color)


def _swatch(e: _Entry, x: float, cy: float) -> str:
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
            s += _marker(e.marker, x + 9, cy, 3.0, e.color)
        return s
    if e.kind == "point":
        return el("circle", cx=x + 9, cy=cy, r="3", fill=e.color)
    op = None if e.opacity >= 1 else fmt(max(e.opacity, 0.25))
    return el("rect", x=x + 1, y=cy - 5, width=16, height=10, fill=e.color, fill_opacity=op)
