"""Layout: limits, margins, the plot rectangle, category names, point labels and the legend.

Margins are sized to what sits in them — the widest y tick label, the x tick labels (or rotated
category names), the axis labels, the title, a colour bar and an outside legend — in a few
passes, because the ticks chosen depend on the plot's size and the margins on the ticks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np

from edgeproof.report.charts.axes import (
    LABEL_SIZE,
    LEGEND_SIZE,
    PAD,
    ROTATED_MAX,
    TICK_GAP,
    TICK_LEN,
    TICK_SIZE,
    TITLE_SIZE,
    Axis,
    AxisMap,
    Frame,
    Options,
    category_width,
)
from edgeproof.report.charts.cells import Heatmap, Image, colorbar_ticks, colorbar_width
from edgeproof.report.charts.geometry import Occupancy, Rect
from edgeproof.report.charts.marks import (
    Entry,
    Scatter,
    Text,
    swatch_svg,
)
from edgeproof.report.charts.svg import el, text_el
from edgeproof.report.charts.text import (
    DESCENT,
    TextBox,
    baseline_for_centre,
    text_box,
    text_height,
    text_width,
    truncate,
)
from edgeproof.report.charts.ticks import Ticks, linear_ticks, log_ticks

if TYPE_CHECKING:
    from edgeproof.report.charts.chart import Chart

LegendAt = Literal["inside", "right", "below", "none"]
PlacedLabel = tuple[TextBox, tuple[float, float] | None, tuple[float, float]]

ROW = 17.0  # legend row height
SWATCH = 28.0  # swatch and gap before the label
ENTRY_GAP = 14.0  # between entries of one legend row


# ---------------------------------------------------------------- limits and ticks


def limits(chart: Chart, axis: Axis, which: Literal["x", "y"]) -> tuple[float, float]:
    """The axis' own limits, else the data's range padded by 4 % (none beyond a bar's base)."""
    if axis.scale == "category":
        return -0.5, max(1, len(axis.categories)) - 0.5
    vals = [m.xs() if which == "x" else m.ys() for m in chart.marks]
    sticky = [v for m in chart.marks for v in m.sticky(which)]
    data = np.concatenate(vals) if vals else np.empty(0)
    data = data[np.isfinite(data)]
    if axis.scale == "log":
        data = data[data > 0]
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
    given = axis.limits or (None, None)
    out = (
        auto[0] if given[0] is None else float(given[0]),
        auto[1] if given[1] is None else float(given[1]),
    )
    if not out[1] > out[0]:
        out = (out[0], out[0] + (abs(out[0]) or 1.0))
    return out


def ticks(axis: Axis, lo: float, hi: float, length: float, horizontal: bool) -> Ticks:
    """As many ticks as fit: labels 10 px apart across, 6 px apart up the axis."""
    if axis.scale == "category":
        return Ticks(tuple(float(i) for i in range(len(axis.categories))), axis.categories)
    scale = AxisMap(axis.scale, lo, hi, 0.0, length)

    def fits(t: Ticks) -> bool:
        px = scale(t.values)
        if horizontal:
            w = [text_width(s, TICK_SIZE) for s in t.labels]
            return all(px[i + 1] - px[i] >= (w[i] + w[i + 1]) / 2 + 10 for i in range(len(w) - 1))
        gap = text_height(TICK_SIZE) + 6
        return all(abs(px[i + 1] - px[i]) >= gap for i in range(len(px) - 1))

    max_count = max(2, int(length // (50 if horizontal else 32)))
    if axis.scale == "log":
        return log_ticks(lo, hi, max_count, fits=fits)
    return linear_ticks(lo, hi, max_count, integer=axis.integer, fits=fits)


# ---------------------------------------------------------------- legend geometry


def legend_rows(entries: list[Entry], max_width: float | None) -> list[list[Entry]]:
    """One entry per row, or rows filled up to ``max_width`` (a legend below the plot)."""
    if max_width is None:
        return [[e] for e in entries]
    rows: list[list[Entry]] = [[]]
    used = 0.0
    for e in entries:
        w = SWATCH + text_width(e.label, LEGEND_SIZE) + ENTRY_GAP
        if rows[-1] and used + w > max_width:
            rows.append([])
            used = 0.0
        rows[-1].append(e)
        used += w
    return rows


def legend_size(entries: list[Entry], max_width: float | None) -> tuple[float, float]:
    if not entries:
        return 0.0, 0.0
    rows = legend_rows(entries, max_width)
    w = max(sum(SWATCH + text_width(e.label, LEGEND_SIZE) + ENTRY_GAP for e in r) for r in rows)
    w = w - ENTRY_GAP + 8
    return (w if max_width is None else min(w, max_width)), ROW * len(rows) + 6


def legend_svg(
    entries: list[Entry], x: float, y: float, max_width: float | None, boxed: bool
) -> str:
    if not entries:
        return ""
    out: list[str] = []
    if boxed:
        w, h = legend_size(entries, max_width)
        out.append(
            el("rect", x=x, y=y, width=w, height=h, fill="#ffffff", fill_opacity="0.9",
               stroke="#d0d0d0", stroke_width="0.8", rx="3")
        )  # fmt: skip
    for r, row in enumerate(legend_rows(entries, max_width)):
        cx, cy = x + 6, y + 3 + r * ROW + ROW / 2
        for e in row:
            out.append(swatch_svg(e, cx, cy))
            out.append(
                text_el(e.label, x=cx + 24, y=baseline_for_centre(cy, LEGEND_SIZE), fill="#222222",
                        class_="legend")
            )  # fmt: skip
            cx += SWATCH + text_width(e.label, LEGEND_SIZE) + ENTRY_GAP
    return el("g", "".join(out))


# ---------------------------------------------------------------- the frame


def frame(chart: Chart, opts: Options, legend: LegendAt) -> Frame:
    """Lay ``chart`` out with its legend ``legend`` (inside the plot, right of it, below it).

    The margins depend on the tick labels, which depend on the plot's size, which depends on
    the margins: they are recomputed until they settle (at most four rounds).
    """
    entries = chart.entries()
    hm = next((m for m in chart.marks if isinstance(m, Heatmap)), None)
    scaled = next(
        (m for m in chart.marks if isinstance(m, Heatmap | Image) and m.colorbar is not None), None
    )
    x, y = chart.x, chart.y
    xlim = opts.x_limits or limits(chart, x, "x")
    ylim = limits(chart, y, "y")
    top = PAD + (text_height(TITLE_SIZE) + 6 if chart.title else 2)
    leg_w, leg_h = legend_size(entries, None) if legend == "right" else (0.0, 0.0)
    leg_side = leg_w + 12 if leg_w else 0.0
    cbar_ticks, side = _colorbar_side(scaled, chart.height - top - 40.0, leg_side)
    left, right, bottom = 48.0, 14.0, 40.0
    rotated = False
    xt = yt = Ticks((), ())
    for _ in range(4):
        before = (left, right, bottom, side)
        plot_w = max(40.0, chart.width - left - right - side)
        plot_h = max(30.0, chart.height - top - bottom)
        xt = chart.ticks(x, *xlim, plot_w, True)
        bottom, rotated = _bottom_margin(chart, opts, legend, entries, hm, plot_w, plot_h)
        plot_h = max(30.0, chart.height - top - bottom)
        cbar_ticks, side = _colorbar_side(scaled, plot_h, leg_side)
        yt = chart.ticks(y, *ylim, plot_h, False)
        left = _left_margin(chart, opts, yt)
        right = 14.0
        if opts.x_tick_labels and xt.values and x.scale != "category":
            left, right = _x_overhang(x, xlim, xt, plot_w, left, right)
        right = max(right, opts.min_right - side)
        if all(abs(u - v) < 0.01 for u, v in zip(before, (left, right, bottom, side))):
            break
    plot_w = chart.width - left - right - side
    plot_h = chart.height - top - bottom
    if plot_w < 40 or plot_h < 30:
        raise ValueError(
            f"the chart is too small for its labels ({chart.width:.0f}×{chart.height:.0f} px "
            f"leaves a {plot_w:.0f}×{plot_h:.0f} plot); make it larger"
        )
    plot = Rect(left, top, left + plot_w, top + plot_h)
    width, height = chart.width, chart.height
    if hm is not None:  # square cells; the chart shrinks around them
        nr, nc = hm.values.shape
        cell = min(plot_w / nc, plot_h / nr)
        plot = Rect(left, top, left + cell * nc, top + cell * nr)
        cbar_ticks, side = _colorbar_side(scaled, plot.height, leg_side)
        width, height = plot.x1 + right + side, plot.y1 + bottom
    cbar = None
    if scaled is not None:
        cbar = (Rect(plot.x1 + 16, plot.y0, plot.x1 + 30, plot.y1), cbar_ticks)
    xmap = AxisMap(x.scale, *xlim, plot.x0, plot.x1)
    if y.scale == "category":
        ymap = AxisMap("category", *ylim, plot.y0, plot.y1)  # index 0 at the top
    else:
        ymap = AxisMap(y.scale, *ylim, plot.y1, plot.y0)
    f = Frame(width, height, plot, xmap, ymap, xt, yt, legend, rotated, cbar=cbar)
    _category_labels(chart, f)
    if legend == "right":
        f.height = max(f.height, plot.y0 + leg_h + PAD)
    return f


def _colorbar_side(
    scaled: Heatmap | Image | None, height: float, leg_side: float
) -> tuple[Ticks, float]:
    """The colour bar's ticks for a plot ``height`` high, and the width right of the plot
    (colour bar and a legend on the right)."""
    if scaled is None:
        return Ticks((), ()), leg_side
    t = colorbar_ticks(scaled.vmin, scaled.vmax, height)
    return t, colorbar_width(t) + leg_side


def _bottom_margin(
    chart: Chart,
    opts: Options,
    legend: LegendAt,
    entries: list[Entry],
    hm: Heatmap | None,
    plot_w: float,
    plot_h: float,
) -> tuple[float, bool]:
    """The space below the plot (x tick labels, the x axis label, a legend below) and whether
    the x category names are rotated (when they do not fit their cells)."""
    x, y = chart.x, chart.y
    th = text_height(TICK_SIZE)
    rotated = False
    bottom = PAD
    if opts.x_tick_labels:
        bottom += TICK_LEN + TICK_GAP
        if x.scale == "category" and x.categories:
            n = len(x.categories)
            cell = plot_w / n if hm is None else min(plot_w / n, plot_h / len(y.categories))
            rotated = max(text_width(s, TICK_SIZE) for s in x.categories) > cell - 4
            bottom += (
                max(text_width(truncate(s, TICK_SIZE, ROTATED_MAX), TICK_SIZE)
                    for s in x.categories)
                if rotated
                else th
            )  # fmt: skip
        else:
            bottom += th
    else:
        bottom += TICK_LEN
    if opts.x_label and x.label:
        bottom += 6 + text_height(LABEL_SIZE)
    if legend == "below":
        bottom += legend_size(entries, chart.width - 2 * PAD)[1] + 8
    return bottom, rotated


def _left_margin(chart: Chart, opts: Options, yt: Ticks) -> float:
    """The space left of the plot: the widest y tick label (or category name) and the y axis
    label, at least ``opts.min_left``."""
    y = chart.y
    if y.scale == "category":
        names = [truncate(s, TICK_SIZE, category_width(chart.width)) for s in y.categories]
    else:
        names = list(yt.labels)
    left = PAD + max((text_width(s, TICK_SIZE) for s in names), default=0.0)
    left += TICK_LEN + TICK_GAP + (text_height(LABEL_SIZE) + 6 if y.label else 0.0)
    return max(left, opts.min_left)


def _x_overhang(
    x: Axis, xlim: tuple[float, float], xt: Ticks, plot_w: float, left: float, right: float
) -> tuple[float, float]:
    """The left and right margins widened so the first and last x tick labels, which may stick
    out of the plot, fit."""
    sc = AxisMap(x.scale, *xlim, 0.0, plot_w)
    over_r = text_width(xt.labels[-1], TICK_SIZE) / 2 - (plot_w - sc.one(xt.values[-1]))
    over_l = text_width(xt.labels[0], TICK_SIZE) / 2 - sc.one(xt.values[0])
    return max(left, over_l + PAD), max(right, over_r + PAD)


def _category_labels(chart: Chart, f: Frame) -> None:
    """Which category names are written (every n-th when they do not fit), shortened."""
    x, y = chart.x, chart.y
    if x.scale == "category" and x.categories:
        n = len(x.categories)
        cell = f.plot.width / n
        stride = 1
        if f.x_cat_rotated:
            while cell * stride < text_height(TICK_SIZE) + 2:
                stride += 1
        for i in range(0, n, stride):
            full = x.categories[i]
            f.x_cat_labels.append(
                (i, truncate(full, TICK_SIZE, ROTATED_MAX if f.x_cat_rotated else cell - 4), full)
            )
    if y.scale == "category" and y.categories:
        n = len(y.categories)
        cell = f.plot.height / n
        stride = 1
        while cell * stride < text_height(TICK_SIZE) + 1:
            stride += 1
        for i in range(0, n, stride):
            full = y.categories[i]
            f.y_cat_labels.append((i, truncate(full, TICK_SIZE, category_width(chart.width)), full))


# ---------------------------------------------------------------- what is drawn where


def occupancy(chart: Chart, f: Frame) -> tuple[Occupancy, Occupancy]:
    """(everything drawn, only the points of scatters) over the plot area."""
    occ, pts = Occupancy(f.plot), Occupancy(f.plot)
    for m in chart.marks:
        m.occupy(f, occ, pts)
    return occ, pts


_DIRECTIONS = ((1, 0), (-1, 0), (1, -1), (-1, -1), (1, 1), (-1, 1), (0, -1), (0, 1))


def place_point_labels(chart: Chart, f: Frame, occ: Occupancy, pts: Occupancy) -> list[PlacedLabel]:
    """Greedy placement of scatter point labels, in the order given.

    Each label tries 8 directions around its point (right, left, the diagonals, above, below) at
    4 growing distances, first where nothing at all is drawn, then where no point is; the first
    box inside the plot that overlaps no other text wins. A label placed beyond the first
    distance gets a leader line; one that fits nowhere is left out (the point's tooltip keeps
    it). Returns ``(box, leader end or None, point)`` per placed label.
    """
    placed: list[PlacedLabel] = []
    boxes = [m.box(f) for m in chart.marks if isinstance(m, Text)]
    h = text_height(TICK_SIZE)
    for m in chart.marks:
        if not isinstance(m, Scatter) or m.point_labels is None:
            continue
        px, py = f.x(m.x), f.y(m.y)
        for i, lab in enumerate(m.point_labels):
            if not lab or not (math.isfinite(px[i]) and math.isfinite(py[i])):
                continue
            p = (float(px[i]), float(py[i]))
            own = Rect(p[0] - m.size, p[1] - m.size, p[0] + m.size, p[1] + m.size)
            w = text_width(lab, TICK_SIZE)
            chosen = _first_free(lab, p, own, w, h, m.size, f.plot, (occ, pts), boxes)
            if chosen is not None:
                placed.append(chosen)
                boxes.append(chosen[0])
                occ.rect(Rect(chosen[0].x0, chosen[0].y0, chosen[0].x1, chosen[0].y1))
    return placed


def _first_free(
    lab: str,
    p: tuple[float, float],
    own: Rect,
    w: float,
    h: float,
    size: float,
    plot: Rect,
    grids: tuple[Occupancy, Occupancy],
    boxes: list[TextBox],
) -> PlacedLabel | None:
    for grid in grids:
        for ring, d in enumerate((size + 3, size + 14, size + 28, size + 44)):
            for dx, dy in _DIRECTIONS:
                cx = p[0] + dx * (d + w / 2)
                cy = p[1] + dy * (d + h / 2)
                r = Rect(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                if not plot.contains(r, tolerance=0) or r.intersects(own) or not grid.free(r):
                    continue
                base = cy + h / 2 - DESCENT * TICK_SIZE
                tb = text_box(lab, cx, base, TICK_SIZE, "middle", role="point-label")
                if any(tb.overlaps(b, tolerance=-1.0) for b in boxes):
                    continue
                lead = None
                if ring > 0:
                    lead = (min(max(p[0], r.x0), r.x1), min(max(p[1], r.y0), r.y1))
                return tb, lead, p
    return None


def inside_legend(
    chart: Chart, f: Frame, occ: Occupancy, texts: list[TextBox]
) -> tuple[float, float] | None:
    """The first corner or edge of the plot where the legend covers nothing drawn."""
    w, h = legend_size(chart.entries(), None)
    p = f.plot
    if w > p.width - 8 or h > p.height - 8:
        return None
    xs = (p.x1 - w - 4, p.x0 + 4, (p.x0 + p.x1 - w) / 2)
    ys = (p.y0 + 4, p.y1 - h - 4, (p.y0 + p.y1 - h) / 2)
    for i, j in ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (0, 2), (1, 2)):
        r = Rect(xs[i], ys[j], xs[i] + w, ys[j] + h)
        if occ.free(r) and not any(r.intersects(Rect(b.x0, b.y0, b.x1, b.y1)) for b in texts):
            return xs[i], ys[j]
    return None


def layout(
    chart: Chart, opts: Options
) -> tuple[Frame, list[PlacedLabel], tuple[float, float] | None]:
    """The frame, the placed point labels and (for an inside legend) where the legend goes."""
    entries = chart.entries()
    want = chart.legend_position if entries else "none"
    if want in ("right", "below", "none"):
        f = frame(chart, opts, want)
        occ, pts = occupancy(chart, f)
        return f, place_point_labels(chart, f, occ, pts), None
    f = frame(chart, opts, "inside")
    occ, pts = occupancy(chart, f)
    labels = place_point_labels(chart, f, occ, pts)
    spot = inside_legend(chart, f, occ, [b for b, _, _ in labels])
    if spot is not None or want == "inside":
        if spot is None:
            w, _ = legend_size(entries, None)
            spot = (f.plot.x1 - w - 4, f.plot.y0 + 4)
        return f, labels, spot
    lw, _ = legend_size(entries, None)
    f = frame(chart, opts, "right" if lw <= 0.3 * chart.width else "below")
    occ, pts = occupancy(chart, f)
    return f, place_point_labels(chart, f, occ, pts), None
