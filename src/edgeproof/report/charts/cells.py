"""Cell marks: a heatmap over two category axes and a raster image (each with an optional
colour bar), drawn as SVG rectangles or, when large, as one PNG ``data:image/png`` URI.

NaN cells are not drawn (the background shows: white); as PNG pixels they are white. An image
may also be ``(H, W, 3)`` RGB in ``[0, 1]`` (clipped), drawn as is, without a ramp.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeproof.report.charts.axes import AXIS_INK, INK, LABEL_SIZE, TICK_LEN, TICK_SIZE, Frame
from edgeproof.report.charts.colors import ramp, ramp_rgb, text_color_on
from edgeproof.report.charts.geometry import Occupancy, Rect
from edgeproof.report.charts.marks import Mark, tooltip
from edgeproof.report.charts.svg import el, fmt, png_data_uri, text_el
from edgeproof.report.charts.text import (
    ASCENT,
    baseline_for_centre,
    text_height,
    text_width,
    truncate,
)
from edgeproof.report.charts.ticks import Ticks, linear_ticks

__all__ = ["Heatmap", "Image", "colorbar_svg", "colorbar_ticks", "colorbar_width", "raster_svg"]


@dataclass
class Heatmap(Mark):
    """Cells over two category axes (row 0 at the top), with a colour bar when labelled.

    Up to 1600 cells are SVG rectangles (with tooltips); a larger matrix is one PNG."""

    values: np.ndarray
    vmin: float
    vmax: float
    ramp: str
    annotations: list[list[str]] | None
    colorbar: str | None
    tooltips: list[list[str]] | None

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        occ.rect(f.plot)

    def svg(self, f: Frame) -> str:
        p = f.plot
        nr, nc = self.values.shape
        cw, ch = p.width / nc, p.height / nr
        norm = (self.values - self.vmin) / ((self.vmax - self.vmin) or 1.0)
        out = []
        if nr * nc > 1600:
            out.append(_png(norm, self.ramp, p))
        else:
            cells = []
            for i in range(nr):
                for j in range(nc):
                    fill = ramp(self.ramp, norm[i, j]) if math.isfinite(norm[i, j]) else "#fff"
                    tip = tooltip(self.tooltips[i][j] if self.tooltips is not None else None)
                    cells.append(
                        el("rect", tip, x=p.x0 + j * cw, y=p.y0 + i * ch, width=cw, height=ch,
                           fill=fill)
                    )  # fmt: skip
            out.append(el("g", "".join(cells), stroke="#ffffff", stroke_width="0.5"))
        out += self._annotations(f, norm)
        if f.cbar is not None and self.colorbar is not None:
            out.append(colorbar_svg(*f.cbar, self.ramp, self.vmin, self.vmax, self.colorbar))
        return "".join(out)

    def annotations_fit(self, cw: float, ch: float) -> bool:
        if self.annotations is None:
            return False
        widest = max((text_width(s, TICK_SIZE) for r in self.annotations for s in r), default=0)
        return widest <= cw - 3 and text_height(TICK_SIZE) <= ch - 1

    def _annotations(self, f: Frame, norm: np.ndarray) -> list[str]:
        p = f.plot
        nr, nc = self.values.shape
        cw, ch = p.width / nc, p.height / nr
        if self.annotations is None or not self.annotations_fit(cw, ch):
            return []
        out = []
        for i in range(nr):
            for j in range(nc):
                if not self.annotations[i][j]:
                    continue
                fill = ramp(self.ramp, norm[i, j]) if math.isfinite(norm[i, j]) else "#ffffff"
                out.append(
                    text_el(
                        self.annotations[i][j],
                        x=p.x0 + (j + 0.5) * cw,
                        y=baseline_for_centre(p.y0 + (i + 0.5) * ch, TICK_SIZE),
                        text_anchor="middle",
                        fill=text_color_on(fill),
                        class_="annotation",
                    )
                )
        return out


def colorbar_ticks(vmin: float, vmax: float, height: float) -> Ticks:
    """Nice ticks over ``[vmin, vmax]`` spaced at least a label's height + 6 px apart on a bar
    ``height`` px tall."""
    span = (vmax - vmin) or 1.0
    gap = text_height(TICK_SIZE) + 6

    def fits(t: Ticks) -> bool:
        px = [v / span * height for v in t.values]
        return all(b - a >= gap for a, b in itertools.pairwise(px))

    return linear_ticks(vmin, vmax, max(2, int(height // 32)), fits=fits)


def colorbar_svg(
    cb: Rect, ticks: Ticks, ramp_name: str, vmin: float, vmax: float, label: str | None
) -> str:
    """A vertical colour bar in ``cb`` (``vmin`` at the bottom), its ticks and labels on the right
    and ``label`` rotated beside them (shortened to the bar's height, full text as tooltip)."""
    n = 48
    step = cb.height / n
    bands = [
        el("rect", x=cb.x0, y=cb.y1 - (k + 1) * step, width=cb.width, height=step + 0.3,
           fill=ramp(ramp_name, (k + 0.5) / n))
        for k in range(n)
    ]  # fmt: skip
    out = [el("g", "".join(bands), stroke="none", shape_rendering="crispEdges")]
    out.append(
        el("rect", x=cb.x0, y=cb.y0, width=cb.width, height=cb.height, fill="none",
           stroke=AXIS_INK, stroke_width="0.8")
    )  # fmt: skip
    span = (vmax - vmin) or 1.0
    d, widest = [], 0.0
    for v, s in zip(ticks.values, ticks.labels):
        y = cb.y1 - (v - vmin) / span * cb.height
        d.append(f"M{fmt(cb.x1)} {fmt(y)}h{fmt(TICK_LEN)}")
        out.append(
            text_el(s, x=cb.x1 + TICK_LEN + 3, y=baseline_for_centre(y, TICK_SIZE), fill=INK,
                    class_="tick-label")
        )  # fmt: skip
        widest = max(widest, text_width(s, TICK_SIZE))
    out.append(el("path", d="".join(d), stroke=AXIS_INK, stroke_width="1"))
    if label:
        x = cb.x1 + TICK_LEN + 3 + widest + 6 + ASCENT * LABEL_SIZE
        y = (cb.y0 + cb.y1) / 2
        short = truncate(label, LABEL_SIZE, cb.height)
        out.append(
            text_el(short, label if short != label else None, x=x, y=y, text_anchor="middle",
                    transform=f"rotate(90 {fmt(x)} {fmt(y)})", font_size=fmt(LABEL_SIZE),
                    fill=INK, class_="axis-label")
        )  # fmt: skip
    return "".join(out)


def colorbar_width(ticks: Ticks) -> float:
    """Room a colour bar takes right of the plot: gap, bar, ticks, labels, rotated title."""
    widest = max((text_width(s, TICK_SIZE) for s in ticks.labels), default=0.0)
    return 16 + 14 + TICK_LEN + 3 + widest + 6 + text_height(LABEL_SIZE)


def _rgb_of(norm: np.ndarray, name: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 colours of normalised values (NaN → white), or of an RGB array."""
    if norm.ndim == 3:
        result: np.ndarray = np.round(np.clip(np.nan_to_num(norm, nan=1.0), 0.0, 1.0) * 255).astype(
            np.uint8
        )
        return result
    h, w = norm.shape
    rgb = np.full((h, w, 3), 255, dtype=np.uint8)
    for i in range(h):
        for j in range(w):
            if math.isfinite(norm[i, j]):
                rgb[i, j] = ramp_rgb(name, float(norm[i, j]))
    return rgb


def _png(norm: np.ndarray, name: str, r: Rect, opacity: float = 1.0) -> str:
    return el(
        "image",
        href=png_data_uri(_rgb_of(norm, name)),
        x=r.x0,
        y=r.y0,
        width=r.width,
        height=r.height,
        preserveAspectRatio="none",
        style="image-rendering:pixelated",
        opacity=None if opacity >= 1 else fmt(opacity),
    )


def raster_svg(
    norm: np.ndarray,
    ramp_name: str,
    r: Rect,
    mode: Literal["rects", "png"],
    opacity: float = 1.0,
) -> str:
    """Values normalised to [0, 1] (``(H, W)``, coloured by ``ramp_name``) or RGB in [0, 1]
    (``(H, W, 3)``) filling ``r``, row 0 at the top: one rectangle per finite cell (drawn with
    crisp edges, so no seam shows between neighbours), or a PNG."""
    if mode == "png":
        return _png(norm, ramp_name, r, opacity)
    h, w = norm.shape[:2]
    cw, ch = r.width / w, r.height / h
    rgb = _rgb_of(norm, ramp_name) if norm.ndim == 3 else None
    cells = []
    for i in range(h):
        for j in range(w):
            if rgb is not None:
                fill = "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[i, j]))
            elif math.isfinite(norm[i, j]):
                fill = ramp(ramp_name, float(norm[i, j]))
            else:
                continue
            cells.append(
                el("rect", x=r.x0 + j * cw, y=r.y0 + i * ch, width=cw + 0.3, height=ch + 0.3,
                   fill=fill)
            )  # fmt: skip
    # crisp edges: antialiased neighbours would let the background show through their seam
    return el("g", "".join(cells), stroke="none", shape_rendering="crispEdges",
              opacity=None if opacity >= 1 else fmt(opacity))  # fmt: skip


@dataclass
class Image(Mark):
    """A 2-D array (or ``(H, W, 3)`` RGB in [0, 1]) over ``extent = (x0, x1, y0, y1)`` in data
    units, row 0 at the top; ``colorbar`` labels a colour bar right of the plot."""

    values: np.ndarray
    extent: tuple[float, float, float, float]
    vmin: float
    vmax: float
    ramp: str
    mode: Literal["rects", "png"]
    opacity: float = 1.0
    colorbar: str | None = None

    def xs(self) -> np.ndarray:
        return np.array(self.extent[:2])

    def ys(self) -> np.ndarray:
        return np.array(self.extent[2:])

    def occupy(self, f: Frame, occ: Occupancy, pts: Occupancy) -> None:
        occ.rect(self._rect(f))

    def _rect(self, f: Frame) -> Rect:
        x0, x1 = f.x.one(self.extent[0]), f.x.one(self.extent[1])
        ya, yb = f.y.one(self.extent[2]), f.y.one(self.extent[3])
        return Rect(min(x0, x1), min(ya, yb), max(x0, x1), max(ya, yb))

    def svg(self, f: Frame) -> str:
        r = self._rect(f)
        rgb = self.values.ndim == 3
        norm = self.values if rgb else (self.values - self.vmin) / ((self.vmax - self.vmin) or 1.0)
        out = raster_svg(norm, self.ramp, r, self.mode, self.opacity)
        if f.cbar is not None and self.colorbar is not None and not rgb:
            out += colorbar_svg(*f.cbar, self.ramp, self.vmin, self.vmax, self.colorbar)
        return out
