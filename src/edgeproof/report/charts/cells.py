"""Cell marks: a heatmap over two category axes (with its colour bar) and a raster image,
drawn as SVG rectangles or, when large, as one PNG ``data:image/png`` URI."""

from __future__ import annotations

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
from edgeproof.report.charts.ticks import Ticks

__all__ = ["Heatmap", "Image", "colorbar_width"]


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
            out.append(self._colorbar(*f.cbar))
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

    def _colorbar(self, cb: Rect, ticks: Ticks) -> str:
        n = 48
        step = cb.height / n
        bands = [
            el("rect", x=cb.x0, y=cb.y1 - (k + 1) * step, width=cb.width, height=step + 0.3,
               fill=ramp(self.ramp, (k + 0.5) / n))
            for k in range(n)
        ]  # fmt: skip
        out = [el("g", "".join(bands), stroke="none")]
        out.append(
            el("rect", x=cb.x0, y=cb.y0, width=cb.width, height=cb.height, fill="none",
               stroke=AXIS_INK, stroke_width="0.8")
        )  # fmt: skip
        span = (self.vmax - self.vmin) or 1.0
        d, widest = [], 0.0
        for v, s in zip(ticks.values, ticks.labels):
            y = cb.y1 - (v - self.vmin) / span * cb.height
            d.append(f"M{fmt(cb.x1)} {fmt(y)}h{fmt(TICK_LEN)}")
            out.append(
                text_el(s, x=cb.x1 + TICK_LEN + 3, y=baseline_for_centre(y, TICK_SIZE), fill=INK,
                        class_="tick-label")
            )  # fmt: skip
            widest = max(widest, text_width(s, TICK_SIZE))
        out.append(el("path", d="".join(d), stroke=AXIS_INK, stroke_width="1"))
        if self.colorbar:
            x = cb.x1 + TICK_LEN + 3 + widest + 6 + ASCENT * LABEL_SIZE
            y = (cb.y0 + cb.y1) / 2
            short = truncate(self.colorbar, LABEL_SIZE, cb.height)
            out.append(
                text_el(short, self.colorbar if short != self.colorbar else None, x=x, y=y,
                        text_anchor="middle", transform=f"rotate(90 {fmt(x)} {fmt(y)})",
                        font_size=fmt(LABEL_SIZE), fill=INK, class_="axis-label")
            )  # fmt: skip
        return "".join(out)


def colorbar_width(ticks: Ticks) -> float:
    """Room a colour bar takes right of the plot: gap, bar, ticks, labels, rotated title."""
    widest = max((text_width(s, TICK_SIZE) for s in ticks.labels), default=0.0)
    return 16 + 14 + TICK_LEN + 3 + widest + 6 + text_height(LABEL_SIZE)


def _png(norm: np.ndarray, name: str, r: Rect) -> str:
    h, w = norm.shape
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    for i in range(h):
        for j in range(w):
            rgb[i, j] = ramp_rgb(name, float(norm[i, j]))
    return el(
        "image",
        href=png_data_uri(rgb),
        x=r.x0,
        y=r.y0,
        width=r.width,
        height=r.height,
        preserveAspectRatio="none",
        style="image-rendering:pixelated",
    )


@dataclass
class Image(Mark):
    """A 2-D array over ``extent = (x0, x1, y0, y1)`` in data units, row 0 at the top."""

    values: np.ndarray
    extent: tuple[float, float, float, float]
    vmin: float
    vmax: float
    ramp: str
    mode: Literal["rects", "png"]

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
        norm = (self.values - self.vmin) / ((self.vmax - self.vmin) or 1.0)
        if self.mode == "png":
            return _png(norm, self.ramp, r)
        h, w = self.values.shape
        cw, ch = r.width / w, r.height / h
        cells = [
            el("rect", x=r.x0 + j * cw, y=r.y0 + i * ch, width=cw + 0.3, height=ch + 0.3,
               fill=ramp(self.ramp, float(norm[i, j])))
            for i in range(h)
            for j in range(w)
        ]  # fmt: skip
        return el("g", "".join(cells), stroke="none")
