"""One chart: axes, marks, and its SVG.

A :class:`Chart` collects marks in data units (``line``, ``step``, ``scatter``, ``bars``,
``histogram``, ``barh``, ``band``, ``errorbars``, ``hline``/``vline``, ``heatmap``, ``image``,
``text``, legend-only ``key``) and lays itself out when :meth:`Chart.svg` is called
(:mod:`.layout`):

1. limits: the axis' own, else the data's range plus 4 % on each side (none beyond a bar's
   baseline); log axes pad in decades; category axes span their categories;
2. ticks (:mod:`.ticks`), as many as fit without their labels touching;
3. margins sized to the tick labels, axis labels, title, colour bar and an outside legend;
4. per-point labels, greedily, where they cover no mark and no other text (leader lines when
   moved away from their point);
5. the legend: inside the plot at the first corner or edge where it covers nothing drawn, else
   outside, right of the plot (when it is narrow) or below.

Text is 11–13 px; every text element carries a ``class`` naming its role, and
:meth:`Chart.text_boxes` returns the estimated box of each (:mod:`.text`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from html import escape
from typing import Literal

import numpy as np

from edgeproof.report.charts import layout
from edgeproof.report.charts.axes import (
    INK,
    PAD,
    TICK_SIZE,
    TITLE_SIZE,
    ArrayLike,
    Axis,
    Options,
    axes_svg,
    grid_svg,
)
from edgeproof.report.charts.cells import Heatmap, Image, colorbar_width
from edgeproof.report.charts.colors import BLACK, GREY, series_color, series_dash
from edgeproof.report.charts.marks import (
    Band,
    Entry,
    ErrorBars,
    Key,
    Line,
    Mark,
    Marker,
    Rects,
    RefLine,
    Scatter,
    Text,
)
from edgeproof.report.charts.svg import el, fmt, text_el
from edgeproof.report.charts.text import (
    ASCENT,
    FONT_FAMILY,
    Anchor,
    TextBox,
    svg_text_boxes,
    truncate,
)
from edgeproof.report.charts.ticks import Ticks

__all__ = ["Chart", "Dash", "LegendPosition", "wrap_svg"]

LegendPosition = Literal["auto", "inside", "right", "below", "none"]
Dash = Literal["solid", "dashed", "dotted"] | str | None
_DASH: dict[str, str | None] = {"solid": None, "dashed": "6 3", "dotted": "1.5 2.5"}


def _dash(d: Dash) -> str | None:
    return None if d is None else _DASH.get(d, d)


def _arr(v: ArrayLike | float, n: int | None = None) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.ndim == 0 and n is not None:
        return np.full(n, float(a))
    return a.reshape(-1)


def _check_len(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: x has {a.size} values, y has {b.size}")


class Chart:
    """A chart of ``width`` × ``height`` pixels with axes ``x`` and ``y``.

    Marks are drawn in the order they are added (later on top); the legend lists every mark
    given a ``label``, in that order unless :meth:`legend` says otherwise. Series without a
    colour take the next Okabe–Ito colour.
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
        self.marks: list[Mark] = []
        self.legend_position: LegendPosition = "auto"
        self._legend_order: tuple[str, ...] = ()
        self._series = 0
        self._tick_cache: dict[tuple[Axis, float, float, float, bool], Ticks] = {}

    def _style(self, color: str | None, dash: Dash) -> tuple[str, str | None]:
        """(colour, dash) of a line: an automatic colour brings the series' dash pattern
        (solid for the first seven series, then dashed, dotted, ...)."""
        if color is not None:
            return color, _dash(dash)
        i = self._series
        return self._color(None), _dash(dash) if dash is not None else series_dash(i)

    def _color(self, color: str | None) -> str:
        if color is not None:
            return color
        c = series_color(self._series)
        self._series += 1
        return c

    def _pos(self, axis: Axis, v: ArrayLike | Sequence[str] | float | str) -> np.ndarray:
        """Data positions; category names become their indices."""
        if axis.scale != "category":
            return _arr(v)  # type: ignore[arg-type]
        items = [v] if isinstance(v, str | float | int) else list(v)
        out = []
        for it in items:
            if isinstance(it, str):
                if it not in axis.categories:
                    raise ValueError(f"{it!r} is not a category of this axis")
                out.append(float(axis.categories.index(it)))
            else:
                out.append(float(it))
        return np.asarray(out, dtype=float)

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
        _check_len(xs, ys, "line")
        c, d = self._style(color, dash)
        self.marks.append(
            Line(
                label,
                xs,
                ys,
                color=c,
                dash=d,
                width=width,
                marker=marker,
                marker_size=marker_size,
                opacity=opacity,
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
        _check_len(xs, ys, "step")
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
        self.marks.append(
            Line(label, px, py, self._color(color), width, _dash(dash), None, 0.0, 1.0)
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
        _check_len(xs, ys, "scatter")
        labels = None if point_labels is None else list(point_labels)
        if labels is not None and len(labels) != xs.size:
            raise ValueError(f"point_labels has {len(labels)} entries for {xs.size} points")
        self.marks.append(Scatter(label, xs, ys, self._color(color), size, opacity, labels))
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
        _check_len(xs, h, "bars")
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
        _check_len(ys, ln, "barh")
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
        self.marks.append(Rects(label, x0, x1, y0, y1, colors, stroke, opacity, tips, horizontal))

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
        _check_len(xs, lo, "band")
        _check_len(xs, hi, "band")
        self.marks.append(Band(label, xs, lo, hi, color, opacity))
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
        _check_len(xs, lo, "errorbars")
        _check_len(xs, hi, "errorbars")
        self.marks.append(ErrorBars(label, xs, lo, hi, color, cap, width))
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
        self.marks.append(RefLine(label, True, float(y), color, width, _dash(dash)))
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
        self.marks.append(RefLine(label, False, float(x), color, width, _dash(dash)))
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
        self.marks.append(Heatmap(None, v, vmin, vmax, color_ramp, ann, colorbar, tips))
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
        opacity: float = 1.0,
        colorbar: str | None = None,
    ) -> Chart:
        """A small 2-D array drawn as cells (row 0 at the top of ``extent = (x0, x1, y0, y1)``,
        default ``(-0.5, W-0.5, -0.5, H-0.5)``): SVG rectangles up to 32×32 cells, else one
        PNG as a ``data:image/png`` URI (which the report's sanitiser allows). ``vmin``/``vmax``
        default to the finite values' range; NaN cells are left empty. ``(H, W, 3)`` values are
        RGB in [0, 1], drawn without a ramp. ``colorbar`` labels a colour bar right of the plot
        (one per chart: the first image or heatmap that has one)."""
        v = np.asarray(values, dtype=float)
        rgb = v.ndim == 3 and v.shape[2] == 3
        if not (v.ndim == 2 or rgb) or v.size == 0:
            raise ValueError(f"image needs a non-empty (H, W) or (H, W, 3) array, got {v.shape}")
        h, w = v.shape[:2]
        ext = extent or (-0.5, w - 0.5, -0.5, h - 0.5)
        finite = v[np.isfinite(v)]
        lo = float(finite.min()) if vmin is None and finite.size else (vmin or 0.0)
        hi = float(finite.max()) if vmax is None and finite.size else (vmax or 1.0)
        if rgb:
            lo, hi, colorbar = 0.0, 1.0, None
        auto: Literal["rects", "png"] = "rects" if h * w <= 1024 else "png"
        m = auto if mode == "auto" else mode
        self.marks.append(Image(None, v, ext, lo, hi, color_ramp, m, opacity, colorbar))
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
        self.marks.append(Text(None, px, py, text, anchor, dx, dy, color, max(size, 11.0)))
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
        self.marks.append(Key(label, kind, color, _dash(dash)))
        return self

    def legend(self, position: LegendPosition = "auto", order: Sequence[str] = ()) -> Chart:
        """Where the legend goes (``auto``: inside where it covers nothing, else outside) and
        which labels come first."""
        self.legend_position = position
        self._legend_order = tuple(order)
        return self

    # ------------------------------------------------------------ layout hooks

    def entries(self) -> list[Entry]:
        """The legend entries: one per distinct label, in order (``legend(order=...)`` first)."""
        out: list[Entry] = []
        seen: set[str] = set()
        for m in self.marks:
            e = m.entry()
            if e is not None and e.label not in seen:
                seen.add(e.label)
                out.append(e)
        if self._legend_order:
            rank = {name: i for i, name in enumerate(self._legend_order)}
            out.sort(key=lambda e: rank.get(e.label, len(rank)))
        return out

    def ticks(self, axis: Axis, lo: float, hi: float, length: float, horizontal: bool) -> Ticks:
        key = (axis, lo, hi, round(length, 2), horizontal)
        if key not in self._tick_cache:
            self._tick_cache[key] = layout.ticks(axis, lo, hi, length, horizontal)
        return self._tick_cache[key]

    # ------------------------------------------------------------ output

    def render(self, opts: Options | None = None) -> tuple[str, float, float]:
        """The chart's SVG elements (no root) and its size, laid out with ``opts``."""
        opts = opts or Options()
        f, point_labels, legend_at = layout.layout(self, opts)
        p = f.plot
        out = [grid_svg(self.x, self.y, f)]
        out += [m.svg(f) for m in self.marks]
        out.append(axes_svg(self.x, self.y, f, opts))
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
                    y=tb.y0 + ASCENT * TICK_SIZE,
                    text_anchor="middle",
                    fill=INK,
                    class_="point-label",
                )
            )
        entries = self.entries()
        if f.legend == "inside" and legend_at is not None:
            out.append(layout.legend_svg(entries, *legend_at, None, True))
        elif f.legend == "right":
            x0 = p.x1 + 12 + (colorbar_width(f.cbar[1]) if f.cbar is not None else 0.0)
            out.append(layout.legend_svg(entries, x0, p.y0, None, False))
        elif f.legend == "below":
            lw = self.width - 2 * PAD
            lh = layout.legend_size(entries, lw)[1]
            out.append(layout.legend_svg(entries, PAD, f.height - PAD - lh, lw, False))
        if self.title:
            out.append(
                text_el(
                    truncate(self.title, TITLE_SIZE, f.width - p.x0 - PAD, "end"),
                    x=p.x0,
                    y=PAD + ASCENT * TITLE_SIZE,
                    font_size=fmt(TITLE_SIZE),
                    fill=INK,
                    class_="title",
                )
            )
        return "".join(out), f.width, f.height

    def svg(self) -> str:
        """The chart as a self-contained SVG document (no XML prolog, no ids, no links)."""
        body, w, h = self.render()
        return wrap_svg(body, w, h, self.title or self.y.label or self.x.label or "chart")

    def text_boxes(self) -> list[TextBox]:
        """The estimated box of every text element of :meth:`svg`."""
        return svg_text_boxes(self.svg())


def wrap_svg(body: str, width: float, height: float, label: str) -> str:
    """An ``<svg>`` root around ``body``: white background, the charts' font, 11 px text."""
    w, h = fmt(math.ceil(width)), fmt(math.ceil(height))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}" font-size="{fmt(TICK_SIZE)}" '
        f'role="img" aria-label="{escape(label, quote=True)}">'
        f'<rect width="{w}" height="{h}" fill="#ffffff"/>{body}</svg>'
    )
